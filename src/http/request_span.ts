/**
 * Names the request's server span (Deno opens it, as `POST`) after the route that matched, as
 * OpenTelemetry's HTTP conventions ask: `POST /run_code`, with `http.route`. Added to the app
 * only when tracing is on.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { Tracing } from "../tracing.ts";
import type { AppEnv } from "./context.ts";

/** Names the active server span `METHOD route` when a route matched (not for a 404). */
export function requestSpan(tracing: Tracing): MiddlewareHandler<AppEnv> {
  return function requestSpan(c, next) {
    // The last route matched is the handler's; middleware of every path match as `/*`.
    const route = routePath(c, -1);
    if (route !== "" && route !== "*" && route !== "/*") {
      tracing.nameRequestSpan(c.req.method, route);
    }
    return next();
  };
}

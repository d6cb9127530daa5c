/**
 * Every route of the service, declared once. Each declaration is what validates the route's
 * requests, what `/openapi.json` documents, and (through the routes the app registers from it)
 * what the 405 answers list as allowed.
 *
 * @module
 */

import { createRoute, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import {
  ErrorResponseSchema,
  HealthResponseSchema,
  type RequestLimits,
  runRequestSchema,
  RunResponseSchema,
  validateRequestSchema,
  ValidateResponseSchema,
} from "../schemas.ts";
import type { AppEnv } from "./context.ts";
import { DOCS_ASSETS_PREFIX } from "./docs.ts";

/** What the route declarations depend on. */
export interface RouteOptions {
  /** Bounds of the request schemas (from the configuration). */
  limits: RequestLimits;
  /** Reads a JSON body (size and stall limits) ahead of the route's validation. */
  body: MiddlewareHandler<AppEnv>;
}

/** Paths answered without an API key (and the docs' assets, below {@link DOCS_ASSETS_PREFIX}). */
export const OPEN_PATHS: ReadonlySet<string> = new Set(["/health", "/openapi.json", "/docs"]);

/** True for a path answered without an API key: an open path or one of the docs' assets. */
export function isOpenPath(path: string): boolean {
  return OPEN_PATHS.has(path) || path.startsWith(DOCS_ASSETS_PREFIX);
}

function json<T extends z.ZodType>(schema: T, description: string) {
  return { content: { "application/json": { schema } }, description };
}

const errors = {
  400: json(ErrorResponseSchema, "Invalid JSON or a field that breaks a rule (named in details)."),
  401: json(ErrorResponseSchema, "Missing or wrong API key (when one is configured)."),
  408: json(ErrorResponseSchema, "The body stalled: no data for the idle timeout."),
  413: json(ErrorResponseSchema, "Body larger than the limit."),
  503: json(ErrorResponseSchema, "Queue full or shutting down; see Retry-After."),
};

/** The routes of the service. */
export function apiRoutes(options: RouteOptions) {
  const { limits, body } = options;
  return {
    runCode: createRoute({
      method: "post",
      path: "/run_code",
      summary: "Run code in a sandbox",
      middleware: [body] as const,
      request: {
        body: { ...json(runRequestSchema(limits), "The run."), required: true },
      },
      responses: {
        200: json(RunResponseSchema, "The code was run (whatever it did)."),
        ...errors,
      },
    }),
    validateCode: createRoute({
      method: "post",
      path: "/validate_code",
      summary: "Check syntax without running",
      middleware: [body] as const,
      request: {
        body: { ...json(validateRequestSchema(limits), "The code to check."), required: true },
      },
      responses: { 200: json(ValidateResponseSchema, "The verdict."), ...errors },
    }),
    health: createRoute({
      method: "get",
      path: "/health",
      summary: "Health of the service",
      responses: {
        200: json(HealthResponseSchema, "Healthy."),
        503: json(HealthResponseSchema, "Unhealthy (shutting down or a runtime is broken)."),
      },
    }),
    metrics: createRoute({
      method: "get",
      path: "/metrics",
      summary: "Prometheus metrics",
      responses: {
        200: {
          content: { "text/plain": { schema: z.string() } },
          description: "Metrics in the Prometheus text format.",
        },
        401: errors[401],
      },
    }),
    openapi: createRoute({
      method: "get",
      path: "/openapi.json",
      summary: "This document",
      responses: {
        200: {
          content: { "application/json": { schema: z.record(z.string(), z.unknown()) } },
          description: "The OpenAPI 3.1 document of the service.",
        },
      },
    }),
    docs: createRoute({
      method: "get",
      path: "/docs",
      summary: "This document, browsable (Swagger UI)",
      responses: {
        200: {
          content: { "text/html": { schema: z.string() } },
          description: "A page that renders /openapi.json, with every asset served here.",
        },
      },
    }),
    /** The page's script, styles and icon; an implementation detail of /docs, not documented. */
    docsAsset: createRoute({
      method: "get",
      path: `${DOCS_ASSETS_PREFIX}{tag}/{file}`,
      hide: true,
      request: { params: z.object({ tag: z.string(), file: z.string() }) },
      responses: {
        200: {
          content: { "application/octet-stream": { schema: z.string() } },
          description: "The asset, cacheable for good (its URL changes with its contents).",
        },
        404: json(ErrorResponseSchema, "No such asset in this build."),
      },
    }),
  };
}

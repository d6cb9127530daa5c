/**
 * The browsable API documentation at `/docs`: Swagger UI over `/openapi.json`, served entirely
 * by the service, so the page works on a network without internet access (where sandboxes
 * usually run).
 *
 * Swagger UI's script, styles and icon come from the npm package `swagger-ui-dist`, pinned in
 * deno.json and imported as text and bytes modules: they are part of the module graph, so
 * `deno install` caches them with the other dependencies (the image's offline cache) and
 * `deno compile` embeds them in the binary. They are imported on the first request for the
 * docs, not at start: a service whose docs nobody opens never holds their 2 MB.
 *
 * The assets are served under `/docs/assets/<tag>/<file>`, where `<tag>` is a digest of their
 * contents: a browser may cache them for good (`immutable`), and a new build, whose assets
 * differ, links to new URLs. The page itself is revalidated on every load. The script and the
 * styles are also kept gzip-compressed (1.8 MB of script becomes about 0.5 MB), compressed once.
 *
 * The page runs no inline script and its Content-Security-Policy allows nothing from another
 * origin, so even a Swagger UI that wanted to reach the internet (its validator badge does by
 * default, turned off here) could not.
 *
 * @module
 */

import { errorMessage } from "../errors.ts";

/** Where the docs' assets are served; paths below it need no API key, as `/docs` does not. */
export const DOCS_ASSETS_PREFIX = "/docs/assets/";

/** One file the docs page loads. */
export interface DocsAsset {
  /** Its `Content-Type`. */
  contentType: string;
  /** Its bytes. */
  body: Uint8Array<ArrayBuffer>;
  /** The same bytes gzip-compressed, when compressing them pays. */
  gzip?: Uint8Array<ArrayBuffer>;
}

/** The docs' assets, loaded, and the page that links to them. */
export interface DocsBundle {
  /** Digest of every asset's contents, the version segment of their URLs. */
  tag: string;
  /** The assets by file name. */
  assets: ReadonlyMap<string, DocsAsset>;
  /** The HTML of `/docs`. */
  page: string;
}

/** The `Cache-Control` of an asset: its URL changes whenever its contents do. */
export const ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable";

/** The `Cache-Control` of the page: revalidated on each load, so it links to current assets. */
export const PAGE_CACHE_CONTROL = "no-cache";

/**
 * The page's Content-Security-Policy: scripts, styles, images and requests from this origin
 * only (Swagger UI sets inline styles; its CSS holds `data:` images).
 */
export const PAGE_CONTENT_SECURITY_POLICY: string = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/**
 * Starts Swagger UI on the page's `#swagger-ui` element, over the document its `data-spec`
 * names. `validatorUrl: null`: Swagger UI would otherwise send the document's URL to
 * validator.swagger.io for a badge.
 */
const INIT_SCRIPT = `"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    domNode: root,
    validatorUrl: null,
    deepLinking: true,
  });
})();
`;

/** The favicon Swagger UI ships, so browsers do not ask for `/favicon.ico`. */
const ICON = "favicon-32x32.png";

let loading: Promise<DocsBundle> | undefined;

/**
 * The docs' assets and page, loaded on the first call and kept. Rejects (and tries again on the
 * next call) when the assets cannot be loaded, e.g. a cache without them.
 */
export function loadDocs(): Promise<DocsBundle> {
  loading ??= load().catch((error) => {
    loading = undefined;
    throw new Error(`expected the Swagger UI assets to load: ${errorMessage(error)}`);
  });
  return loading;
}

async function load(): Promise<DocsBundle> {
  // Literal specifiers: the module graph (install, compile) sees these imports.
  const [script, styles, icon] = await Promise.all([
    import("swagger-ui-dist/swagger-ui-bundle.js", { with: { type: "text" } }),
    import("swagger-ui-dist/swagger-ui.css", { with: { type: "text" } }),
    import("swagger-ui-dist/favicon-32x32.png", { with: { type: "bytes" } }),
  ]);
  const encoder = new TextEncoder();
  const files: [string, string, Uint8Array<ArrayBuffer>][] = [
    ["swagger-ui-bundle.js", "text/javascript; charset=utf-8", encoder.encode(script.default)],
    ["swagger-ui-init.js", "text/javascript; charset=utf-8", encoder.encode(INIT_SCRIPT)],
    ["swagger-ui.css", "text/css; charset=utf-8", encoder.encode(styles.default)],
    [ICON, "image/png", new Uint8Array(icon.default)],
  ];
  const assets = new Map<string, DocsAsset>();
  for (const [name, contentType, body] of files) {
    // PNG is compressed already; the small init script is not worth it.
    const gzip = body.length > 1024 && !contentType.startsWith("image/")
      ? await gzipped(body)
      : undefined;
    assets.set(name, { contentType, body, gzip });
  }
  const tag = await digest(files.map(([, , body]) => body));
  return { tag, assets, page: docsPage(tag) };
}

/**
 * The HTML of `/docs` for assets under `tag`. Every URL is relative to `/docs`, so the page also
 * works behind a proxy that serves the service under a path prefix.
 */
export function docsPage(tag: string): string {
  const asset = (file: string) => `docs/assets/${tag}/${file}`;
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>faas-sandbox API</title>
    <link rel="icon" type="image/png" href="${asset(ICON)}" />
    <link rel="stylesheet" href="${asset("swagger-ui.css")}" />
  </head>
  <body>
    <div id="swagger-ui" data-spec="openapi.json"></div>
    <script src="${asset("swagger-ui-bundle.js")}"></script>
    <script src="${asset("swagger-ui-init.js")}"></script>
  </body>
</html>
`;
}

/**
 * The answer to `GET /docs/assets/<tag>/<file>`: the asset, gzip-compressed when the request's
 * `Accept-Encoding` takes it; `undefined` (a 404) for a file or a tag of another build.
 */
export function docsAssetResponse(
  bundle: DocsBundle,
  request: { tag: string; file: string; acceptEncoding?: string },
): Response | undefined {
  const asset = request.tag === bundle.tag ? bundle.assets.get(request.file) : undefined;
  if (!asset) return undefined;
  const headers: Record<string, string> = {
    "Content-Type": asset.contentType,
    "Cache-Control": ASSET_CACHE_CONTROL,
    "X-Content-Type-Options": "nosniff",
  };
  if (!asset.gzip) return new Response(asset.body, { headers });
  headers["Vary"] = "Accept-Encoding";
  if (!acceptsGzip(request.acceptEncoding)) return new Response(asset.body, { headers });
  headers["Content-Encoding"] = "gzip";
  return new Response(asset.gzip, { headers });
}

/**
 * True when an `Accept-Encoding` value takes gzip: named with a non-zero weight, or, when not
 * named, covered by a `*` with a non-zero weight.
 */
export function acceptsGzip(acceptEncoding: string | undefined): boolean {
  const weights = new Map<string, number>();
  for (const part of (acceptEncoding ?? "").toLowerCase().split(",")) {
    const [coding, ...params] = part.split(";").map((item) => item.trim());
    if (!coding) continue;
    const q = params.find((param) => param.startsWith("q="));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    weights.set(coding, Number.isFinite(weight) ? weight : 0);
  }
  const weight = weights.get("gzip") ?? weights.get("x-gzip") ?? weights.get("*") ?? 0;
  return weight > 0;
}

async function gzipped(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The first 16 hex digits of the SHA-256 of the parts, each prefixed by its length. */
async function digest(parts: Uint8Array<ArrayBuffer>[]): Promise<string> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for (const part of parts) {
    chunks.push(new TextEncoder().encode(`${part.length}:`), part);
  }
  const hash = await crypto.subtle.digest("SHA-256", await new Blob(chunks).arrayBuffer());
  return [...new Uint8Array(hash).slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/**
 * `/docs` works without internet access: the page and every asset it loads come from the
 * service, open without the API key, typed and cacheable; in headless Chromium, with every host
 * but the service's unresolvable, the page renders each route of `/openapi.json`.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { findChromium, launchChromium } from "./helpers/chromium.ts";
import { startTestService } from "./helpers/test_service.ts";
import { acceptsGzip, ASSET_CACHE_CONTROL } from "../src/http/docs.ts";

const API_KEY = "docs-test-key";

/** Every route the service documents, as `METHOD /path`. */
const ROUTES = [
  "GET /docs",
  "GET /health",
  "GET /metrics",
  "GET /openapi.json",
  "POST /run_code",
  "POST /validate_code",
];

const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** The operations of an OpenAPI document, as `METHOD /path`, sorted. */
function operations(document: { paths: Record<string, Record<string, unknown>> }): string[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.keys(item).filter((key) => HTTP_METHODS.includes(key)).map((method) =>
      `${method.toUpperCase()} ${path}`
    )
  ).sort();
}

/** The URLs of the page's scripts, styles and icon, resolved against the page's own URL. */
function assetUrls(page: string, pageUrl: string): URL[] {
  return [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => new URL(match[1], pageUrl));
}

Deno.test("/docs and its assets are served without the API key, typed and cacheable", async () => {
  await using s = await startTestService({ FAAS_API_KEY: API_KEY });
  const response = await fetch(s.url + "/docs");
  assertEquals(response.status, 200);
  assertStringIncludes(response.headers.get("content-type") ?? "", "text/html");
  assertEquals(response.headers.get("cache-control"), "no-cache");
  assertStringIncludes(response.headers.get("content-security-policy") ?? "", "script-src 'self'");
  const page = await response.text();
  assert(!page.includes("://"), `the page names no other origin:\n${page}`);
  assertStringIncludes(page, 'data-spec="openapi.json"');

  const urls = assetUrls(page, s.url + "/docs");
  const types: Record<string, string> = {};
  for (const url of urls) {
    assert(url.pathname.startsWith("/docs/assets/"), `${url} is under /docs/assets/`);
    const asset = await fetch(url, { headers: { "Accept-Encoding": "identity" } });
    assertEquals(asset.status, 200, `${url}`);
    assertEquals(asset.headers.get("cache-control"), ASSET_CACHE_CONTROL);
    assertEquals(asset.headers.get("x-content-type-options"), "nosniff");
    assertEquals(asset.headers.get("content-encoding"), null);
    types[url.pathname.split("/").at(-1)!] = asset.headers.get("content-type") ?? "";
    const body = new Uint8Array(await asset.arrayBuffer());
    assert(body.length > 0, `${url} is not empty`);
  }
  assertEquals(types, {
    "favicon-32x32.png": "image/png",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-init.js": "text/javascript; charset=utf-8",
  });
  // No key was sent: /openapi.json, which the page reads, is open too.
  const spec = await fetch(s.url + "/openapi.json");
  assertEquals(spec.status, 200);
  assertEquals(operations(await spec.json()), ROUTES);
  // The key still guards the rest.
  const metrics = await fetch(s.url + "/metrics");
  assertEquals(metrics.status, 401);
  await metrics.body?.cancel();
});

Deno.test("the docs script is sent gzip-compressed to clients that take it, same bytes", async () => {
  await using s = await startTestService();
  const page = await (await fetch(s.url + "/docs")).text();
  const script = assetUrls(page, s.url + "/docs").find((url) =>
    url.pathname.endsWith("/swagger-ui-bundle.js")
  )!;
  const plain = await fetch(script, { headers: { "Accept-Encoding": "identity" } });
  const plainBytes = new Uint8Array(await plain.arrayBuffer());
  // Read the compressed bytes as sent: a raw connection, as fetch would decompress them.
  const conn = await Deno.connect({ hostname: script.hostname, port: Number(script.port) });
  const request = `GET ${script.pathname} HTTP/1.1\r\nHost: ${script.host}\r\n` +
    "Accept-Encoding: br;q=1, gzip;q=0.8\r\nConnection: close\r\n\r\n";
  await conn.write(new TextEncoder().encode(request));
  const raw = new Uint8Array(await new Response(conn.readable).arrayBuffer());
  const headEnd = raw.findIndex((_, i) =>
    raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10
  );
  const head = new TextDecoder().decode(raw.subarray(0, headEnd)).toLowerCase();
  assertStringIncludes(head, "content-encoding: gzip");
  assertStringIncludes(head, "vary: accept-encoding");
  const compressed = raw.subarray(headEnd + 4);
  assert(
    compressed.length < plainBytes.length / 2,
    `compressed ${compressed.length} B of ${plainBytes.length} B`,
  );
  const inflated = new Uint8Array(
    await new Response(new Blob([compressed]).stream().pipeThrough(new DecompressionStream("gzip")))
      .arrayBuffer(),
  );
  assertEquals(inflated.length, plainBytes.length);
  assert(inflated.every((byte, i) => byte === plainBytes[i]), "the same bytes once inflated");
});

Deno.test("an asset of another build, or a file the docs do not have, is a 404", async () => {
  await using s = await startTestService();
  const page = await (await fetch(s.url + "/docs")).text();
  const css = assetUrls(page, s.url + "/docs").find((url) => url.pathname.endsWith(".css"))!;
  const tag = css.pathname.split("/").at(-2)!;
  assert(/^[0-9a-f]{16}$/.test(tag), `a content tag: ${tag}`);
  for (
    const path of [
      "/docs/assets/0123456789abcdef/swagger-ui.css",
      `/docs/assets/${tag}/index.html`,
      `/docs/assets/${tag}/..%2Fpackage.json`,
      `/docs/assets/${tag}`,
    ]
  ) {
    const response = await fetch(s.url + path);
    assertEquals(response.status, 404, path);
    assertEquals(typeof (await response.json()).error, "string", path);
  }
});

Deno.test("gzip is taken when named or covered by *, never when refused with q=0", () => {
  const cases: [string | undefined, boolean][] = [
    [undefined, false],
    ["", false],
    ["identity", false],
    ["gzip", true],
    ["gzip, deflate, br", true],
    ["br;q=1.0, GZIP;q=0.5", true],
    ["gzip;q=0", false],
    ["gzip;q=0.000", false],
    ["*", true],
    ["*;q=0", false],
    ["gzip;q=0, *", false],
    ["br, *;q=0.1", true],
    ["x-gzip", true],
  ];
  for (const [header, expected] of cases) assertEquals(acceptsGzip(header), expected, header);
});

const chromium = await findChromium();
if ("missing" in chromium) {
  console.log(`skipping the Chromium test of /docs: ${chromium.missing}`);
}

Deno.test({
  name: "/docs in headless Chromium, with no host but the service, renders every route",
  ignore: "missing" in chromium,
  async fn() {
    await using s = await startTestService({ FAAS_API_KEY: API_KEY });
    const spec = await (await fetch(s.url + "/openapi.json")).json();
    const documented = operations(spec);
    assertEquals(documented, ROUTES);

    const port = new URL(s.url).port;
    // A name that is not localhost: Swagger UI, like a browser on another machine, sees a
    // remote origin (its validator badge, for one, is only skipped for localhost).
    const origin = `http://faas-sandbox.test:${port}`;
    await using browser = await launchChromium((chromium as { path: string }).path, {
      hosts: { "faas-sandbox.test": "127.0.0.1" },
    });
    const page = await browser.newPage();
    await page.goto(`${origin}/docs`);
    // Resolves once Swagger UI has rendered as many operations as the document has.
    const rendered = await page.evaluate<string[]>(`new Promise((resolve) => {
      const read = () => [...document.querySelectorAll(".opblock")].map((block) =>
        block.querySelector(".opblock-summary-method").textContent.trim() + " " +
        block.querySelector(".opblock-summary-path").getAttribute("data-path"));
      const check = () => {
        const found = read();
        if (found.length < ${documented.length}) return;
        observer.disconnect();
        resolve(found);
      };
      const observer = new MutationObserver(check);
      observer.observe(document.body, { childList: true, subtree: true });
      check();
    })`);
    assertEquals([...rendered].sort(), documented);
    const title = await page.evaluate<string>(
      `document.querySelector(".info .title").textContent`,
    );
    assertStringIncludes(title, spec.info.title);

    // Whatever the rendered page still loads (its icon, say) is in the record too.
    await page.networkIdle();
    assert(page.requests.length >= 5, `the page, its 4 assets and the document were requested`);
    for (const request of page.requests) {
      assert(
        request.url.startsWith(`${origin}/`) || /^(data|blob|about):/.test(request.url),
        `the page requested only the service, yet asked for ${request.url}`,
      );
      if (!request.url.startsWith(`${origin}/`)) continue;
      assertEquals(request.failure, undefined, `${request.url} failed`);
      assertEquals(request.status, 200, `${request.url} answered ${request.status}`);
    }
    const requested = page.requests.map((request) => new URL(request.url).pathname);
    assert(requested.includes("/openapi.json"), `the page read /openapi.json: ${requested}`);
    const script = page.requests.find((request) => request.url.endsWith("/swagger-ui-bundle.js"));
    assertEquals(script?.headers?.["content-encoding"], "gzip");
    assertEquals(page.problems, [], "no errors, exceptions or blocked loads in the page");
  },
});

import { assertEquals } from "./helpers/assert.ts";
import { startTestService } from "./helpers/test_service.ts";
import { startService } from "../src/service.ts";
import { parseConfig } from "../src/config.ts";
import { DEFAULT_REGISTRATIONS } from "../src/runtimes.ts";
import { createSilentLogger } from "../src/log.ts";

const GO_DIR = new URL("./go_client/", import.meta.url);

function goAvailable(): boolean {
  try {
    new Deno.Command("go", { args: ["version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

const hasGo = goAvailable();
if (!hasGo) console.warn("go is not installed: skipping the Go client conformance test");

async function goTest(baseUrl: string, dialect: string): Promise<void> {
  const { code, stdout, stderr } = await new Deno.Command("go", {
    args: ["test", "-count=1", "-v", "./..."],
    cwd: GO_DIR,
    env: { FAAS_BASE_URL: baseUrl, FAAS_CODE_DIALECT: dialect, GOPROXY: "off", GOFLAGS: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assertEquals(code, 0, text);
  if (text.includes("--- SKIP")) throw new Error(`go tests skipped:\n${text}`);
}

Deno.test({
  name: "the Go client decodes every answer of the service (test runtime)",
  ignore: !hasGo,
  async fn() {
    await using s = await startTestService();
    await goTest(s.url, "echo");
  },
});

const shipped = new Set(DEFAULT_REGISTRATIONS.flatMap((registration) => registration.languages));

Deno.test({
  name: "the Go client decodes every answer of the service (shipped runtimes)",
  ignore: !hasGo || !shipped.has("javascript") || !shipped.has("python"),
  async fn() {
    const config = parseConfig({
      FAAS_PORT: "0",
      FAAS_HOST: "127.0.0.1",
      FAAS_POOL_SIZE: "1",
      FAAS_LANGUAGES: "javascript,python",
    });
    const service = await startService(config, { logger: createSilentLogger() });
    try {
      await goTest(service.url, "real");
    } finally {
      await service.shutdown();
    }
  },
});

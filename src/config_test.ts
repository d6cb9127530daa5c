import { assert, assertEquals, assertStringIncludes } from "../tests/helpers/assert.ts";
import { ConfigError, parseConfig, runtimeSettings } from "./config.ts";

Deno.test("defaults match the contract", () => {
  const config = parseConfig({});
  assertEquals(config, {
    port: 8000,
    host: "0.0.0.0",
    poolSize: 10,
    maxInstances: 50,
    timeoutMs: 30_000,
    maxTimeoutMs: 60_000,
    memoryLimitMb: 256,
    maxOutputBytes: 1024 * 1024,
    outputPolicy: "truncate",
    maxCodeBytes: 16 * 1024 * 1024,
    maxValidations: navigator.hardwareConcurrency,
    queueLimit: 1000,
    drainTimeoutMs: 30_000,
    apiKey: undefined,
    tenantHashKey: undefined,
    languages: ["javascript", "typescript", "python"],
    pythonPath: "python3",
    pythonPreload: [],
    requireIsolation: [],
    debug: false,
    runnerMode: "deno",
    maxConnections: undefined,
    idleTimeoutMs: 30_000,
  });
});

Deno.test("values are parsed, aliases resolved and mapped to runtime settings", () => {
  const config = parseConfig({
    FAAS_PORT: "0",
    FAAS_POOL_SIZE: " 3 ",
    FAAS_LANGUAGES: "JS, py,javascript",
    FAAS_REQUIRE_ISOLATION: "uid, netns",
    FAAS_DEBUG: "Yes",
    FAAS_API_KEY: "k",
    FAAS_PYTHON: "/usr/bin/python3",
    FAAS_PYTHON_PRELOAD: " json, os.path,json ",
    FAAS_OUTPUT_POLICY: " Stop",
    UNRELATED: "ignored",
  });
  assertEquals(config.port, 0);
  assertEquals(config.poolSize, 3);
  assertEquals(config.languages, ["javascript", "python"]);
  assertEquals(config.requireIsolation, ["uid", "netns"]);
  assertEquals(config.debug, true);
  assertEquals(config.apiKey, "k");
  assertEquals(config.pythonPath, "/usr/bin/python3");
  assertEquals(config.pythonPreload, ["json", "os.path"]);
  const settings = runtimeSettings(config);
  assert(!("pythonPath" in settings), "the python executable is the python runtime's own option");
  assertEquals(settings.poolSize, 3);
  assertEquals(settings.requireIsolation, ["uid", "netns"]);
  assertEquals(settings.outputPolicy, "stop");
});

Deno.test("every bad value is one line naming the variable and what is allowed", () => {
  const cases: [Record<string, string>, string, string][] = [
    [{ FAAS_PORT: "http" }, "FAAS_PORT", "integer from 0 to 65535"],
    [{ FAAS_PORT: "70000" }, "FAAS_PORT", "integer from 0 to 65535"],
    [{ FAAS_POOL_SIZE: "-1" }, "FAAS_POOL_SIZE", "integer from 0"],
    [{ FAAS_MAX_INSTANCES: "0" }, "FAAS_MAX_INSTANCES", "integer from 1"],
    [{ FAAS_TIMEOUT: "1.5" }, "FAAS_TIMEOUT", "integer"],
    [{ FAAS_TIMEOUT: "90000" }, "FAAS_TIMEOUT", "at most FAAS_MAX_TIMEOUT"],
    [{ FAAS_MAX_TIMEOUT: "1e3" }, "FAAS_MAX_TIMEOUT", "integer"],
    [{ FAAS_MEMORY_LIMIT_MB: "8" }, "FAAS_MEMORY_LIMIT_MB", "from 16"],
    [{ FAAS_MAX_OUTPUT_BYTES: "10" }, "FAAS_MAX_OUTPUT_BYTES", "from 1024"],
    [{ FAAS_MAX_CODE_BYTES: "0" }, "FAAS_MAX_CODE_BYTES", "from 1"],
    [{ FAAS_QUEUE_LIMIT: "lots" }, "FAAS_QUEUE_LIMIT", "integer"],
    [{ FAAS_DRAIN_TIMEOUT: "-5" }, "FAAS_DRAIN_TIMEOUT", "integer"],
    [{ FAAS_LANGUAGES: "javascript,ruby" }, "FAAS_LANGUAGES", '"ruby"'],
    [{ FAAS_LANGUAGES: " , " }, "FAAS_LANGUAGES", "at least one"],
    [{ FAAS_REQUIRE_ISOLATION: "uid,Net NS" }, "FAAS_REQUIRE_ISOLATION", "isolation layer"],
    [{ FAAS_DEBUG: "maybe" }, "FAAS_DEBUG", "true, false"],
    [{ FAAS_MAX_VALIDATIONS: "0" }, "FAAS_MAX_VALIDATIONS", "integer from 1"],
    [{ FAAS_IDLE_TIMEOUT: "10" }, "FAAS_IDLE_TIMEOUT", "integer from 100"],
    [{ FAAS_MAX_CONNECTIONS: "0" }, "FAAS_MAX_CONNECTIONS", "integer from 1"],
    [{ FAAS_PYTHON_PRELOAD: "json,os.path,3d" }, "FAAS_PYTHON_PRELOAD", "module names"],
    [{ FAAS_OUTPUT_POLICY: "drop" }, "FAAS_OUTPUT_POLICY", "one of truncate, stop"],
    [{ FAAS_RUNNER_MODE: "fork" }, "FAAS_RUNNER_MODE", "one of auto, self, deno"],
    [{ FAAS_PYTHON_PRELOAD: "os;rm" }, "FAAS_PYTHON_PRELOAD", '"os;rm"'],
  ];
  for (const [env, variable, allowed] of cases) {
    let caught: unknown;
    try {
      parseConfig(env);
    } catch (error) {
      caught = error;
    }
    assert(caught instanceof ConfigError, `${variable} rejected`);
    assertEquals(caught.variable, variable);
    assertStringIncludes(caught.message, variable);
    assertStringIncludes(caught.message, allowed);
    assert(!caught.message.includes("\n"), "one line");
  }
});

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { EchoRuntime } from "./helpers/echo_runtime.ts";
import { MissingRuntimeError, RuntimeSet } from "../src/runtimes.ts";
import { parseConfig } from "../src/config.ts";

const config = parseConfig({ FAAS_POOL_SIZE: "1" });

Deno.test("only runtimes of enabled languages are built, first registration wins", () => {
  const js = new EchoRuntime(["javascript", "typescript"]);
  const otherJs = new EchoRuntime(["javascript"]);
  const py = new EchoRuntime(["python"]);
  const set = new RuntimeSet(["typescript"], {
    registrations: [js.registration(), otherJs.registration(), py.registration()],
    config,
  });
  assertEquals(set.runtimes, [js]);
  assertEquals(set.get("typescript"), js);
  assertEquals(set.get("javascript"), undefined, "not enabled");
  assertEquals(py.settings, undefined, "python factory never called");
  assertEquals(otherJs.settings, undefined);
  assertEquals(js.settings?.poolSize, 1);
});

Deno.test("an enabled language without a registration is an error naming it", () => {
  let caught: unknown;
  try {
    new RuntimeSet(["javascript", "python"], {
      registrations: [new EchoRuntime(["javascript"]).registration()],
      config,
    });
  } catch (error) {
    caught = error;
  }
  assert(caught instanceof MissingRuntimeError);
  assertEquals(caught.languages, ["python"]);
  assertStringIncludes(caught.message, "python");
});

Deno.test("a runtime that fails to start shuts the started ones down", async () => {
  const js = new EchoRuntime(["javascript"]);
  const py = new EchoRuntime(["python"]);
  py.failStart = "no python here";
  const set = new RuntimeSet(["javascript", "python"], {
    registrations: [js.registration(), py.registration()],
    config,
  });
  let caught: unknown;
  await set.start().catch((error) => caught = error);
  assert(caught instanceof Error);
  assertEquals(caught.message, "no python here");
  assertEquals(js.state, "stopped");
});

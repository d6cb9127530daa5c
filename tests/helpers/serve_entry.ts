/**
 * Starts the service through `main()` with test runtimes, for tests that need a real
 * process (signals, exit codes). `FAAS_TEST_RUNTIMES` picks them: `default` (echo for
 * JavaScript/TypeScript, a process-spawning runtime for Python), `none`, `broken`
 * (a runtime whose start fails), or `stuck:<seconds>` (a runtime that spawns
 * `sleep <seconds>` while starting and never finishes starting).
 *
 * @module
 */

import { main } from "../../main.ts";
import type { RuntimeRegistration } from "../../src/runtimes.ts";
import { EchoRuntime } from "./echo_runtime.ts";
import { SpawnRuntime } from "./spawn_runtime.ts";

function registrations(kind: string): RuntimeRegistration[] {
  switch (kind) {
    case "none":
      return [];
    case "broken": {
      const broken = new EchoRuntime(["javascript", "typescript", "python"]);
      broken.failStart = "the test runtime refuses to start";
      return [broken.registration()];
    }
    default:
      if (kind.startsWith("stuck:")) {
        const startChild = kind.slice("stuck:".length);
        return [{
          languages: ["javascript", "typescript", "python"],
          create: () => new SpawnRuntime(["javascript", "typescript", "python"], { startChild }),
        }];
      }
      return [
        new EchoRuntime(["javascript", "typescript"]).registration(),
        { languages: ["python"], create: () => new SpawnRuntime(["python"]) },
      ];
  }
}

await main({ registrations: registrations(Deno.env.get("FAAS_TEST_RUNTIMES") ?? "default") });

import { assert, assertEquals } from "../tests/helpers/assert.ts";
import {
  crashed,
  EXIT_CODES,
  finished,
  memoryExceeded,
  notStarted,
  outcomeError,
  outputExceeded,
  RUN_STATUSES,
  runtimeFailed,
  startFailed,
  timedOut,
} from "./outcome.ts";

const limits = { timeoutMs: 5000, memoryLimitMb: 256, maxOutputBytes: 1024 };

Deno.test("each ending has its status, its exit code and its one-line message", () => {
  const parts = { stdout: "out", stderr: "err", durationMs: 12.6, instanceId: "i-1" };
  const cases = [
    [finished(0, parts), "success", 0, ""],
    [finished(3, parts), "error", 3, ""],
    [timedOut(5000, parts), "timeout", 124, "execution timed out after 5000 ms"],
    [memoryExceeded(256, parts), "memory_limit", 137, "memory limit of 256 MiB exceeded"],
    [outputExceeded(1024, parts), "output_limit", 137, "output limit of 1024 bytes exceeded"],
    [crashed("signal SIGSEGV", parts), "crashed", 137, "sandbox crashed: signal SIGSEGV"],
  ] as const;
  for (const [outcome, status, exitCode, message] of cases) {
    assertEquals(outcome.status, status);
    assertEquals(outcome.exitCode, exitCode, status);
    assertEquals(outcomeError(outcome, limits), message, status);
    assertEquals([outcome.stdout, outcome.stderr, outcome.instanceId], ["out", "err", "i-1"]);
    assertEquals(outcome.durationMs, 13);
  }
  assertEquals(outputExceeded(1024, parts).truncated, true);
  assertEquals(new Set(cases.map(([outcome]) => outcome.status)), new Set(RUN_STATUSES));
});

Deno.test("runs answered without their sandbox report no exit code and say why", () => {
  const waited = notStarted(22_000);
  assertEquals([waited.status, waited.exitCode], ["timeout", EXIT_CODES.none]);
  assertEquals(waited.error, "no sandbox became free within 22000 ms; the code did not run");
  const boot = startFailed("no boot", 3);
  assertEquals([boot.status, boot.exitCode, boot.error], [
    "crashed",
    -1,
    "sandbox failed to start: no boot",
  ]);
  assertEquals(runtimeFailed("oops", 0).error, "sandbox failed: oops");
});

Deno.test("the top-level error is one line, and worded by status when a layer gave none", () => {
  const multiLine = { ...crashed("x", { durationMs: 1 }), error: "first line\n  second line\n" };
  assertEquals(outcomeError(multiLine, limits), "first line second line");
  const bare = { ...finished(0, { durationMs: 1 }), status: "memory_limit" as const };
  assertEquals(outcomeError(bare, limits), "memory limit of 256 MiB exceeded");
  const silent = { ...finished(0, { durationMs: 1 }), status: "crashed" as const };
  assert(/^sandbox crashed: .+$/.test(outcomeError(silent, limits)));
  assertEquals(outcomeError(finished(1, { durationMs: 1 }), limits), "");
});

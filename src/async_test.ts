import { assertEquals } from "../tests/helpers/assert.ts";
import { delay, settlesWithin, withTimeout } from "./async.ts";
import { errorMessage } from "./errors.ts";

Deno.test("withTimeout gives the value when it comes in time, undefined when it does not", async () => {
  assertEquals(await withTimeout(Promise.resolve(7), 1_000), 7);
  assertEquals(await withTimeout(new Promise(() => {}), 10), undefined);
});

Deno.test("withTimeout passes on a rejection that comes in time", async () => {
  let caught: unknown;
  await withTimeout(Promise.reject(new Error("boom")), 1_000).catch((error) => caught = error);
  assertEquals(errorMessage(caught), "boom");
});

Deno.test("settlesWithin says whether a promise settled in time, rejections included", async () => {
  assertEquals(await settlesWithin(Promise.resolve(), 1_000), true);
  assertEquals(await settlesWithin(Promise.reject(new Error("x")), 1_000), true);
  assertEquals(await settlesWithin(new Promise(() => {}), 10), false);
});

Deno.test("delay ends early when its signal aborts", async () => {
  const controller = new AbortController();
  const waited = delay(60_000, { signal: controller.signal });
  controller.abort();
  assertEquals(await settlesWithin(waited, 1_000), true);
  assertEquals(await settlesWithin(delay(60_000, { signal: controller.signal }), 1_000), true);
  assertEquals(await settlesWithin(delay(1), 1_000), true);
});

Deno.test("errorMessage reads an Error's message and stringifies anything else", () => {
  assertEquals(errorMessage(new TypeError("bad type")), "bad type");
  assertEquals(errorMessage("plain"), "plain");
  assertEquals(errorMessage(42), "42");
});

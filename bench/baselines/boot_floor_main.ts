/**
 * Main module of one boot-floor boot (see bench/boot_floor.ts): starts a Web Worker with no
 * permissions, the way a JS runner process does, and exits as soon as the worker's first
 * message arrives. Exits with 0 on that message, 3 when the worker fails instead.
 *
 * @module
 */

const worker = new Worker(new URL("./boot_floor_worker.ts", import.meta.url), {
  type: "module",
  deno: { permissions: "none" },
});
worker.onmessage = () => Deno.exit(0);
worker.onerror = (event) => {
  event.preventDefault();
  console.error(`boot floor: worker failed: ${event.message}`);
  Deno.exit(3);
};

/**
 * Entry of the no-permission Web Worker of a runner: installs the sandbox realm and relays
 * frames between it and the runner's thread. Loaded with the runner's permissions, so it and
 * its static imports are trusted code only.
 *
 * @module
 */

import { installSandbox } from "./realm.ts";
import type { RunFrame } from "./protocol.ts";

// Captured before the realm is locked down (which removes them from the global scope).
const scope = globalThis as unknown as { postMessage: (message: unknown) => void };
const post = scope.postMessage.bind(globalThis);
const listen = addEventListener.bind(globalThis);

installSandbox(post).then(
  (onRun) => {
    listen("message", (event) => onRun((event as MessageEvent).data as RunFrame));
    post({ t: "booted" });
  },
  (error) => post({ t: "fatal", message: String(error) }),
);

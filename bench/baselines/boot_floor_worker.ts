/**
 * Worker module of one boot-floor boot (see bench/boot_floor.ts): tells the main thread it is
 * up, and nothing else.
 *
 * @module
 */

// The project type-checks with the window lib; in a worker the global scope posts messages.
(globalThis as unknown as { postMessage: (message: unknown) => void }).postMessage("booted");

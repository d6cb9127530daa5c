/**
 * Turning anything thrown into text fit for a one-line message or a log field.
 *
 * @module
 */

/**
 * The message of an `Error`, or the string form of anything else that was thrown.
 *
 * @example
 * ```ts
 * try {
 *   await runtime.start();
 * } catch (error) {
 *   console.error(`cannot start: ${errorMessage(error)}`);
 * }
 * ```
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * How the bulk-push server and client log: each line starts with the
 * seconds since the process started, so that the two transcripts can be
 * read side by side.
 *
 * @module
 */

const startedAt = performance.now();

/**
 * The line `log` prints for `text` at `elapsedMs` since the start.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logLine } from "./log.ts";
 *
 * assert.equal(logLine("client 1 connected", 2051), "[  2.051 s] client 1 connected");
 * ```
 */
export function logLine(text: string, elapsedMs: number): string {
  const seconds = (elapsedMs / 1000).toFixed(3);
  return `[${seconds.padStart(7)} s] ${text}`;
}

/** Prints `text` to stdout after the seconds since the process started. */
export function log(text: string): void {
  console.log(logLine(text, performance.now() - startedAt));
}

/**
 * Time bounds for tests: nothing in the suite waits forever. The bounded
 * wait and the pause are the server's own (src/deadline.ts).
 *
 * @module
 */
import { pause, settleWithin } from "../../src/deadline.ts";

/** Resolves after `ms` milliseconds (the server's `pause`). */
export { pause as delay };

/** Rejects with a message naming `what` if `promise` has not settled within `ms`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  if (!(await settleWithin(promise, ms))) {
    throw new Error(`Timed out after ${ms} ms: ${what}`);
  }
  return await promise;
}

/**
 * Polls `condition` every 25 ms until it holds; fails after `timeoutMs`, or as
 * soon as `failure` (if given) rejects.
 */
export async function waitFor(
  what: string,
  condition: () => boolean,
  timeoutMs: number,
  failure?: Promise<unknown>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms: ${what}`);
    }
    await Promise.race(failure ? [pause(25), failure] : [pause(25)]);
  }
}

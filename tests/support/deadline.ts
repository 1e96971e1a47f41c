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
  await pollUntil(
    what,
    async () => {
      if (failure) await Promise.race([failure, undefined]);
      return condition();
    },
    (held) => held,
    timeoutMs,
  );
}

/**
 * Calls `probe` every 25 ms until `accept` holds for what it returns, and
 * returns that; fails after `timeoutMs`, naming `what` and the last value.
 */
export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms: ${what}; last: ${
          JSON.stringify(value)
        }`,
      );
    }
    await pause(25);
  }
}

/**
 * Bounded waits: every wait in the server core that must not outlast a
 * deadline goes through {@linkcode settleWithin}, which leaves no timer or
 * abort listener behind (the test sanitizers check that).
 *
 * @module
 */

/**
 * Resolves `true` once `promise` settles (fulfilled or rejected), or `false`
 * after `ms` or when `signal` aborts, whichever comes first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { settleWithin } from "./deadline.ts";
 * assert.equal(await settleWithin(new Promise(() => {}), 10), false);
 * assert.equal(await settleWithin(Promise.reject(new Error("x")), 10), true);
 * const aborted = AbortSignal.abort();
 * assert.equal(await settleWithin(new Promise(() => {}), 60_000, aborted), false);
 * ```
 */
export function settleWithin(
  promise: Promise<unknown>,
  ms: number,
  signal?: AbortSignal,
): Promise<boolean> {
  return new Promise((resolve) => {
    const finish = (settled: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(settled);
    };
    const onAbort = () => finish(false);
    const timer = setTimeout(onAbort, ms);
    if (signal?.aborted) return finish(false);
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(() => finish(true), () => finish(true));
  });
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  await settleWithin(new Promise(() => {}), ms, signal);
}

/**
 * Checks a duration in milliseconds given as option `name`: from `min` to
 * the longest a timer can wait (`why` ends the range's wording).
 */
export function checkDuration(
  name: string,
  value: number,
  min = 0,
  why = "",
): number {
  if (!(value >= min && value <= 2 ** 31 - 1)) {
    throw new RangeError(
      `Cannot use ${name}: expected milliseconds from ${min} to 2147483647${why}, received ${value}`,
    );
  }
  return value;
}

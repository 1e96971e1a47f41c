/**
 * Time bounds for tests: nothing in the suite waits forever.
 *
 * @module
 */

/** Rejects with a message naming `what` if `promise` has not settled within `ms`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms: ${what}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
    await Promise.race(failure ? [delay(25), failure] : [delay(25)]);
  }
}

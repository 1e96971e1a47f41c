/**
 * The connection limit: one counter that every accepted connection must take
 * a slot from, and gives back exactly once when it ends.
 *
 * @module
 */

/**
 * A non-blocking counting semaphore.
 *
 * @example
 * ```ts
 * import { ConnectionLimit } from "./connection_limit.ts";
 * const limit = new ConnectionLimit(1);
 * limit.tryAcquire(); // true
 * limit.tryAcquire(); // false: the client is refused, it never takes a slot
 * limit.release();
 * ```
 */
export class ConnectionLimit {
  /** The most connections served at once. */
  readonly max: number;
  #active = 0;

  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot use connection limit: received ${max}`);
    }
    this.max = max;
  }

  /** Slots in use. */
  get active(): number {
    return this.#active;
  }

  /** Takes a slot if one is free. */
  tryAcquire(): boolean {
    if (this.#active >= this.max) return false;
    this.#active++;
    return true;
  }

  /** Gives a slot back. */
  release(): void {
    if (this.#active === 0) {
      throw new Error("Cannot release a slot: none is held");
    }
    this.#active--;
  }
}

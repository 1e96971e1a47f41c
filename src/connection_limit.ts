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
 * import assert from "node:assert/strict";
 * import { ConnectionLimit } from "./connection_limit.ts";
 * const limit = new ConnectionLimit(1);
 * assert.equal(limit.tryAcquire(), true);
 * // The next client is refused: it never takes a slot.
 * assert.equal(limit.tryAcquire(), false);
 * assert.equal(limit.active, 1);
 * limit.release();
 * assert.equal(limit.tryAcquire(), true);
 * ```
 */
export class ConnectionLimit {
  /** The most connections served at once. */
  readonly #max: number;
  #active = 0;

  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot use connection limit: received ${max}`);
    }
    this.#max = max;
  }

  /** Slots in use. */
  get active(): number {
    return this.#active;
  }

  /** Takes a slot if one is free. */
  tryAcquire(): boolean {
    if (this.#active >= this.#max) return false;
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

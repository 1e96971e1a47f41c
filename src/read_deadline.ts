/**
 * The client's read deadline: one timer that fires when the server has been
 * silent too long while a read waits, moved on lazily (a timer is not reset
 * at every byte: when it fires early, it is set again for the time left).
 *
 * @module
 */
import { checkDuration } from "./deadline.ts";

/** What the deadline asks of the connection that owns it. */
export interface DeadlineOwner {
  /** True while a read waits (only then does silence count). */
  waiting(): boolean;
  /** The server was silent for `ms` while a read waited. */
  expired(ms: number): void;
}

/**
 * Silence is counted from the latest of the last bytes received, the last
 * bytes sent and the start of the current wait ({@linkcode touch}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ReadDeadline } from "./read_deadline.ts";
 *
 * const expired = Promise.withResolvers<number>();
 * const deadline = new ReadDeadline(20, {
 *   waiting: () => true,
 *   expired: expired.resolve,
 * });
 * deadline.touch(); // a read begins to wait
 * deadline.arm();
 * assert.equal(await expired.promise, 20);
 * deadline.stop();
 * ```
 */
export class ReadDeadline {
  #ms: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #quietSince = Date.now();
  readonly #owner: DeadlineOwner;

  constructor(ms: number, owner: DeadlineOwner) {
    this.#ms = checkDuration("readTimeoutMs", ms);
    this.#owner = owner;
  }

  /** The longest silence allowed, in milliseconds; 0 = none. */
  get ms(): number {
    return this.#ms;
  }

  set ms(ms: number) {
    this.#ms = checkDuration("readTimeoutMs", ms);
    this.stop();
    this.arm();
  }

  /** Bytes went by (either way), or a wait began: silence counts from now. */
  touch(): void {
    this.#quietSince = Date.now();
  }

  /** Makes sure the timer runs while a read waits. */
  arm(): void {
    if (this.#ms === 0 || this.#timer !== undefined) return;
    if (!this.#owner.waiting()) return;
    const left = this.#quietSince + this.#ms - Date.now();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#ms === 0 || !this.#owner.waiting()) return;
      if (Date.now() - this.#quietSince >= this.#ms) {
        this.#owner.expired(this.#ms);
      } else {
        this.arm();
      }
    }, Math.max(0, left));
  }

  /** Stops the timer (the connection is over, or the limit changes). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * A timeout shared by many connections as one object per server: the
 * idle timeout (time since a connection last received a byte) and the line
 * timeout (time since the first byte of an unfinished line) are each one
 * tracker.
 *
 * One timer per connection would be simpler, but a Deno timer costs about
 * 4 KiB of resident memory, more than everything else an idle connection
 * holds. Every target of a tracker has the same timeout, so ordering them
 * by when their clock started orders them by deadline: a start is O(1)
 * (move to the back of an insertion-ordered Map) and the whole tracker has
 * at most one timer armed.
 *
 * @module
 */

/** The time source of a {@linkcode TimeoutTracker}; tests pass a manual one. */
export interface Clock {
  /** The current time in milliseconds. */
  now(): number;
  /** Calls `callback` after `ms`; the returned function cancels it. */
  schedule(callback: () => void, ms: number): () => void;
}

/** The real clock. */
const systemClock: Clock = {
  now: () => Date.now(),
  schedule: (callback, ms) => {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
};

/**
 * Calls `onExpire(target)` for every target whose clock was started
 * ({@linkcode start}) `timeoutMs` ago and not stopped or started again since.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TimeoutTracker } from "./timeout_tracker.ts";
 * const expired: string[] = [];
 * const tracker = new TimeoutTracker<string>(20, (target) => expired.push(target));
 * tracker.start("silent");
 * tracker.start("stopped");
 * tracker.stop("stopped");
 * await new Promise((resolve) => setTimeout(resolve, 40));
 * assert.deepEqual(expired, ["silent"]);
 * ```
 */
export class TimeoutTracker<T> {
  readonly #timeoutMs: number;
  readonly #onExpire: (target: T) => void;
  readonly #clock: Clock;
  /** Oldest start first: Map keeps insertion order, and start re-inserts. */
  readonly #startedAt = new Map<T, number>();
  /** Cancels the one armed timer, if any. */
  #timer: (() => void) | undefined;

  constructor(
    timeoutMs: number,
    onExpire: (target: T) => void,
    clock: Clock = systemClock,
  ) {
    if (!(timeoutMs > 0)) {
      throw new RangeError(`Cannot use timeout: received ${timeoutMs}`);
    }
    this.#timeoutMs = timeoutMs;
    this.#onExpire = onExpire;
    this.#clock = clock;
  }

  /** (Re)starts `target`'s clock now. */
  start(target: T): void {
    const now = this.#clock.now();
    this.#startedAt.delete(target);
    this.#startedAt.set(target, now);
    if (this.#timer === undefined) this.#arm(now + this.#timeoutMs);
  }

  /** Stops `target`'s clock; it will not expire unless started again. */
  stop(target: T): void {
    this.#startedAt.delete(target);
    if (this.#startedAt.size === 0 && this.#timer !== undefined) {
      this.#timer();
      this.#timer = undefined;
    }
  }

  #arm(due: number) {
    this.#timer = this.#clock.schedule(
      this.#expire,
      Math.max(0, due - this.#clock.now()),
    );
  }

  // The timer may fire for a target that has since been restarted or
  // stopped; it then just re-arms for the oldest one left. An `onExpire`
  // that throws must not cost the other targets their timeouts: the sweep
  // and the re-arming finish first, then the first error is thrown on, as
  // from any timer's callback.
  #expire = () => {
    this.#timer = undefined;
    const now = this.#clock.now();
    let failure: { error: unknown } | undefined;
    for (const [target, startedAt] of this.#startedAt) {
      if (startedAt + this.#timeoutMs > now) {
        if (this.#timer === undefined) this.#arm(startedAt + this.#timeoutMs);
        break;
      }
      this.#startedAt.delete(target);
      try {
        this.#onExpire(target);
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
  };
}

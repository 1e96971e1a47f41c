/**
 * The idle timeout as one object per server: connections ordered by when
 * they last received a byte, and a single timer for the oldest.
 *
 * One timer per connection would be simpler, but a Deno timer costs about
 * 4 KiB of resident memory, more than everything else an idle connection
 * holds. Here activity is O(1) (move to the back of an insertion-ordered
 * Map) and the whole server has at most one timer armed.
 *
 * @module
 */

/** Something that can time out for idleness. */
export interface IdleTimeoutTarget {
  /** Called once when nothing has been received for the timeout. */
  onIdleTimeout(): void;
}

/**
 * Tracks last activity and fires {@linkcode IdleTimeoutTarget.onIdleTimeout}
 * for every target silent for `timeoutMs`.
 *
 * @example
 * ```ts
 * import { IdleTracker } from "./idle_tracker.ts";
 * const tracker = new IdleTracker(50);
 * const expired = new Promise<void>((resolve) => tracker.touch({ onIdleTimeout: resolve }));
 * await expired; // about 50 ms later
 * ```
 */
export class IdleTracker {
  readonly timeoutMs: number;
  /** Least recently active first: Map keeps insertion order, and touch re-inserts. */
  readonly #lastActive = new Map<IdleTimeoutTarget, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(timeoutMs: number) {
    if (!(timeoutMs > 0)) {
      throw new RangeError(`Cannot use idle timeout: received ${timeoutMs}`);
    }
    this.timeoutMs = timeoutMs;
  }

  /** Records activity of `target` now (and starts tracking it). */
  touch(target: IdleTimeoutTarget, now: number = Date.now()): void {
    this.#lastActive.delete(target);
    this.#lastActive.set(target, now);
    if (this.#timer === undefined) this.#arm(now + this.timeoutMs);
  }

  /** Stops tracking `target`. */
  remove(target: IdleTimeoutTarget): void {
    this.#lastActive.delete(target);
    if (this.#lastActive.size === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #arm(due: number) {
    this.#timer = setTimeout(this.#expire, Math.max(0, due - Date.now()));
  }

  // The timer may fire for a target that has since been active or removed;
  // it then just re-arms for the oldest one left.
  #expire = () => {
    this.#timer = undefined;
    const now = Date.now();
    for (const [target, lastActive] of this.#lastActive) {
      if (lastActive + this.timeoutMs > now) {
        this.#arm(lastActive + this.timeoutMs);
        return;
      }
      this.#lastActive.delete(target);
      target.onIdleTimeout();
    }
  };
}

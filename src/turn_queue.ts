/**
 * The turn queue: where connections wait whose time slice ran out while
 * their input still holds requests.
 *
 * Why one queue rather than a timer per connection: timers that are due run
 * together, one after the other, before the runtime looks for input again.
 * With 50 clients flooding pipelined lines, each of their turns (a 2 ms
 * slice, then the write of its replies) came in one batch, and a client
 * sending one short line waited for all of them: 100 to 400 ms. The queue
 * runs turns in order of arrival for a pass of about one slice, then waits
 * until the event loop has looked for input ({@linkcode inputPoll}) before
 * the next pass. A request that arrives meanwhile
 * is read and answered between two passes, however many connections wait
 * for turns; those connections share what is left of the time in order.
 *
 * @module
 */

import { inputPoll } from "./input_poll.ts";

/** One queue per thread (one event loop). */
export class TurnQueue {
  readonly #passMs: number;
  #waiting: ((() => void) | undefined)[] = [];
  /** Index of the next turn to run in `#waiting`. */
  #next = 0;
  #scheduled = false;

  /** `passMs`: how long one pass may run turns (at least one runs). */
  constructor(passMs: number) {
    this.#passMs = passMs;
  }

  /** Turns waiting to run. */
  get length(): number {
    return this.#waiting.length - this.#next;
  }

  /** Runs `turn` after the turns queued before it, in a later pass. */
  enqueue(turn: () => void): void {
    this.#waiting.push(turn);
    if (!this.#scheduled) this.#schedule();
  }

  #schedule() {
    this.#scheduled = true;
    inputPoll.after(() => this.#pass());
  }

  #pass() {
    this.#scheduled = false;
    const started = performance.now();
    try {
      do {
        const turn = this.#waiting[this.#next];
        this.#waiting[this.#next++] = undefined;
        turn!();
      } while (
        this.#next < this.#waiting.length &&
        performance.now() - started < this.#passMs
      );
    } finally {
      if (this.#next === this.#waiting.length) {
        this.#waiting = [];
        this.#next = 0;
      } else if (this.#next > 1024 && this.#next * 2 > this.#waiting.length) {
        this.#waiting = this.#waiting.slice(this.#next);
        this.#next = 0;
      }
      if (this.length > 0 && !this.#scheduled) this.#schedule();
    }
  }
}

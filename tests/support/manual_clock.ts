/**
 * A clock for {@linkcode TimeoutTracker} that moves only when a test says
 * so: timeouts are then exact, whatever the machine's load.
 *
 * @module
 */
import type { Clock } from "../../src/timeout_tracker.ts";

/** A clock that moves only when told; timers fire as time passes them. */
export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  /** The timers not yet fired or cancelled, by id. */
  readonly timers = new Map<number, { due: number; callback: () => void }>();

  constructor(now = 1000) {
    this.#now = now;
  }

  now(): number {
    return this.#now;
  }

  schedule(callback: () => void, ms: number): () => void {
    const id = this.#nextId++;
    this.timers.set(id, { due: this.#now + ms, callback });
    return () => this.timers.delete(id);
  }

  /** Moves time on by `ms`, firing every timer due by then, earliest first. */
  advance(ms: number): void {
    const until = this.#now + ms;
    while (true) {
      const next = [...this.timers.entries()].sort((a, b) =>
        a[1].due - b[1].due
      )[0];
      if (next === undefined || next[1].due > until) break;
      this.timers.delete(next[0]);
      this.#now = next[1].due;
      next[1].callback();
    }
    this.#now = until;
  }
}

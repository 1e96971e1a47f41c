/**
 * The read gate: makes the runtime look for every socket's input often,
 * however fast a few clients stream.
 *
 * Why it is needed: Deno's event loop (2.9) asks the kernel which sockets
 * have input only when it has nothing else to do, or every 61st turn. A
 * socket whose read filled the buffer is read again on the next turn without
 * asking the kernel (up to 32 reads a turn, as libuv does), so while a few
 * clients stream at full speed the loop never runs out of work: 20 clients
 * streaming without a newline kept a bystander's one-line request waiting
 * 1 to 2.4 s (a bare `node:net` server in Deno shows the same; Node.js,
 * which asks the kernel every turn, answered within 56 ms).
 *
 * How: once sockets have filled the read buffer back to back for a window
 * of time, every socket whose read fills it stops reading and is held here.
 * The gate opens after the event loop has twice asked the kernel for input
 * ({@linkcode inputPoll}): the first after a turn in which the held sockets
 * were not read, the second after the clients that were waiting have been
 * read, so they are served before the streamers go on. A
 * socket that reads less than a full buffer has drained what the kernel
 * held and is never held.
 *
 * @module
 */

import { inputPoll } from "./input_poll.ts";

/** How long sockets may fill the read buffer back to back before the gate closes. */
export const GATE_WINDOW_MS = 15;

/** One gate per thread (one event loop); `T` is what it holds (a socket). */
export class ReadGate<T> {
  readonly #windowMs: number;
  readonly #release: (held: T) => void;
  /** When the current run of full reads began. */
  #windowStart = 0;
  #lastFullRead = -Infinity;
  #closed = false;
  #held: T[] = [];
  #opened: Promise<void> = Promise.resolve();
  #open: () => void = () => {};

  /** `release` lets a held socket read again (unless its owner paused it meanwhile). */
  constructor(windowMs: number, release: (held: T) => void) {
    this.#windowMs = windowMs;
    this.#release = release;
  }

  /**
   * A read filled the buffer: true when the reader must stop and be held
   * ({@linkcode hold}). A gap of a window between full reads starts a new
   * run.
   */
  mustWait(): boolean {
    if (this.#closed) return true;
    const now = performance.now();
    if (now - this.#lastFullRead > this.#windowMs) this.#windowStart = now;
    this.#lastFullRead = now;
    if (now - this.#windowStart < this.#windowMs) return false;
    this.#closed = true;
    this.#opened = new Promise((resolve) => this.#open = resolve);
    inputPoll.after(() => inputPoll.after(() => this.#reopen()));
    return true;
  }

  /** Keeps `reader` (which has stopped reading) until the gate opens. */
  hold(reader: T): void {
    this.#held.push(reader);
  }

  /** Resolves when the gate is open: at once unless sockets are held. */
  opened(): Promise<void> {
    return this.#opened;
  }

  #reopen() {
    this.#closed = false;
    this.#lastFullRead = -Infinity;
    const held = this.#held;
    this.#held = [];
    for (const reader of held) this.#release(reader);
    this.#open();
  }
}

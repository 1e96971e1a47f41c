/**
 * The client's queue of waiting reads: every `readLine`, `readBytes` and
 * `request` waits here, in order, for the next frame.
 *
 * @module
 */
import type { LineClientError } from "./client_error.ts";

/** A read waiting for its frame. */
export interface Reader {
  resolve(frame: string | Uint8Array): void;
  reject(error: LineClientError): void;
  /** The length of the raw frame asked for, or -1 for a line. */
  readonly bytes: number;
  /** The framer was told to read `bytes` raw for this reader. */
  armed: boolean;
  /** Keeps its place after giving up (its frame is someone's reply). */
  readonly keepsPlace: boolean;
  /** Timed out: it no longer wants its frame. */
  gaveUp: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * First in, first out, with a moving head (no shifting of the array at
 * every frame: thousands of pipelined requests may wait).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Reader, ReadQueue } from "./read_queue.ts";
 *
 * const reader = (keepsPlace: boolean, gaveUp: boolean): Reader => ({
 *   resolve() {},
 *   reject() {},
 *   bytes: -1,
 *   armed: false,
 *   keepsPlace,
 *   gaveUp,
 *   timer: undefined,
 * });
 * const queue = new ReadQueue();
 * const gaveUpItsPlace = reader(false, true);
 * const timedOutRequest = reader(true, true);
 * queue.push(gaveUpItsPlace);
 * queue.push(timedOutRequest);
 * // A read that gave up its place is skipped; a request keeps its own.
 * assert.equal(queue.first(), timedOutRequest);
 * queue.shift();
 * assert.equal(queue.length, 0);
 * ```
 */
export class ReadQueue {
  #readers: Reader[] = [];
  #head = 0;

  /** How many reads wait. */
  get length(): number {
    return this.#readers.length - this.#head;
  }

  /**
   * The oldest read that still wants a frame or holds a place for one; a
   * read that gave up its place is dropped on the way.
   */
  first(): Reader | undefined {
    while (this.#head < this.#readers.length) {
      const reader = this.#readers[this.#head];
      if (!reader.gaveUp || reader.keepsPlace) return reader;
      this.shift();
    }
    return undefined;
  }

  push(reader: Reader): void {
    this.#readers.push(reader);
  }

  /** Removes the oldest read. */
  shift(): void {
    this.#head++;
    if (this.#head === this.#readers.length) {
      this.#readers = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#readers.length) {
      this.#readers = this.#readers.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Fails every waiting read with `error` and empties the queue. */
  rejectAll(error: LineClientError): void {
    const waiting = this.#readers.slice(this.#head);
    this.#readers = [];
    this.#head = 0;
    for (const reader of waiting) {
      clearTimeout(reader.timer);
      if (!reader.gaveUp) reader.reject(error);
    }
  }
}

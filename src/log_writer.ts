/**
 * A writer of log lines that never makes its caller wait: lines queue in a
 * bounded buffer and are written in the background; when the reader cannot
 * keep up, new lines are dropped and counted.
 *
 * Why not write synchronously: a write to a pipe that nobody reads (a
 * wedged log shipper) blocks once the pipe's buffer is full, and with it
 * the whole event loop, so the server stops serving everyone. Why not
 * LogTape's non-blocking sinks: they bound the number of records but not
 * their bytes (and take a whole batch out of the bound while writing it),
 * drop the oldest lines, and report drops on a timer rather than in the
 * log where the gap is; their flush timer is not unref'd, and disposing
 * them waits for a wedged stream forever.
 *
 * @module
 */
import { Buffer } from "node:buffer";

/**
 * Writes some of `bytes` and says how many, as `Deno.stderr.write` does.
 * It may take as long as it likes; it may fail (the reader is gone).
 */
export type WriteBytes = (bytes: Uint8Array) => Promise<number>;

/** Options of a {@linkcode NonBlockingWriter}. */
export interface NonBlockingWriterOptions {
  /**
   * Most bytes held at once, queued or being written. A line that would go
   * over is dropped, unless nothing is held (so one long line always fits).
   * Default 64 KiB, as much again as a Linux pipe holds.
   */
  maxQueuedBytes?: number;
  /**
   * The line that says how many lines were dropped (a log line in the
   * format of the others, ending with a line feed). It is queued as soon as
   * a write makes progress again, where the gap is.
   */
  droppedNotice: (dropped: number) => string;
  /** Called with the number of lines dropped, as they are dropped, to count them. */
  onDrop?: (count: number) => void;
}

const encoder = new TextEncoder();

/** Default of {@linkcode NonBlockingWriterOptions.maxQueuedBytes}. */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024;

/**
 * Lines to `write` in the order they were given, in the background, with
 * a bounded queue. Once a line has been dropped, every later line is
 * dropped too until a write makes progress; then a line saying how many
 * were dropped takes their place. So the written lines are always in order
 * and every gap is marked where it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NonBlockingWriter } from "./log_writer.ts";
 *
 * const written: string[] = [];
 * let open = () => {};
 * const reader = new Promise<void>((resolve) => open = resolve);
 * const writer = new NonBlockingWriter(async (bytes) => {
 *   await reader; // nobody reads until open() is called
 *   written.push(new TextDecoder().decode(bytes));
 *   return bytes.length;
 * }, { maxQueuedBytes: 8, droppedNotice: (n) => `[${n} dropped]\n` });
 *
 * assert.equal(writer.write("one\n"), true); // being written, held
 * assert.equal(writer.write("two\n"), true); // queued: 8 bytes held
 * assert.equal(writer.write("three\n"), false); // over the bound: dropped
 * assert.equal(writer.write("4\n"), false); // dropped until writing resumes
 * assert.equal(writer.dropped, 2);
 * open();
 * await writer.idle();
 * assert.deepEqual(written, ["one\n", "two\n[2 dropped]\n"]);
 * ```
 */
export class NonBlockingWriter {
  readonly #write: WriteBytes;
  readonly #maxQueuedBytes: number;
  readonly #droppedNotice: (dropped: number) => string;
  readonly #onDrop: (count: number) => void;
  /** Lines not yet handed to `write`, one entry per line. */
  #queue: Uint8Array[] = [];
  /** Bytes queued plus bytes being written. */
  #heldBytes = 0;
  #writing = false;
  /** Lines dropped since the last write made progress; not 0 means "dropping". */
  #droppedSinceProgress = 0;
  #dropped = 0;
  #idleWaiters: (() => void)[] = [];

  constructor(write: WriteBytes, options: NonBlockingWriterOptions) {
    this.#write = write;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#droppedNotice = options.droppedNotice;
    this.#onDrop = options.onDrop ?? (() => {});
  }

  /** Lines dropped so far: those over the bound and those whose write failed. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Queues `line` (which ends with its line feed); false when it was dropped. */
  write(line: string): boolean {
    const bytes = encoder.encode(line);
    const fits = this.#heldBytes === 0 ||
      this.#heldBytes + bytes.length <= this.#maxQueuedBytes;
    if (this.#droppedSinceProgress > 0 || !fits) {
      this.#droppedSinceProgress++;
      this.#countDropped(1);
      return false;
    }
    this.#enqueue(bytes);
    return true;
  }

  /** Resolves once every line queued so far has been written (or has failed). */
  idle(): Promise<void> {
    if (!this.#writing) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #countDropped(count: number) {
    this.#dropped += count;
    this.#onDrop(count);
  }

  #enqueue(bytes: Uint8Array) {
    this.#queue.push(bytes);
    this.#heldBytes += bytes.length;
    if (!this.#writing) this.#writeQueued();
  }

  async #writeQueued() {
    this.#writing = true;
    while (this.#queue.length > 0) {
      const lines = this.#queue;
      this.#queue = [];
      const batch = lines.length === 1 ? lines[0] : Buffer.concat(lines);
      let offset = 0;
      while (offset < batch.length) {
        let written: number;
        try {
          written = await this.#write(batch.subarray(offset));
        } catch {
          // The reader is gone: these lines are lost and counted, but no
          // notice is queued for them, as it could not be written either.
          this.#countDropped(linesIn(batch.subarray(offset)));
          written = batch.length - offset;
        }
        offset += written;
        this.#heldBytes -= written;
        if (written > 0) this.#progressed();
      }
    }
    this.#writing = false;
    for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** A write made progress: the lines dropped meanwhile get their notice, behind what was queued. */
  #progressed() {
    if (this.#droppedSinceProgress === 0) return;
    const notice = encoder.encode(
      this.#droppedNotice(this.#droppedSinceProgress),
    );
    this.#droppedSinceProgress = 0;
    this.#queue.push(notice);
    this.#heldBytes += notice.length;
  }
}

/** Lines begun in `bytes` (the last may lack its line feed: it was cut by a partial write). */
function linesIn(bytes: Uint8Array): number {
  let count = 0;
  for (const byte of bytes) if (byte === 0x0a) count++;
  return bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a
    ? count + 1
    : count;
}

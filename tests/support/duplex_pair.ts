/**
 * An in-memory connection: two `node:stream` Duplex ends, what one writes the
 * other reads, with no socket, no kernel buffer and no timing in between. A
 * test hands one end to the server's connection task and drives the other
 * byte by byte.
 *
 * Like TCP, each direction has bounded room: a write stays pending (counted
 * in the writer's `writableLength`) until the reading end has taken it in,
 * and the reading end takes in nothing beyond its `highWaterMark` while it is
 * paused. So a reader that stops reading makes the writer see backpressure
 * (`write()` returns false, then `drain` once the reader resumes), and a
 * half-close (`end()`) reaches the other end as `end` after the bytes before
 * it.
 *
 * @module
 */
import { Duplex } from "node:stream";

/** Options of {@linkcode duplexPair}. */
export interface DuplexPairOptions {
  /** Bytes each end buffers for reading and writing before it pushes back. Default 16 KiB. */
  highWaterMark?: number;
}

/** One end of a {@linkcode duplexPair}. */
class PairEnd extends Duplex {
  other!: PairEnd;
  /** The write waiting for this end's reader to make room, if any. */
  #pendingWrite: (() => void) | undefined;

  /** Called when this end's reader wants more: let the other end's last write complete. */
  override _read(): void {
    const pending = this.#pendingWrite;
    this.#pendingWrite = undefined;
    pending?.();
  }

  override _write(
    chunk: Uint8Array,
    _encoding: string,
    callback: (error?: Error | null) => void,
  ): void {
    // push() returns false once the reader's buffer is full: the write
    // completes only when that reader asks for more.
    if (this.other.push(chunk)) callback();
    else this.other.#pendingWrite = () => callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.other.push(null);
    callback();
  }

  override _destroy(
    error: Error | null,
    callback: (error?: Error | null) => void,
  ): void {
    // A write that can never complete must not keep the writer waiting.
    const pending = this.#pendingWrite;
    this.#pendingWrite = undefined;
    pending?.();
    callback(error);
  }
}

/**
 * Two connected Duplex ends (half-open allowed on both, as the server's
 * sockets are). Destroying one end does not touch the other: a test that
 * wants the server to see a reset destroys the server's end with an error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { duplexPair } from "./duplex_pair.ts";
 * const [a, b] = duplexPair();
 * const received = new Promise((resolve) => b.once("data", resolve));
 * a.write("hi");
 * assert.equal(String(await received), "hi");
 * a.destroy();
 * b.destroy();
 * ```
 */
export function duplexPair(options: DuplexPairOptions = {}): [Duplex, Duplex] {
  const settings = {
    allowHalfOpen: true,
    highWaterMark: options.highWaterMark ?? 16 * 1024,
  };
  const a = new PairEnd(settings);
  const b = new PairEnd(settings);
  a.other = b;
  b.other = a;
  return [a, b];
}

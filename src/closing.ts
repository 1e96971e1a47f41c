/**
 * How a connection's stream is closed once its way of ending is decided:
 * explicit phases, each owning its one timer, so that no callback can
 * replace another's deadline.
 *
 * - `flushing`: what is owed is written, then our FIN. A client that does
 *   not read cannot hold this phase longer than {@linkcode FINAL_FLUSH_MS}.
 * - `lingering`: our FIN is out; what the client still sends is read and
 *   dropped until its own FIN, for at most the linger time. Closing a socket
 *   with unread input makes the kernel send a reset, which can destroy
 *   replies the client has not read yet.
 * - `forcing`: a best-effort last line, then the stream is destroyed within
 *   {@linkcode FORCED_LINE_WAIT_MS} (a shutdown's deadline, an abort).
 *
 * @module
 */
import type { Duplex } from "node:stream";
import type { OutputQueue } from "./output_queue.ts";

/** How long closing output may take to be written before the stream is destroyed. */
const FINAL_FLUSH_MS = 1500;
/** How long a forced close waits for its best-effort last line. */
const FORCED_LINE_WAIT_MS = 50;

/** One closing stream (made when a connection starts to close). */
export class Closing {
  readonly #stream: Duplex;
  readonly #out: OutputQueue;
  readonly #lingerMs: number;
  #phase: "flushing" | "lingering" | "forcing";
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The client's FIN has arrived: nothing is left to linger for. */
  #peerEnded: boolean;

  /**
   * Starts closing `stream` once `out` (which holds the last line, if any)
   * is written: gracefully (`flushing`), or at once (`forcing`).
   */
  constructor(
    stream: Duplex,
    out: OutputQueue,
    options: { lingerMs: number; peerEnded: boolean; force: boolean },
  ) {
    this.#stream = stream;
    this.#out = out;
    this.#lingerMs = options.lingerMs;
    this.#peerEnded = options.peerEnded;
    this.#phase = options.force ? "forcing" : "flushing";
    this.#arm(options.force ? FORCED_LINE_WAIT_MS : FINAL_FLUSH_MS);
    out.flush();
    this.written();
  }

  /** Output was written: once all of it is handed over, FIN (once). */
  written(): void {
    if (this.#phase === "lingering") return;
    if (!this.#out.isEmpty || this.#stream.writableEnded) return;
    this.#stream.end(() => {
      if (this.#phase === "forcing" || this.#peerEnded) return this.#destroy();
      if (this.#phase !== "flushing") return;
      this.#phase = "lingering";
      this.#arm(this.#lingerMs);
    });
  }

  /** The client's FIN arrived. */
  peerEnded(): void {
    this.#peerEnded = true;
    if (this.#phase === "lingering") this.#destroy();
  }

  /** No more waiting for the client: the last line gets a moment, then the stream goes. */
  force(): void {
    if (this.#phase === "forcing") return;
    this.#phase = "forcing";
    this.#arm(FORCED_LINE_WAIT_MS);
    this.written();
  }

  /** The stream has closed: the phase's timer is of no use any more. */
  closed(): void {
    clearTimeout(this.#timer);
  }

  #arm(ms: number) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#destroy(), ms);
  }

  #destroy() {
    clearTimeout(this.#timer);
    this.#stream.destroy();
  }
}

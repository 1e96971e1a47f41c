/**
 * Framing: the one framer of both ends (server connections and the client
 * library). Pure: no sockets, no timers. This module holds what framing is
 * (options, frames, the limit) and the writing half; the reading half is
 * frame_decoder.ts.
 *
 * {@linkcode FrameDecoder} is pulled, not pushed: the owner hands it the
 * bytes of one read and takes frames one at a time with `next()`, so it
 * decides when to stop (its output is full, it must let other connections
 * run, a reply is pending) and may change the framing between two frames
 * (ask for the next N bytes raw, as a memcached data block). Its memory is
 * bounded whatever the peer sends: the unfinished frame (at most the frame
 * limit) and, when the owner stops pulling in the middle of a read, the rest
 * of that one read.
 *
 * {@linkcode FrameEncoder} is the other half: it ends each line with the
 * framing's terminator and refuses a line that would not arrive as one.
 *
 * @module
 */

/** Marks a frame that was longer than the limit; its bytes were dropped. */
export const LINE_TOO_LONG: unique symbol = Symbol("line too long");

/**
 * One frame: a request line (text), a raw block asked for with
 * {@linkcode FrameDecoder.readBytes} (bytes), or {@linkcode LINE_TOO_LONG}.
 */
export type Frame = string | Uint8Array | typeof LINE_TOO_LONG;

/** How a byte stream is cut into frames. */
export interface FramingOptions {
  /**
   * The bytes that end a frame (a string is taken as UTF-8), at least one
   * byte. Default: line framing, where a frame ends with LF, a CR just before
   * the LF belongs to the terminator, and trailing whitespace (space, tab,
   * CR, VT, FF) is removed. With any other terminator a frame is exactly the
   * text between two terminators.
   */
  readonly terminator?: string | Uint8Array;
  /**
   * The longest frame in bytes, terminator excluded (raw bytes, before
   * decoding and before whitespace is removed). Default 65536.
   */
  readonly maxFrameBytes?: number;
}

/** The default frame limit. */
export const DEFAULT_MAX_FRAME_BYTES = 65536;

/** Checks a frame limit: a positive safe integer. */
export function checkMaxFrameBytes(maxFrameBytes: number): number {
  if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) {
    throw new RangeError(
      `Cannot use frame limit: expected a positive integer, received ${maxFrameBytes}`,
    );
  }
  return maxFrameBytes;
}

/**
 * Ends lines with the framing's terminator (CRLF for line framing, or the
 * `lineEnding` given) and refuses a line that would not arrive as one line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameEncoder } from "./framing.ts";
 *
 * const encoder = new FrameEncoder();
 * assert.equal(encoder.line("hello"), "hello\r\n");
 * assert.throws(() => encoder.line("two\nlines"), TypeError);
 * assert.throws(() => encoder.line("a\rb", { refuseCr: true }), TypeError);
 * const eom = new FrameEncoder({ terminator: "\r<--EOM-->\r" });
 * assert.equal(eom.line("ack 1"), "ack 1\r<--EOM-->\r");
 * ```
 */
export class FrameEncoder {
  /** What follows every line. */
  readonly ending: string;
  readonly #terminator: string | undefined;

  /**
   * `lineEnding` replaces CRLF for line framing (the client sends LF).
   * A custom terminator must be text (a string) to be written.
   */
  constructor(options: FramingOptions & { lineEnding?: "\r\n" | "\n" } = {}) {
    const terminator = options.terminator;
    if (terminator !== undefined && typeof terminator !== "string") {
      throw new TypeError("Cannot write lines ended by a binary terminator");
    }
    const custom = terminator === undefined || terminator === "\n"
      ? undefined
      : terminator;
    if (custom === "") {
      throw new RangeError("Cannot use an empty frame terminator");
    }
    this.#terminator = custom;
    this.ending = custom ?? options.lineEnding ?? "\r\n";
  }

  /**
   * `line` and its ending. Throws a `TypeError` if the line contains the
   * terminator (for line framing: LF; with `refuseCr`, also a lone CR, which
   * clients that split lines on CR would show as a line break).
   */
  line(line: string, options: { refuseCr?: boolean } = {}): string {
    this.check(line, options);
    return line + this.ending;
  }

  /** Throws like {@linkcode line} without building the text. */
  check(line: string, options: { refuseCr?: boolean } = {}): void {
    if (typeof line !== "string") {
      throw new TypeError(
        `Cannot send ${describeValue(line)}: a line must be a string`,
      );
    }
    if (this.#terminator !== undefined) {
      if (line.includes(this.#terminator)) {
        throw new TypeError(
          `Cannot send a line that contains its terminator: ${
            JSON.stringify(line.slice(0, 80))
          }`,
        );
      }
      return;
    }
    if (line.includes("\n") || (options.refuseCr && line.includes("\r"))) {
      throw new TypeError(
        `Cannot send a line that contains ${
          options.refuseCr ? "CR or LF" : "LF"
        }: ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
  }
}

/** A short, safe description of a value for an error message. */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value.slice(0, 80));
  if (typeof value === "object") {
    const name = (value as object).constructor?.name ?? "Object";
    return `a value of type ${name}`;
  }
  return `${typeof value} ${String(value).slice(0, 80)}`;
}

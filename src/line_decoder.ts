/**
 * Framing: turns arbitrary byte chunks from a socket into request lines.
 *
 * Pure: no sockets, no timers. One decoder belongs to one connection.
 *
 * @module
 */

/** Marks a request line that was longer than the byte limit; its bytes were dropped. */
export const LINE_TOO_LONG: unique symbol = Symbol("line too long");

/** One framed request: its text, or {@linkcode LINE_TOO_LONG}. */
export type Frame = string | typeof LINE_TOO_LONG;

const LF = 0x0a;
const CR = 0x0d;

/**
 * Shared by every decoder: lines are decoded only once complete, and LF never
 * occurs inside a UTF-8 sequence, so a character split across chunks needs no
 * streaming state. ignoreBOM keeps a leading U+FEFF as text instead of eating it.
 */
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** A pending partial line keeps its buffer for reuse only up to this size. */
const RETAINED_PARTIAL_BYTES = 1024;

/**
 * The index after the last character of `text[from..end)` that is not
 * trailing whitespace: space, tab, CR, VT or FF (the framing's set). LF cannot
 * occur inside a framed line, so the 9..13 range is exactly that set.
 */
function contentEnd(text: string, from: number, end: number): number {
  while (end > from) {
    const c = text.charCodeAt(end - 1);
    if (c === 0x20 || (c >= 0x09 && c <= 0x0d)) end--;
    else break;
  }
  return end;
}

/** Removes trailing space, tab, CR, VT and FF. */
function stripTrailingWhitespace(line: string): string {
  const end = contentEnd(line, 0, line.length);
  return end === line.length ? line : line.slice(0, end);
}

/**
 * Splits a byte stream into lines ended by LF (a CR before the LF belongs to
 * the terminator), decodes them as UTF-8 with U+FFFD for invalid bytes, and
 * strips trailing whitespace.
 *
 * A line longer than `maxLineBytes` (raw bytes, terminator excluded) becomes a
 * single {@linkcode LINE_TOO_LONG} frame as soon as the limit is crossed; the
 * rest of it is dropped as it arrives, so memory stays bounded.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Frame, LINE_TOO_LONG, LineDecoder } from "./line_decoder.ts";
 * const decoder = new LineDecoder(8);
 * const frames: Frame[] = [];
 * decoder.push(new TextEncoder().encode("sum \r\n1,2"), frames);
 * decoder.push(new TextEncoder().encode(",4\n123456789\n"), frames);
 * assert.deepEqual(frames, ["sum", "1,2,4", LINE_TOO_LONG]);
 * ```
 */
export class LineDecoder {
  /** The largest accepted line, in raw bytes without the terminator. */
  readonly maxLineBytes: number;
  /** Bytes of the current unterminated line (a copy: read buffers are reused). */
  #partial: Uint8Array | null = null;
  #partialLength = 0;
  /** True while dropping the rest of a line already answered as too long. */
  #discarding = false;

  /** Throws a `RangeError` unless `maxLineBytes` is a positive integer. */
  constructor(maxLineBytes: number) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`Cannot use line limit: received ${maxLineBytes}`);
    }
    this.maxLineBytes = maxLineBytes;
  }

  /** True when some bytes of a line have arrived but not its terminator. */
  get hasPartialLine(): boolean {
    return this.#partialLength > 0;
  }

  /**
   * True from the first byte of a line to its terminator, also while the
   * rest of a line already answered as too long is being dropped.
   */
  get inLine(): boolean {
    return this.#partialLength > 0 || this.#discarding;
  }

  /** Frames every line completed by `chunk` and appends them to `out`, in order. */
  push(chunk: Uint8Array, out: Frame[]): void {
    let start = 0;
    if (this.#discarding) {
      const lf = chunk.indexOf(LF);
      if (lf < 0) return;
      this.#discarding = false;
      start = lf + 1;
    }
    if (this.#partialLength > 0) {
      const lf = chunk.indexOf(LF, start);
      if (lf < 0) {
        this.#appendPartial(chunk, start, chunk.length, out);
        return;
      }
      this.#completePartial(chunk, start, lf, out);
      start = lf + 1;
    }
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf >= start) {
      this.#frameComplete(chunk, start, lastLf, out);
      start = lastLf + 1;
    }
    if (start < chunk.length) {
      this.#appendPartial(chunk, start, chunk.length, out);
    }
  }

  /**
   * The peer half-closed: frames a final unterminated line, if any bytes of it
   * arrived (even only whitespace), and appends it to `out`.
   */
  finish(out: Frame[]): void {
    this.#discarding = false;
    if (this.#partialLength === 0) return;
    const bytes = this.#partial!.subarray(0, this.#partialLength);
    // Without a terminator a trailing CR is content, so it counts here.
    out.push(
      bytes.length > this.maxLineBytes
        ? LINE_TOO_LONG
        : stripTrailingWhitespace(utf8.decode(bytes)),
    );
    this.#resetPartial();
  }

  /** Frames the lines in `chunk[start..lastLf]`, which ends with an LF. */
  #frameComplete(
    chunk: Uint8Array,
    start: number,
    lastLf: number,
    out: Frame[],
  ) {
    // Fast path: when the whole region fits the limit no line in it can
    // exceed it, so decode it with one call and split the text.
    if (lastLf - start <= this.maxLineBytes) {
      const text = utf8.decode(chunk.subarray(start, lastLf + 1));
      let from = 0;
      let lf = text.indexOf("\n");
      while (lf >= 0) {
        // Find the end before slicing: one string per line, not two.
        out.push(text.slice(from, contentEnd(text, from, lf)));
        from = lf + 1;
        lf = text.indexOf("\n", from);
      }
      return;
    }
    let from = start;
    while (from <= lastLf) {
      const lf = chunk.indexOf(LF, from);
      const end = lf > from && chunk[lf - 1] === CR ? lf - 1 : lf;
      out.push(
        end - from > this.maxLineBytes
          ? LINE_TOO_LONG
          : stripTrailingWhitespace(
            utf8.decode(chunk.subarray(from, lf)),
          ),
      );
      from = lf + 1;
    }
  }

  /** Ends the pending partial line with `chunk[start..lf)`. */
  #completePartial(chunk: Uint8Array, start: number, lf: number, out: Frame[]) {
    const total = this.#partialLength + (lf - start);
    const lastByte = lf > start
      ? chunk[lf - 1]
      : this.#partial![this.#partialLength - 1];
    const lineBytes = lastByte === CR ? total - 1 : total;
    if (lineBytes > this.maxLineBytes) {
      out.push(LINE_TOO_LONG);
    } else {
      this.#ensureCapacity(total);
      this.#partial!.set(chunk.subarray(start, lf), this.#partialLength);
      out.push(
        stripTrailingWhitespace(
          utf8.decode(this.#partial!.subarray(0, total)),
        ),
      );
    }
    this.#resetPartial();
  }

  /** Keeps `chunk[from..to)` as the start of a line, or answers it as too long. */
  #appendPartial(chunk: Uint8Array, from: number, to: number, out: Frame[]) {
    const total = this.#partialLength + (to - from);
    // One byte over the limit may still be the CR of a CRLF terminator.
    const tooLong = total > this.maxLineBytes + 1 ||
      (total === this.maxLineBytes + 1 && chunk[to - 1] !== CR);
    if (tooLong) {
      out.push(LINE_TOO_LONG);
      this.#resetPartial();
      this.#discarding = true;
      return;
    }
    this.#ensureCapacity(total);
    this.#partial!.set(chunk.subarray(from, to), this.#partialLength);
    this.#partialLength = total;
  }

  #ensureCapacity(size: number) {
    const current = this.#partial;
    if (current !== null && current.length >= size) return;
    let capacity = current === null ? 256 : current.length * 2;
    while (capacity < size) capacity *= 2;
    capacity = Math.min(capacity, this.maxLineBytes + 1);
    const grown = new Uint8Array(Math.max(capacity, size));
    if (current !== null) grown.set(current.subarray(0, this.#partialLength));
    this.#partial = grown;
  }

  #resetPartial() {
    this.#partialLength = 0;
    if (
      this.#partial !== null && this.#partial.length > RETAINED_PARTIAL_BYTES
    ) {
      this.#partial = null;
    }
  }
}

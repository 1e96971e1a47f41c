/**
 * The reading half of framing: {@linkcode FrameDecoder}, pulled one frame at
 * a time (see framing.ts for what a frame is).
 *
 * @module
 */
import {
  checkMaxFrameBytes,
  DEFAULT_MAX_FRAME_BYTES,
  type Frame,
  type FramingOptions,
  LINE_TOO_LONG,
} from "./framing.ts";

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = new Uint8Array(0);
const utf8Encoder = new TextEncoder();
/**
 * Shared by every decoder: a frame is decoded only once it is complete, so
 * no streaming state is needed (a character split across reads is joined
 * first). ignoreBOM keeps a leading U+FEFF as text instead of eating it.
 */
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
/** A kept buffer of an unfinished frame is reused only up to this size. */
const RETAINED_BUFFER_BYTES = 1024;

/**
 * The index after the last character of `text[from..end)` that is not
 * trailing whitespace: space, tab, CR, VT or FF. LF cannot occur inside a
 * line, so the 9..13 range is exactly that set.
 */
function contentEnd(text: string, from: number, end: number): number {
  while (end > from) {
    const c = text.charCodeAt(end - 1);
    if (c === 0x20 || (c >= 0x09 && c <= 0x0d)) end--;
    else break;
  }
  return end;
}

function decodeLine(bytes: Uint8Array): string {
  const text = utf8.decode(bytes);
  const end = contentEnd(text, 0, text.length);
  return end === text.length ? text : text.slice(0, end);
}

/** The terminator as bytes, or undefined for line framing (LF, CRLF accepted). */
function terminatorBytes(
  terminator: string | Uint8Array | undefined,
): Uint8Array | undefined {
  if (terminator === undefined) return undefined;
  const bytes = typeof terminator === "string"
    ? utf8Encoder.encode(terminator)
    : terminator.slice();
  if (bytes.length === 0) {
    throw new RangeError("Cannot use an empty frame terminator");
  }
  return bytes.length === 1 && bytes[0] === LF ? undefined : bytes;
}

/**
 * Cuts a byte stream into frames, pulled one at a time.
 *
 * `push(chunk)` lends the decoder one read's bytes; `next()` returns the next
 * complete frame or `undefined` when more bytes are needed; `release()` must
 * be called before the chunk's memory is reused (a read buffer shared by
 * many connections): it copies whatever has not been framed yet. Frames
 * longer than the limit become one {@linkcode LINE_TOO_LONG} as soon as the
 * limit is crossed, and the rest of them is dropped as it arrives.
 *
 * @example Lines, pulled one by one
 * ```ts
 * import assert from "node:assert/strict";
 * import { LINE_TOO_LONG } from "./framing.ts";
 * import { FrameDecoder } from "./frame_decoder.ts";
 *
 * const decoder = new FrameDecoder({ maxFrameBytes: 8 });
 * decoder.push(new TextEncoder().encode("sum \r\n1,2,4\n123456789\nhal"));
 * assert.equal(decoder.next(), "sum");
 * assert.equal(decoder.next(), "1,2,4");
 * assert.equal(decoder.next(), LINE_TOO_LONG);
 * assert.equal(decoder.next(), undefined); // "hal" waits for its end
 * decoder.release();
 * decoder.end(); // the peer half-closed: the fragment is a frame too
 * assert.equal(decoder.next(), "hal");
 * ```
 *
 * @example A custom terminator, and a raw block between two lines
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameDecoder } from "./frame_decoder.ts";
 *
 * const decoder = new FrameDecoder({ terminator: "\r<--EOM-->\r" });
 * decoder.push(new TextEncoder().encode("set 3\r<--EOM-->\rabcnext\r<--EOM-->\r"));
 * assert.equal(decoder.next(), "set 3");
 * decoder.readBytes(3);
 * assert.deepEqual(decoder.next(), new TextEncoder().encode("abc"));
 * assert.equal(decoder.next(), "next");
 * ```
 */
export class FrameDecoder {
  /** The longest frame, in bytes, terminator excluded. */
  readonly maxFrameBytes: number;
  /** Undefined for line framing (LF, CRLF accepted, whitespace stripped). */
  readonly #terminator: Uint8Array | undefined;
  /** The lent chunk and how far it has been framed. */
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  /**
   * Complete lines of the lent chunk, decoded with one call (line framing
   * only): `#text[#textPos..]` is what has not been handed out yet, and
   * `#textEnd` the chunk position after its last LF.
   */
  #text = "";
  #textPos = 0;
  #textFrom = 0;
  #textEnd = 0;
  /** Lines handed out of `#text`, to find their bytes again on release. */
  #textLines = 0;
  /** Bytes kept across reads: an unfinished frame, or what was not pulled. */
  #own: Uint8Array | null = null;
  #ownStart = 0;
  #ownEnd = 0;
  /**
   * Custom terminator: how many kept bytes (from `#ownStart`) are known not
   * to begin a terminator, so that a search resumes there instead of going
   * over a long frame again at every read.
   */
  #searched = 0;
  /** Dropping the rest of a frame already answered as too long. */
  #discarding = false;
  /** Length of the raw frame asked for with readBytes, or -1. */
  #rawWanted = -1;
  /** The peer ended its stream: the fragment left is a frame too. */
  #ended = false;

  /** Throws a `RangeError` for a bad limit or an empty terminator. */
  constructor(options: FramingOptions = {}) {
    this.maxFrameBytes = checkMaxFrameBytes(
      options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    );
    this.#terminator = terminatorBytes(options.terminator);
  }

  /**
   * True while a frame has begun and not ended: some of its bytes arrived
   * (and were not all pulled), or the rest of an over-long frame is being
   * dropped. Meaningful after `next()` returned undefined.
   */
  get inFrame(): boolean {
    return this.#discarding || this.#ownEnd > this.#ownStart ||
      this.#pos < this.#chunk.length || this.#textPos < this.#text.length;
  }

  /** Bytes held by the decoder itself (not counting a lent chunk). */
  get bufferedBytes(): number {
    return this.#ownEnd - this.#ownStart;
  }

  /**
   * Lends the decoder `chunk` until {@linkcode release} (called first here if
   * a previous chunk is still lent).
   */
  push(chunk: Uint8Array): void {
    if (this.#chunk !== EMPTY) this.release();
    this.#chunk = chunk;
    this.#pos = 0;
  }

  /**
   * Gives the lent chunk back: the bytes not framed yet are copied into the
   * decoder's own buffer. Cheap when everything was pulled.
   */
  release(): void {
    if (this.#textPos < this.#text.length) this.#dropText();
    const chunk = this.#chunk;
    if (this.#pos < chunk.length) this.#keep(chunk, this.#pos, chunk.length);
    this.#chunk = EMPTY;
    this.#pos = 0;
  }

  /** The peer has ended its stream: an unterminated fragment left becomes the last frame. */
  end(): void {
    this.#ended = true;
  }

  /**
   * Asks for the next `length` bytes, whatever they contain, as one raw
   * frame (a `Uint8Array`); framing goes back to terminated frames after it.
   */
  readBytes(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Cannot read ${length} bytes`);
    }
    if (length > this.maxFrameBytes) {
      throw new RangeError(
        `Cannot read ${length} bytes: the frame limit is ${this.maxFrameBytes}`,
      );
    }
    if (this.#textPos < this.#text.length) this.#dropText();
    this.#rawWanted = length;
  }

  /** The next complete frame, or undefined until more bytes arrive. */
  next(): Frame | undefined {
    // The hot path: the next of several complete lines decoded together.
    if (this.#textPos < this.#text.length) return this.#nextCachedLine();
    if (this.#rawWanted >= 0) return this.#nextRaw();
    if (this.#terminator !== undefined) return this.#nextTerminated();
    return this.#nextLine();
  }

  #nextCachedLine(): string {
    const text = this.#text;
    const from = this.#textPos;
    const lf = text.indexOf("\n", from);
    this.#textPos = lf + 1;
    this.#textLines++;
    if (this.#textPos === text.length) {
      this.#pos = this.#textEnd;
      this.#text = "";
      this.#textPos = 0;
    }
    return text.slice(from, contentEnd(text, from, lf));
  }

  /**
   * Stops using the decoded lines: the chunk position moves to just after
   * the last line handed out (the n-th LF of the region, since a decoded LF
   * is always one byte LF).
   */
  #dropText() {
    let pos = this.#textFrom;
    for (let i = 0; i < this.#textLines; i++) {
      pos = this.#chunk.indexOf(LF, pos) + 1;
    }
    this.#pos = pos;
    this.#text = "";
    this.#textPos = 0;
  }

  /** Line framing: LF ends a line, CRLF too; trailing whitespace goes. */
  #nextLine(): Frame | undefined {
    while (true) {
      const chunk = this.#chunk;
      if (this.#ownEnd > this.#ownStart) {
        const own = this.#own!;
        const lfInOwn = own.subarray(this.#ownStart, this.#ownEnd).indexOf(LF);
        if (lfInOwn >= 0) {
          const lf = this.#ownStart + lfInOwn;
          const line = own.subarray(this.#ownStart, lf);
          this.#consumeOwn(lf + 1);
          if (this.#discarding) {
            this.#discarding = false;
            continue;
          }
          return this.#lineFrame(line);
        }
        const lf = chunk.indexOf(LF, this.#pos);
        if (lf < 0) {
          const tooLong = this.#keepPartialLine(chunk, this.#pos, chunk.length);
          this.#pos = chunk.length;
          if (tooLong) return LINE_TOO_LONG;
          return this.#ended ? this.#finalFragment() : undefined;
        }
        const start = this.#pos;
        this.#pos = lf + 1;
        if (this.#discarding) {
          this.#discarding = false;
          this.#clearOwn();
          continue;
        }
        // The line began in an earlier read: join the two parts.
        const ownLength = this.#ownEnd - this.#ownStart;
        const total = ownLength + (lf - start);
        const last = lf > start ? chunk[lf - 1] : own[this.#ownEnd - 1];
        if ((last === CR ? total - 1 : total) > this.maxFrameBytes) {
          this.#clearOwn();
          return LINE_TOO_LONG;
        }
        this.#append(chunk, start, lf);
        const line = decodeLine(
          this.#own!.subarray(this.#ownStart, this.#ownEnd),
        );
        this.#clearOwn();
        return line;
      }
      const pos = this.#pos;
      if (pos >= chunk.length) {
        return this.#ended ? this.#finalFragment() : undefined;
      }
      if (this.#discarding) {
        const lf = chunk.indexOf(LF, pos);
        if (lf < 0) {
          this.#pos = chunk.length;
          continue;
        }
        this.#discarding = false;
        this.#pos = lf + 1;
        continue;
      }
      const lastLf = chunk.lastIndexOf(LF);
      if (lastLf < pos) {
        const tooLong = this.#keepPartialLine(chunk, pos, chunk.length);
        this.#pos = chunk.length;
        if (tooLong) return LINE_TOO_LONG;
        return this.#ended ? this.#finalFragment() : undefined;
      }
      // When the whole region of complete lines fits the limit no line in
      // it can exceed it: decode it with one call, hand out line by line.
      if (lastLf - pos <= this.maxFrameBytes) {
        this.#text = utf8.decode(chunk.subarray(pos, lastLf + 1));
        this.#textPos = 0;
        this.#textFrom = pos;
        this.#textEnd = lastLf + 1;
        this.#textLines = 0;
        return this.#nextCachedLine();
      }
      const lf = chunk.indexOf(LF, pos);
      this.#pos = lf + 1;
      return this.#lineFrame(chunk.subarray(pos, lf));
    }
  }

  /** A complete line's bytes (LF excluded) as a frame. */
  #lineFrame(bytes: Uint8Array): Frame {
    const length = bytes.length > 0 && bytes[bytes.length - 1] === CR
      ? bytes.length - 1
      : bytes.length;
    return length > this.maxFrameBytes ? LINE_TOO_LONG : decodeLine(bytes);
  }

  /**
   * Keeps `chunk[from..to)` as the start of a line. True when that makes the
   * line too long: it is then dropped, and the rest of it as it arrives.
   */
  #keepPartialLine(chunk: Uint8Array, from: number, to: number): boolean {
    if (this.#discarding) {
      this.#clearOwn();
      return false;
    }
    const total = this.#ownEnd - this.#ownStart + (to - from);
    // One byte over the limit may still be the CR of a CRLF terminator.
    const last = to > from ? chunk[to - 1] : this.#own![this.#ownEnd - 1];
    const tooLong = total > this.maxFrameBytes + 1 ||
      (total === this.maxFrameBytes + 1 && last !== CR);
    if (tooLong) {
      this.#clearOwn();
      this.#discarding = true;
      return true;
    }
    this.#append(chunk, from, to);
    return false;
  }

  /** At the end of the stream: the unterminated fragment, if any, is the last frame. */
  #finalFragment(): Frame | undefined {
    this.#discarding = false;
    if (this.#ownEnd === this.#ownStart) return undefined;
    const bytes = this.#own!.subarray(this.#ownStart, this.#ownEnd);
    this.#clearOwn();
    if (this.#terminator !== undefined) {
      return bytes.length > this.maxFrameBytes
        ? LINE_TOO_LONG
        : utf8.decode(bytes);
    }
    // Without a terminator a trailing CR is content, so it counts here.
    return bytes.length > this.maxFrameBytes
      ? LINE_TOO_LONG
      : decodeLine(bytes);
  }

  /** Counted mode: the next `#rawWanted` bytes, whatever they are. */
  #nextRaw(): Uint8Array | undefined {
    const wanted = this.#rawWanted;
    const ownLength = this.#ownEnd - this.#ownStart;
    const chunk = this.#chunk;
    if (ownLength === 0 && chunk.length - this.#pos >= wanted) {
      const frame = chunk.slice(this.#pos, this.#pos + wanted);
      this.#pos += wanted;
      this.#rawWanted = -1;
      return frame;
    }
    if (ownLength < wanted) {
      const take = Math.min(wanted - ownLength, chunk.length - this.#pos);
      this.#append(chunk, this.#pos, this.#pos + take);
      this.#pos += take;
      if (this.#ownEnd - this.#ownStart < wanted) return undefined;
    }
    const frame = this.#own!.slice(this.#ownStart, this.#ownStart + wanted);
    this.#consumeOwn(this.#ownStart + wanted);
    this.#rawWanted = -1;
    return frame;
  }

  /**
   * Any other terminator: the chunk is copied into the decoder's buffer and
   * searched there (a terminator may straddle two reads).
   */
  #nextTerminated(): Frame | undefined {
    const terminator = this.#terminator!;
    if (this.#pos < this.#chunk.length) {
      this.#append(this.#chunk, this.#pos, this.#chunk.length);
      this.#pos = this.#chunk.length;
    }
    while (this.#ownEnd > this.#ownStart) {
      const own = this.#own!;
      const at = indexOfBytes(
        own,
        terminator,
        this.#ownStart + this.#searched,
        this.#ownEnd,
      );
      if (at >= 0) {
        const frame = own.subarray(this.#ownStart, at);
        this.#consumeOwn(at + terminator.length);
        if (this.#discarding) {
          this.#discarding = false;
          continue;
        }
        return frame.length > this.maxFrameBytes
          ? LINE_TOO_LONG
          : utf8.decode(frame);
      }
      // No terminator yet: keep only what may still begin one.
      const held = this.#ownEnd - this.#ownStart;
      if (this.#discarding || held >= this.maxFrameBytes + terminator.length) {
        const keep = Math.min(held, terminator.length - 1);
        this.#consumeOwn(this.#ownEnd - keep);
        if (!this.#discarding) {
          this.#discarding = true;
          return LINE_TOO_LONG;
        }
      }
      this.#searched = Math.max(
        0,
        this.#ownEnd - this.#ownStart - (terminator.length - 1),
      );
      break;
    }
    return this.#ended && !this.#discarding ? this.#finalFragment() : undefined;
  }

  /** Copies `source[from..to)` after the bytes kept so far. */
  #append(source: Uint8Array, from: number, to: number) {
    const length = to - from;
    if (length === 0) return;
    let own = this.#own;
    const held = this.#ownEnd - this.#ownStart;
    if (own === null || this.#ownEnd + length > own.length) {
      if (own !== null && held + length <= own.length) {
        own.copyWithin(0, this.#ownStart, this.#ownEnd);
      } else {
        let capacity = own === null ? 256 : own.length * 2;
        while (capacity < held + length) capacity *= 2;
        const grown = new Uint8Array(capacity);
        if (own !== null) {
          grown.set(own.subarray(this.#ownStart, this.#ownEnd));
        }
        this.#own = own = grown;
      }
      this.#ownStart = 0;
      this.#ownEnd = held;
    }
    own.set(source.subarray(from, to), this.#ownEnd);
    this.#ownEnd += length;
  }

  /** Copies the unframed rest of a lent chunk (see {@linkcode release}). */
  #keep(chunk: Uint8Array, from: number, to: number) {
    this.#append(chunk, from, to);
  }

  #consumeOwn(to: number) {
    this.#ownStart = to;
    this.#searched = 0;
    if (this.#ownStart === this.#ownEnd) this.#clearOwn();
  }

  #clearOwn() {
    this.#searched = 0;
    this.#ownStart = 0;
    this.#ownEnd = 0;
    if (this.#own !== null && this.#own.length > RETAINED_BUFFER_BYTES) {
      this.#own = null;
    }
  }
}

/** The first index of `needle` in `haystack[from..to)`, or -1. */
function indexOfBytes(
  haystack: Uint8Array,
  needle: Uint8Array,
  from: number,
  to: number,
): number {
  const first = needle[0];
  const last = to - needle.length;
  // Only up to `to`: past it lies the unused rest of a grown buffer, which
  // indexOf would otherwise search through at every read.
  const region = haystack.subarray(0, to);
  for (let i = region.indexOf(first, from); i >= 0 && i <= last;) {
    let j = 1;
    while (j < needle.length && region[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
    i = region.indexOf(first, i + 1);
  }
  return -1;
}

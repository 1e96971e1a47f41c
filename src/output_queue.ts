/**
 * The output side of one connection: one queue, in order, for everything
 * waiting to be written to the client (replies, pushed lines, lines
 * broadcast to a group), with one byte count that the connection's bounds
 * are checked against.
 *
 * A broadcast line is encoded once, into a {@linkcode BroadcastLog} shared by
 * every member, and each member's queue holds only a span of that log: a
 * room of a thousand members that do not read holds each message once, not
 * a thousand times, and consecutive broadcasts extend one span instead of
 * adding an entry each. Spans are handed to the socket only as fast as it
 * takes them, as views of the shared bytes (the runtime writes a view
 * without copying it).
 *
 * @module
 */
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import type { ServerMetrics } from "./metrics.ts";

const encoder = new TextEncoder();
/** Each log chunk's size; a longer line gets a chunk of its own size. */
const LOG_CHUNK_BYTES = 64 * 1024;

/** One block of a broadcast log, linked to the next. */
class LogChunk {
  readonly bytes: Uint8Array;
  /** Log offset of `bytes[0]`. */
  readonly start: number;
  used = 0;
  next: LogChunk | null = null;

  constructor(size: number, start: number) {
    this.bytes = new Uint8Array(size);
    this.start = start;
  }
}

/** Where an appended text begins in a log. */
export interface LogPosition {
  readonly chunk: LogChunk;
  readonly offset: number;
}

/**
 * Append-only encoded text shared by the queues of a group's members. The
 * log holds only its last chunk; earlier chunks live as long as some span
 * still points into them, and the collector frees them after.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BroadcastLog } from "./output_queue.ts";
 * const log = new BroadcastLog();
 * log.append("a: hi\r\n");
 * assert.equal(log.end, 7);
 * ```
 */
export class BroadcastLog {
  #tail = new LogChunk(LOG_CHUNK_BYTES, 0);
  #end = 0;

  /** Bytes appended so far: the log offset after the last byte. */
  get end(): number {
    return this.#end;
  }

  /** Encodes `text` at the end; returns where it begins. */
  append(text: string): LogPosition {
    let chunk = this.#tail;
    let written = -1;
    if (text.length <= chunk.bytes.length - chunk.used) {
      const result = encoder.encodeInto(text, chunk.bytes.subarray(chunk.used));
      if (result.read === text.length) written = result.written;
    }
    if (written < 0) {
      chunk = new LogChunk(
        Math.max(LOG_CHUNK_BYTES, text.length * 3),
        this.#end,
      );
      this.#tail.next = chunk;
      this.#tail = chunk;
      written = encoder.encodeInto(text, chunk.bytes).written;
    }
    const position = { chunk, offset: chunk.used };
    chunk.used += written;
    this.#end += written;
    return position;
  }
}

/** Part of a log waiting for one member: from `chunk`/`offset` to log offset `end`. */
interface Span {
  readonly log: BroadcastLog;
  chunk: LogChunk;
  offset: number;
  end: number;
}

type Item = string | Span;

/** What the queue tells its connection. */
export interface OutputOwner {
  /** A write completed and the queue wrote what it could behind it. */
  outputWritten(): void;
}

/** Someone waiting for the queue to fall to `bytes` (0: empty and all written out). */
interface Waiter {
  bytes: number;
  resolve: () => void;
}

/**
 * One connection's output, in order, and its writing to the stream. Text is
 * kept as strings until it is written (one encoding per batch); spans stay
 * in the shared log until the stream can take them.
 *
 * One write at a time: while a write is still in flight, everything else
 * stays here (text keeps growing, spans keep extending) and goes out as one
 * larger write once it completes. So the stream never buffers more than one
 * chunk, and a client that reads slowly costs one span or one string, not an
 * entry per line.
 */
export class OutputQueue {
  readonly #stream: Duplex;
  readonly #owner: OutputOwner;
  readonly #metrics: Pick<ServerMetrics, "sent">;
  /** Waiting output before `#text`, oldest first; made when first needed. */
  #items: Item[] | null = null;
  #head = 0;
  /** Text after the items, not yet written: appended to, written at a flush. */
  #text = "";
  /** UTF-16 units of the string items (each is 1 to 3 bytes). */
  #itemUnits = 0;
  /** Bytes of the spans not yet written. */
  #spanBytes = 0;
  /** The callback of every write (made at the first write). */
  #onWritten: ((error?: Error | null) => void) | undefined;
  #waiters: Waiter[] | undefined;

  constructor(
    stream: Duplex,
    owner: OutputOwner,
    metrics: Pick<ServerMetrics, "sent">,
  ) {
    this.#stream = stream;
    this.#owner = owner;
    this.#metrics = metrics;
  }

  /** Nothing waits here (the stream may still hold unwritten bytes). */
  get isEmpty(): boolean {
    return this.#text === "" && this.#items === null;
  }

  /** UTF-16 units of text waiting to be encoded (a lower bound of its bytes). */
  get textUnits(): number {
    return this.#text.length + this.#itemUnits;
  }

  /** Appends text (already ended with the line terminator). */
  appendText(text: string): void {
    this.#text += text;
  }

  /** Appends the log's bytes `[position, end)`, extending the last span when they follow on. */
  appendSpan(log: BroadcastLog, position: LogPosition, end: number): void {
    const items = this.#itemsForAppend();
    const last = items[items.length - 1];
    const start = position.chunk.start + position.offset;
    if (typeof last === "object" && last.log === log && last.end === start) {
      last.end = end;
    } else {
      items.push({
        log,
        chunk: position.chunk,
        offset: position.offset,
        end,
      });
    }
    this.#spanBytes += end - start;
  }

  /**
   * Bytes waiting for the client: here and in the stream. Exact for spans
   * and the stream; text counts its UTF-8 length only when `exact` (a cheap
   * lower bound otherwise).
   */
  waitingBytes(exact = false): number {
    let text = this.textUnits;
    if (exact && text > 0) {
      text = Buffer.byteLength(this.#text, "utf8");
      const items = this.#items;
      if (items !== null) {
        for (let i = this.#head; i < items.length; i++) {
          const item = items[i];
          if (typeof item === "string") text += Buffer.byteLength(item, "utf8");
        }
      }
    }
    return this.#stream.writableLength + this.#spanBytes + text;
  }

  /** An upper bound of {@linkcode waitingBytes}, cheap. */
  waitingBytesAtMost(): number {
    return this.#stream.writableLength + this.#spanBytes + 3 * this.textUnits;
  }

  /** Writes what waits, one write at a time (see the class documentation). */
  flush(): void {
    const stream = this.#stream;
    let sent = 0;
    while (stream.writableLength === 0 && !this.isEmpty) {
      sent += this.#writeNext(
        stream,
        this.#onWritten ??= (error) => {
          // A failed write (the client reset the connection) is not progress:
          // the stream's error event ends the connection. Answering more of
          // its input here, once per failed write, took 50 flooding clients
          // that disconnected together 0.4 s of the event loop.
          if (!error) this.#written();
        },
      );
    }
    if (sent > 0) this.#metrics.sent(sent);
  }

  /**
   * Resolves once at most `bytes` wait for the client (0: everything was
   * handed to the system), or {@linkcode release} is called.
   */
  whenWaitingAtMost(bytes: number): Promise<void> {
    if (this.#waitingAtMost(bytes)) return Promise.resolve();
    const waiting = new Promise<void>((resolve) => {
      (this.#waiters ??= []).push({ bytes, resolve });
    });
    this.flush();
    this.#wakeWaiters();
    return waiting;
  }

  /** Forgets everything waiting (the connection is going away) and wakes every waiter. */
  release(): void {
    this.#items = null;
    this.#head = 0;
    this.#text = "";
    this.#itemUnits = 0;
    this.#spanBytes = 0;
    const waiters = this.#waiters;
    this.#waiters = undefined;
    for (const waiter of waiters ?? []) waiter.resolve();
  }

  /** A write completed: write what waits behind it, wake who waits for that. */
  #written() {
    this.flush();
    this.#wakeWaiters();
    this.#owner.outputWritten();
  }

  #waitingAtMost(bytes: number): boolean {
    if (bytes === 0) return this.isEmpty && this.#stream.writableLength === 0;
    return this.waitingBytes() <= bytes;
  }

  #wakeWaiters() {
    const waiters = this.#waiters;
    if (waiters === undefined) return;
    const still = waiters.filter((waiter) => {
      if (!this.#waitingAtMost(waiter.bytes)) return true;
      waiter.resolve();
      return false;
    });
    this.#waiters = still.length > 0 ? still : undefined;
  }

  /** Writes the oldest piece waiting: a string, part of a span, or the text. */
  #writeNext(
    stream: Duplex,
    onWritten: (error?: Error | null) => void,
  ): number {
    const items = this.#items;
    if (items === null) {
      const text = this.#text;
      this.#text = "";
      return write(stream, text, onWritten);
    }
    const item = items[this.#head];
    if (typeof item === "string") {
      this.#itemUnits -= item.length;
      this.#advance(items);
      return write(stream, item, onWritten);
    }
    const sent = this.#writeSpan(stream, item, onWritten);
    if (item.chunk.start + item.offset >= item.end) this.#advance(items);
    return sent;
  }

  #advance(items: Item[]) {
    items[this.#head++] = "";
    if (this.#head === items.length) {
      this.#items = null;
      this.#head = 0;
    }
  }

  #itemsForAppend(): Item[] {
    const items = this.#items ??= [];
    if (this.#text !== "") {
      items.push(this.#text);
      this.#itemUnits += this.#text.length;
      this.#text = "";
    }
    return items;
  }

  /** Writes the span's bytes up to the end of the chunk they are in (a view, not a copy). */
  #writeSpan(
    stream: Duplex,
    span: Span,
    onWritten: (error?: Error | null) => void,
  ): number {
    let chunk = span.chunk;
    if (span.offset >= chunk.used && chunk.next !== null) {
      span.chunk = chunk = chunk.next;
      span.offset = 0;
    }
    const until = Math.min(chunk.used, span.end - chunk.start);
    const length = until - span.offset;
    stream.write(chunk.bytes.subarray(span.offset, until), onWritten);
    this.#spanBytes -= length;
    span.offset = until;
    return length;
  }
}

/** Encodes `text` and writes it; returns the bytes written. */
function write(
  stream: Duplex,
  text: string,
  onWritten: (error?: Error | null) => void,
): number {
  const bytes = encoder.encode(text);
  stream.write(bytes, onWritten);
  return bytes.length;
}

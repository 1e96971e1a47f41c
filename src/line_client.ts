/**
 * The line client: one connection to a line server, read through the same
 * framer as the server's ({@linkcode FrameDecoder}), pulled.
 *
 * One mechanism carries every read: a queue of waiting readers
 * (`readLine`, `readBytes`, `request`, the async iterator) served in order
 * from the decoder. The socket is read only while a reader waits and the
 * decoder has no frame for it; otherwise it is paused, so a server that
 * floods a client that reads slowly fills the kernel's buffers and then
 * waits, and the client holds at most one frame, one read and the socket's
 * own small buffer.
 *
 * @module
 */
import type net from "node:net";
import { setImmediate } from "node:timers";
import {
  type Frame,
  FrameDecoder,
  FrameEncoder,
  type FramingOptions,
  LINE_TOO_LONG,
} from "./framing.ts";
import { formatAddr } from "./transport.ts";
import { connectionError, LineClientError } from "./client_error.ts";
import {
  type ClientTlsOptions,
  connectSocket,
  type RetryOptions,
} from "./client_connect.ts";

/** Options of {@linkcode LineClient.connect}. */
export interface LineClientOptions extends FramingOptions {
  /** The server's host name or address. Default `127.0.0.1`. */
  readonly hostname?: string;
  /** The server's port. */
  readonly port: number;
  /** Speak TLS, with these settings (`{}`: trust the system's authorities). */
  readonly tls?: ClientTlsOptions;
  /** Connecting (TCP and the TLS handshake) fails after this long. Default 10000. */
  readonly connectTimeoutMs?: number;
  /**
   * The read deadline: while a read waits, the server may stay silent this
   * long at most (counted from the latest of the last bytes received, the
   * last bytes sent and the start of the wait). Past it every waiting read
   * fails with code `timeout` and the connection is closed: a server that
   * stopped without closing is noticed. 0 (the default) waits forever.
   */
  readonly readTimeoutMs?: number;
  /** TCP keep-alive: probe a connection idle this long; 0 turns it off. Default 30000. */
  readonly keepAliveMs?: number;
  /**
   * Read one line as soon as the connection is open (a server that speaks
   * first, like the calculator) and keep it as {@linkcode LineClient.greeting}.
   */
  readonly greeting?: boolean;
  /** Retry a failed connect with backoff and jitter. Default: one attempt. */
  readonly retry?: RetryOptions;
}

/** Options of one read. */
export interface ReadOptions {
  /**
   * Give up after this long, with code `timeout`; the connection stays
   * usable. A timed-out `readLine` gives up its place (the next line goes
   * to the next reader); a timed-out `request` or `readBytes` keeps its
   * place and its frame is dropped when it arrives, so later replies still
   * reach the requests they answer.
   */
  readonly timeoutMs?: number;
}

/** A read waiting in the queue. */
interface Reader {
  resolve(frame: string | Uint8Array): void;
  reject(error: LineClientError): void;
  /** The length of the raw frame asked for, or -1 for a line. */
  readonly bytes: number;
  /** The decoder was told to read `bytes` raw for this reader. */
  armed: boolean;
  /** Keeps its place after giving up (its frame is someone's reply). */
  readonly keepsPlace: boolean;
  gaveUp: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const utf8 = new TextEncoder();
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkDuration(name: string, value: number): number {
  if (!(value >= 0 && value <= MAX_TIMER_MS)) {
    throw new RangeError(
      `Cannot use ${name}: expected milliseconds from 0 to ${MAX_TIMER_MS}, received ${value}`,
    );
  }
  return value;
}

/**
 * A connection to a line server: send lines, read lines (one at a time or
 * as an async iterable), or `request` a reply per line, pipelined.
 *
 * Errors are {@linkcode LineClientError}s whose `code` says what happened.
 * The end of the server's stream ends an iteration; a read still waiting
 * then fails with `closed` (when the stream ended in the middle of a line,
 * the error's `partial` holds what arrived of it: a line is only delivered
 * whole). A frame longer than `maxFrameBytes` fails its
 * read with `frame-too-long` (the frame is dropped as it arrives, never
 * collected) and the connection stays usable. Invalid UTF-8 becomes U+FFFD.
 *
 * @example Requests, pipelined, against the calculator
 * ```ts
 * import assert from "node:assert/strict";
 * import { LineClient, startServer } from "../mod.ts";
 *
 * await using server = await startServer({ port: 0 });
 * await using client = await LineClient.connect({
 *   port: server.addr.port,
 *   greeting: true,
 * });
 * assert.equal(client.greeting, "<welcome: starting in sum mode>");
 * assert.equal(await client.request("1,2,4"), "Sum of input integers: '7'");
 * const replies = await Promise.all(["product", "2,3"].map((line) => client.request(line)));
 * assert.deepEqual(replies, ["<switching to product mode>", "Product of input integers: '6'"]);
 * ```
 *
 * @example Reading until the server closes
 * ```ts
 * import assert from "node:assert/strict";
 * import { echoProtocol, LineClient, startServer } from "../mod.ts";
 *
 * await using server = await startServer({ port: 0, protocol: echoProtocol });
 * await using client = await LineClient.connect({ port: server.addr.port });
 * await client.send("one", "two");
 * await client.closeWrite(); // the server answers, then closes
 * const lines: string[] = [];
 * for await (const line of client) lines.push(line);
 * assert.deepEqual(lines, ["one", "two"]);
 * ```
 */
export class LineClient implements AsyncIterable<string>, AsyncDisposable {
  /** The server, as `HOST:PORT`. */
  readonly address: string;
  /** The longest frame this client accepts, in bytes. */
  readonly maxFrameBytes: number;
  /** The first line, when connected with `greeting: true`. */
  greeting: string | undefined;
  /** Bytes received so far. */
  bytesReceived = 0;
  readonly #socket: net.Socket;
  readonly #options: LineClientOptions;
  readonly #decoder: FrameDecoder;
  readonly #encoder: FrameEncoder | Error;
  /** Waiting reads, from `#head` on. */
  #readers: Reader[] = [];
  #head = 0;
  /** Why reading can go no further (once the frames already decoded are read). */
  #ending: LineClientError | undefined;
  /** The server ended its stream (seen once every byte before it was read). */
  #eof = false;
  /** It ended in the middle of a frame: an iteration fails instead of ending. */
  #endedMidFrame = false;
  /** Set when even decoded frames are no longer handed out (closed here, timed out). */
  #dropInput = false;
  #flowing = false;
  #readTimeoutMs: number;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  /** The latest of the last bytes received, sent, and the start of the current wait. */
  #quietSince = Date.now();
  /** Output of this turn, written together at its end. */
  #outParts: (string | Uint8Array)[] = [];
  #batch: PromiseWithResolvers<void> | undefined;
  #drainWaiters: PromiseWithResolvers<void>[] = [];
  /** Why sending is no longer possible. */
  #sendError: LineClientError | undefined;
  readonly #closed = Promise.withResolvers<void>();

  private constructor(socket: net.Socket, options: LineClientOptions) {
    this.#socket = socket;
    this.#options = options;
    this.address = formatAddr({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port,
    });
    this.#decoder = new FrameDecoder(options);
    this.maxFrameBytes = this.#decoder.maxFrameBytes;
    this.#encoder = makeEncoder(options);
    this.#readTimeoutMs = options.readTimeoutMs ?? 0;
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (error: Error) => this.#onError(error));
    socket.on("close", () => this.#onClose());
    socket.on("drain", () => this.#onDrain());
    socket.pause();
  }

  /**
   * Connects (retrying if `options.retry` says so) and, with
   * `greeting: true`, reads the first line. Rejects with a
   * {@linkcode LineClientError} naming the address and the reason; throws a
   * `RangeError` for a bad option.
   */
  static async connect(options: LineClientOptions): Promise<LineClient> {
    const port = options.port;
    if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(
        `Cannot connect to port ${port}: expected 1 to 65535`,
      );
    }
    const connectTimeoutMs = checkDuration(
      "connectTimeoutMs",
      options.connectTimeoutMs ?? 10_000,
    );
    checkDuration("readTimeoutMs", options.readTimeoutMs ?? 0);
    new FrameDecoder(options); // checks the framing before connecting
    const socket = await connectSocket({
      hostname: options.hostname ?? "127.0.0.1",
      port,
      tls: options.tls,
      connectTimeoutMs,
      keepAliveMs: checkDuration("keepAliveMs", options.keepAliveMs ?? 30_000),
    }, options.retry);
    const client = new LineClient(socket, options);
    if (options.greeting) {
      try {
        client.greeting = await client.readLine({
          timeoutMs: connectTimeoutMs,
        });
      } catch (error) {
        await client.close();
        throw error;
      }
    }
    return client;
  }

  /** Closes this connection and opens a new one with the same options. */
  async reconnect(): Promise<LineClient> {
    await this.close();
    return await LineClient.connect(this.#options);
  }

  /** The read deadline (see {@linkcode LineClientOptions.readTimeoutMs}); may be changed at any time. */
  get readTimeoutMs(): number {
    return this.#readTimeoutMs;
  }

  set readTimeoutMs(ms: number) {
    this.#readTimeoutMs = checkDuration("readTimeoutMs", ms);
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    this.#armDeadline();
  }

  /**
   * Bytes received and not yet read, held by this client: the framer's
   * unfinished frame and the socket's buffer (not counting the one read
   * being framed). Bounded by the frame limit plus a few reads, however
   * fast the server sends.
   */
  get bufferedBytes(): number {
    return this.#decoder.bufferedBytes + this.#socket.readableLength;
  }

  /** The local port of this connection (what a server or a proxy sees as the client's port). */
  get localPort(): number {
    return this.#socket.localPort ?? 0;
  }

  /** Resolves once the connection is closed, whoever closed it. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Sends lines, each ended by LF (or the framing's terminator); lines sent
   * in one turn go out in one write. Resolves once the socket took them, at
   * once unless its buffer is full: then when the server has read enough
   * (backpressure). Rejects with a `TypeError` for a line containing the
   * terminator.
   */
  send(...lines: string[]): Promise<void> {
    let text = "";
    try {
      const encoder = this.#lineEncoder();
      for (const line of lines) text += encoder.line(line);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#write(text);
  }

  /** Sends raw bytes (a counted block), after the lines sent before them. */
  sendBytes(bytes: Uint8Array): Promise<void> {
    return this.#write(bytes.slice());
  }

  /**
   * Sends `line` and resolves with the line that answers it. Many requests
   * may be in flight; replies are matched to requests in order. Use it only
   * with a protocol that answers every line with one line, and not beside
   * another reader of this client (say, an iteration).
   */
  async request(line: string, options: ReadOptions = {}): Promise<string> {
    const text = this.#lineEncoder().line(line);
    if (this.#sendError !== undefined) throw this.#sendError;
    const reply = this.#read(-1, true, options.timeoutMs);
    // A write that fails breaks the connection, which fails the reply too.
    this.#write(text).catch(() => {});
    return await reply as string;
  }

  /** The next line; fails with `closed` if the server ends its stream first. */
  async readLine(options: ReadOptions = {}): Promise<string> {
    return await this.#read(-1, false, options.timeoutMs) as string;
  }

  /**
   * The next `length` bytes as one raw frame, whatever they contain (a
   * counted block); lines are framed again after it. At most
   * `maxFrameBytes`.
   */
  async readBytes(
    length: number,
    options: ReadOptions = {},
  ): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(length) || length < 0 || length > this.maxFrameBytes
    ) {
      throw new RangeError(
        `Cannot read ${length} bytes: expected 0 to ${this.maxFrameBytes}`,
      );
    }
    return await this.#read(length, true, options.timeoutMs) as Uint8Array;
  }

  /**
   * Every line until the server ends its stream. Anything else, an end in
   * the middle of a line included, is thrown.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<string> {
    while (true) {
      let line: string;
      try {
        line = await this.readLine();
      } catch (error) {
        const cleanEnd = error instanceof LineClientError &&
          error.code === "closed" && !this.#endedMidFrame;
        if (cleanEnd) return;
        throw error;
      }
      yield line;
    }
  }

  /**
   * Half-closes: the server sees the end of the stream after every line
   * sent so far, and may go on answering. Sending is no longer possible.
   */
  closeWrite(): Promise<void> {
    if (this.#sendError !== undefined) return Promise.resolve();
    this.#flush();
    this.#sendError = new LineClientError(
      "aborted",
      `Cannot send to ${this.address}: this side has ended its stream`,
    );
    return new Promise((resolve) => {
      this.#socket.once("finish", resolve);
      this.#socket.once("close", resolve);
      this.#socket.end();
    });
  }

  /** Closes at once; waiting reads fail with `aborted`. Resolves when closed. */
  close(): Promise<void> {
    this.#stop(
      new LineClientError(
        "aborted",
        `Connection to ${this.address} closed by this side`,
      ),
    );
    return this.closed;
  }

  /** Closes the connection (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #lineEncoder(): FrameEncoder {
    if (this.#encoder instanceof Error) throw this.#encoder;
    return this.#encoder;
  }

  // ---- reading ----

  #read(bytes: number, keepsPlace: boolean, timeoutMs = 0): Promise<Frame> {
    if (this.#dropInput) return Promise.reject(this.#ending);
    checkDuration("timeoutMs", timeoutMs);
    const { promise, resolve, reject } = Promise.withResolvers<Frame>();
    const reader: Reader = {
      resolve,
      reject,
      bytes,
      armed: false,
      keepsPlace,
      gaveUp: false,
      timer: undefined,
    };
    if (this.#head === this.#readers.length) this.#quietSince = Date.now();
    this.#readers.push(reader);
    if (timeoutMs > 0) {
      reader.timer = setTimeout(
        () => this.#giveUp(reader, timeoutMs),
        timeoutMs,
      );
    }
    this.#deliver();
    return promise;
  }

  /**
   * Hands decoded frames to the waiting readers in order. Reads from the
   * socket only while a reader waits and the decoder has nothing for it.
   */
  #deliver(): void {
    const decoder = this.#decoder;
    while (this.#head < this.#readers.length) {
      const reader = this.#readers[this.#head];
      if (reader.gaveUp && !reader.keepsPlace) {
        this.#shift();
        continue;
      }
      if (reader.bytes >= 0 && !reader.armed) {
        decoder.readBytes(reader.bytes);
        reader.armed = true;
      }
      const frame = decoder.next();
      if (frame === undefined) break;
      this.#shift();
      this.#settle(reader, frame);
    }
    if (this.#head === this.#readers.length) return this.#setFlowing(false);
    if (this.#eof) this.#ending ??= this.#endOfStream();
    if (this.#ending !== undefined) return this.#rejectWaiting(this.#ending);
    decoder.release();
    this.#setFlowing(true);
    this.#armDeadline();
  }

  #shift() {
    this.#head++;
    if (this.#head === this.#readers.length) {
      this.#readers = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#readers.length) {
      this.#readers = this.#readers.slice(this.#head);
      this.#head = 0;
    }
  }

  #settle(reader: Reader, frame: Frame) {
    clearTimeout(reader.timer);
    if (reader.gaveUp) return;
    if (frame === LINE_TOO_LONG) {
      reader.reject(
        new LineClientError(
          "frame-too-long",
          `A frame from ${this.address} was longer than ${this.maxFrameBytes} bytes: dropped`,
        ),
      );
    } else {
      reader.resolve(frame);
    }
  }

  #giveUp(reader: Reader, timeoutMs: number) {
    reader.timer = undefined;
    reader.gaveUp = true;
    reader.reject(
      new LineClientError(
        "timeout",
        `No ${reader.bytes >= 0 ? "block" : "line"} from ${this.address} in ${
          timeoutMs / 1000
        } s`,
      ),
    );
    if (this.#ending === undefined) this.#deliver();
  }

  #rejectWaiting(error: LineClientError) {
    const waiting = this.#readers.slice(this.#head);
    this.#readers = [];
    this.#head = 0;
    for (const reader of waiting) {
      clearTimeout(reader.timer);
      if (!reader.gaveUp) reader.reject(error);
    }
    this.#setFlowing(false);
  }

  #setFlowing(flowing: boolean) {
    if (flowing === this.#flowing) return;
    this.#flowing = flowing;
    if (flowing) this.#socket.resume();
    else this.#socket.pause();
  }

  /** One timer for the read deadline, moved on lazily (not at every read). */
  #armDeadline() {
    if (this.#readTimeoutMs === 0 || this.#deadline !== undefined) return;
    if (this.#head === this.#readers.length || this.#ending !== undefined) {
      return;
    }
    const left = this.#quietSince + this.#readTimeoutMs - Date.now();
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined;
      if (this.#head === this.#readers.length || this.#readTimeoutMs === 0) {
        return;
      }
      if (Date.now() - this.#quietSince >= this.#readTimeoutMs) {
        this.#stop(
          new LineClientError(
            "timeout",
            `No reply from ${this.address} in ${this.#readTimeoutMs / 1000} s`,
          ),
        );
      } else {
        this.#armDeadline();
      }
    }, Math.max(0, left));
  }

  #onData(chunk: Uint8Array) {
    if (this.#dropInput) return;
    this.bytesReceived += chunk.length;
    this.#quietSince = Date.now();
    this.#decoder.push(chunk);
    this.#deliver();
  }

  #onEnd() {
    this.#eof = true;
    this.#sendError ??= new LineClientError(
      "closed",
      `Connection closed by ${this.address}`,
    );
    this.#deliver();
  }

  /**
   * The server's stream ended and every complete frame has been read. A
   * frame it left unfinished is no line: it goes with the error, as
   * `partial` when it is text.
   */
  #endOfStream(): LineClientError {
    if (!this.#decoder.inFrame) {
      return new LineClientError(
        "closed",
        `Connection closed by ${this.address}`,
      );
    }
    this.#endedMidFrame = true;
    this.#decoder.end();
    const rest = this.#decoder.next();
    const error = new LineClientError(
      "closed",
      `Connection closed by ${this.address} in the middle of a line`,
    );
    if (typeof rest === "string") error.partial = rest;
    return error;
  }

  #onError(error: Error) {
    this.#ending ??= connectionError(error, this.address);
    this.#sendError ??= this.#ending;
    this.#deliver();
  }

  #onClose() {
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    if (!this.#eof) {
      this.#ending ??= new LineClientError(
        "closed",
        `Connection closed by ${this.address}`,
      );
    }
    this.#sendError ??= this.#ending ??
      new LineClientError("closed", `Connection closed by ${this.address}`);
    this.#failSenders(this.#sendError);
    this.#deliver();
    this.#closed.resolve();
  }

  /** Ends the connection here: nothing more is read, even frames already decoded. */
  #stop(error: LineClientError) {
    if (this.#dropInput) return;
    this.#dropInput = true;
    this.#ending = error;
    this.#sendError ??= error;
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    this.#rejectWaiting(error);
    this.#failSenders(error);
    this.#socket.destroy();
  }

  // ---- writing ----

  #write(data: string | Uint8Array): Promise<void> {
    if (this.#sendError !== undefined) return Promise.reject(this.#sendError);
    this.#outParts.push(data);
    if (this.#batch === undefined) {
      this.#batch = Promise.withResolvers<void>();
      // Alone, a request leaves at the end of this task. With others in
      // flight, their replies are arriving and each one's caller may send
      // the next request: waiting for the end of the event-loop turn lets
      // all of those go out in one write (one system call, not one each).
      if (this.#readers.length - this.#head > 1) {
        setImmediate(this.#flushLater);
      } else {
        queueMicrotask(this.#flushLater);
      }
    }
    return this.#batch.promise;
  }

  readonly #flushLater = () => this.#flush();

  #flush() {
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#batch = undefined;
    const parts = this.#outParts;
    this.#outParts = [];
    if (this.#sendError !== undefined) return batch.reject(this.#sendError);
    this.#quietSince = Date.now();
    if (this.#socket.write(joinParts(parts))) batch.resolve();
    else this.#drainWaiters.push(batch);
  }

  #onDrain() {
    for (const waiter of this.#drainWaiters.splice(0)) waiter.resolve();
  }

  #failSenders(error: LineClientError) {
    const waiting = this.#drainWaiters.splice(0);
    if (this.#batch !== undefined) waiting.push(this.#batch);
    this.#batch = undefined;
    this.#outParts = [];
    for (const waiter of waiting) waiter.reject(error);
  }
}

function makeEncoder(options: FramingOptions): FrameEncoder | Error {
  try {
    return new FrameEncoder({
      terminator: options.terminator,
      lineEnding: "\n",
    });
  } catch (error) {
    return error as Error;
  }
}

/** One write's bytes: one encoding call when the turn sent only lines. */
function joinParts(parts: (string | Uint8Array)[]): Uint8Array {
  if (parts.every((part) => typeof part === "string")) {
    return utf8.encode(parts.join(""));
  }
  const chunks = parts.map((part) =>
    typeof part === "string" ? utf8.encode(part) : part
  );
  const joined = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

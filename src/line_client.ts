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
import {
  type Frame,
  FrameEncoder,
  type FramingOptions,
  LINE_TOO_LONG,
} from "./framing.ts";
import type { FrameDecoder } from "./frame_decoder.ts";
import { formatAddr } from "./transport.ts";
import { connectionError, LineClientError } from "./client_error.ts";
import { connectSocket } from "./client_connect.ts";
import { ClientOutput } from "./client_output.ts";
import { ReadDeadline } from "./read_deadline.ts";
import { type Reader, ReadQueue } from "./read_queue.ts";
import {
  type ClientSettings,
  type LineClientOptions,
  type ReadOptions,
  settleClientOptions,
} from "./client_options.ts";
import { checkDuration } from "./deadline.ts";

export type { LineClientOptions, ReadOptions };

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
  /** The one queue of waiting reads, served in order from the decoder. */
  readonly #readers = new ReadQueue();
  /** Why reading can go no further (once the frames already decoded are read). */
  #ending: LineClientError | undefined;
  /** The server ended its stream (seen once every byte before it was read). */
  #eof = false;
  /** It ended in the middle of a frame: an iteration fails instead of ending. */
  #endedMidFrame = false;
  /** Set when even decoded frames are no longer handed out (closed here, timed out). */
  #dropInput = false;
  #flowing = false;
  readonly #deadline: ReadDeadline;
  readonly #output: ClientOutput;
  readonly #closed = Promise.withResolvers<void>();

  private constructor(
    socket: net.Socket,
    options: LineClientOptions,
    settings: ClientSettings,
  ) {
    this.#socket = socket;
    this.#options = options;
    this.address = formatAddr(settings);
    this.#decoder = settings.decoder;
    this.maxFrameBytes = this.#decoder.maxFrameBytes;
    this.#encoder = makeEncoder(options);
    this.#deadline = new ReadDeadline(settings.readTimeoutMs, {
      waiting: () => this.#readers.length > 0 && this.#ending === undefined,
      expired: (ms) =>
        this.#stop(
          new LineClientError(
            "timeout",
            `No reply from ${this.address} in ${ms / 1000} s`,
          ),
        ),
    });
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (error: Error) => this.#onError(error));
    socket.on("close", () => this.#onClose());
    socket.pause();
    this.#output = new ClientOutput(socket, {
      waitingReads: () => this.#readers.length,
      onWrite: () => this.#deadline.touch(),
    });
  }

  /**
   * Connects (retrying if `options.retry` says so) and, with
   * `greeting: true`, reads the first line. Rejects with a
   * {@linkcode LineClientError} naming the address and the reason; throws a
   * `RangeError` for a bad option.
   */
  static async connect(options: LineClientOptions): Promise<LineClient> {
    const settings = settleClientOptions(options);
    const socket = await connectSocket({
      hostname: settings.hostname,
      port: settings.port,
      tls: options.tls,
      connectTimeoutMs: settings.connectTimeoutMs,
      keepAliveMs: settings.keepAliveMs,
    }, options.retry);
    const client = new LineClient(socket, options, settings);
    if (options.greeting) {
      try {
        client.greeting = await client.readLine({
          timeoutMs: settings.connectTimeoutMs,
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
    return this.#deadline.ms;
  }

  set readTimeoutMs(ms: number) {
    this.#deadline.ms = ms;
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
    return this.#output.write(text);
  }

  /** Sends raw bytes (a counted block), after the lines sent before them. */
  sendBytes(bytes: Uint8Array): Promise<void> {
    return this.#output.write(bytes.slice());
  }

  /**
   * Sends `line` and resolves with the line that answers it. Many requests
   * may be in flight; replies are matched to requests in order. Use it only
   * with a protocol that answers every line with one line, and not beside
   * another reader of this client (say, an iteration).
   */
  async request(line: string, options: ReadOptions = {}): Promise<string> {
    const text = this.#lineEncoder().line(line);
    if (this.#output.error !== undefined) throw this.#output.error;
    const reply = this.#read(-1, true, options.timeoutMs);
    // A write that fails breaks the connection, which fails the reply too.
    this.#output.write(text).catch(() => {});
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
    return this.#output.end(
      new LineClientError(
        "aborted",
        `Cannot send to ${this.address}: this side has ended its stream`,
      ),
    );
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
    if (this.#readers.length === 0) this.#deadline.touch();
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
    for (let reader; (reader = this.#readers.first()) !== undefined;) {
      if (reader.bytes >= 0 && !reader.armed) {
        decoder.readBytes(reader.bytes);
        reader.armed = true;
      }
      const frame = decoder.next();
      if (frame === undefined) break;
      this.#readers.shift();
      this.#settle(reader, frame);
    }
    if (this.#readers.length === 0) return this.#setFlowing(false);
    if (this.#eof) this.#ending ??= this.#endOfStream();
    if (this.#ending !== undefined) return this.#rejectWaiting(this.#ending);
    decoder.release();
    this.#setFlowing(true);
    this.#deadline.arm();
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
    this.#readers.rejectAll(error);
    this.#setFlowing(false);
  }

  #setFlowing(flowing: boolean) {
    if (flowing === this.#flowing) return;
    this.#flowing = flowing;
    if (flowing) this.#socket.resume();
    else this.#socket.pause();
  }

  #onData(chunk: Uint8Array) {
    if (this.#dropInput) return;
    this.bytesReceived += chunk.length;
    this.#deadline.touch();
    this.#decoder.push(chunk);
    this.#deliver();
  }

  #onEnd() {
    this.#eof = true;
    // The socket ends its own side too, once the server has ended.
    this.#output.error ??= this.#closedError();
    this.#deliver();
  }

  /**
   * The server's stream ended and every complete frame has been read. A
   * frame it left unfinished is no line: it goes with the error, as
   * `partial` when it is text.
   */
  #endOfStream(): LineClientError {
    if (!this.#decoder.inFrame) return this.#closedError();
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

  #closedError(): LineClientError {
    return new LineClientError(
      "closed",
      `Connection closed by ${this.address}`,
    );
  }

  #onError(error: Error) {
    this.#ending ??= connectionError(error, this.address);
    this.#output.fail(this.#ending);
    this.#deliver();
  }

  #onClose() {
    this.#deadline.stop();
    if (!this.#eof) this.#ending ??= this.#closedError();
    this.#output.fail(this.#ending ?? this.#closedError());
    this.#deliver();
    this.#closed.resolve();
  }

  /** Ends the connection here: nothing more is read, even frames already decoded. */
  #stop(error: LineClientError) {
    if (this.#dropInput) return;
    this.#dropInput = true;
    this.#ending = error;
    this.#deadline.stop();
    this.#rejectWaiting(error);
    this.#output.fail(error);
    this.#socket.destroy();
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

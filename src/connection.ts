/**
 * The per-connection handler: owns one client stream, its framer, its output
 * queue and its protocol session, and serves them until the connection ends.
 *
 * Data flows one way: stream → {@linkcode FrameDecoder} (pulled) → session →
 * {@linkcode OutputQueue} → one write per batch. The handler pulls the next
 * request only while it may answer it: not while a reply is being computed,
 * not while the client leaves its replies unread, and not past its time
 * slice when other connections wait. While it does not pull it does not
 * read, so no client is buffered without bound.
 *
 * Closing has explicit phases, each owning its one timer: `flushing` (the
 * last output and our FIN on their way), `lingering` (FIN sent: input is
 * dropped until the client's FIN, so that our last replies are not destroyed
 * by a reset), `forcing` (a best-effort goodbye at a deadline), `closed`.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import { type Frame, type FrameEncoder, LINE_TOO_LONG } from "./framing.ts";
import { isThenable, replyText } from "./reply_value.ts";
import type {
  CloseReason,
  LineConnection,
  LineSession,
  PeerAddress,
  ReplyContext,
} from "./session.ts";
import { formatAddr } from "./transport.ts";
import { pauseReading, receiveBytes, resumeReading } from "./socket_reading.ts";
import {
  type BroadcastLog,
  type LogPosition,
  type OutputOwner,
  OutputQueue,
} from "./output_queue.ts";
import { ServerReplies } from "./replies.ts";
import { errorWithStack } from "./logging.ts";
import {
  type ConnectionConfig,
  HIGH_WATER_BYTES,
} from "./connection_config.ts";
import { FrameDecoder } from "./frame_decoder.ts";
import { Closing } from "./closing.ts";
import { TurnQueue } from "./turn_queue.ts";

/** Where the handler is in its life (see the module documentation). */
type State = "open" | "closing" | "closed";

/**
 * Why an open connection pulls no request: a reply promise is pending, its
 * time slice is used up, or the client has not read its replies.
 */
type Wait = "reply" | "turn" | "output" | undefined;

/** How long a connection may spend on its input (decoding, answering) before letting others run. */
const TIME_SLICE_MS = 2;
/** Connections whose slice ran out take turns here, a slice's worth per pass. */
const turns = new TurnQueue(TIME_SLICE_MS);
/** A read at least this large while others wait for turns waits for one too. */
const LARGE_READ_BYTES = 16 * 1024;
/** Output text written mid-batch once it reaches this many UTF-16 units. */
const FLUSH_UNITS = 16 * 1024;

/** Where a stream keeps the connection that owns it (see the listeners). */
const OWNER = Symbol("connection");
type OwnedStream = Duplex & { [OWNER]: Connection };

/** One admitted connection and the task that serves it. */
export class Connection implements LineConnection, OutputOwner {
  readonly peer: PeerAddress;
  /** A balancer's health check: it is sent nothing it did not ask for. */
  readonly healthCheck: boolean;
  /** 0 for a health check until it sends a line (see {@linkcode id}). */
  #id: number;
  readonly #stream: Duplex;
  readonly #config: ConnectionConfig<Connection>;
  /** Made at the first byte received: an idle connection needs none. */
  #decoder: FrameDecoder | undefined;
  readonly #out: OutputQueue;
  readonly #openedAt = Date.now();
  #session: LineSession | undefined;
  #state: State = "open";
  #wait: Wait;
  #reading = false;
  #flushQueued = false;
  #pumping = false;
  /** Inside `onBytes`: the bytes are lent, and its return value decides reading. */
  #inRead = false;
  /** Inside the session's `reply` (or waiting for its promise): `close` waits for it. */
  #replying = false;
  /** `close` was called during a reply: its final line, or null for none. */
  #closeRequest: string | null | undefined;
  /** The current request's cancellation, made only when a session asks for it. */
  #replyAbort: AbortController | undefined;
  #replyContext: ReplyContext | undefined;
  /** The client half-closed: answer what is left, then close. */
  #peerEnded = false;
  #lineClock = false;
  /** Frames pulled since the line clock last started. */
  #framesSinceLineStart = 0;
  #outcome: CloseReason = "peer_closed";
  #lines = 0;
  /** Time spent on input since this connection last let the others run (ms). */
  #busyMs = 0;
  /** How the stream is being closed, once the connection has started to close. */
  #closing: Closing | undefined;

  // An idle connection should cost little more than its socket: settings
  // shared by all live in the config, and the log text of the peer is made
  // when a line is logged, not kept.
  constructor(
    stream: Duplex,
    config: ConnectionConfig<Connection>,
    options: { id: number; peer: PeerAddress; healthCheck?: boolean },
  ) {
    this.#stream = stream;
    this.#config = config;
    this.#out = new OutputQueue(stream, this, config.metrics);
    this.#id = options.id;
    this.peer = options.peer;
    this.healthCheck = options.healthCheck ?? false;
  }

  /**
   * 1 for the first connection the server admitted, 2 for the next, and so
   * on. A health check takes its number only when it sends a line (it
   * becomes a session then).
   */
  get id(): number {
    return this.#id;
  }

  /** The peer as `HOST:PORT`, for logs. */
  get peerText(): string {
    return formatAddr(this.peer);
  }

  get closed(): boolean {
    return this.#state !== "open";
  }

  get draining(): boolean {
    return this.#config.draining();
  }

  /** How the connection ended (final once `onEnd` has been called). */
  get outcome(): CloseReason {
    return this.#outcome;
  }

  /**
   * Starts serving; `config.onEnd` is called when the connection has ended.
   * `initial` are bytes already read for it (after a PROXY header). Never
   * throws.
   */
  run(initial?: Uint8Array): void {
    const stream = this.#stream;
    (stream as OwnedStream)[OWNER] = this;
    stream.on("end", Connection.#endListener);
    stream.on("error", Connection.#errorListener);
    stream.on("close", Connection.#closeListener);
    this.#log("connection opened {peer}", { peer: this.peerText });
    this.#config.idle?.start(this);
    // A health check gets its session (without a greeting) if it sends a line.
    if (!this.healthCheck && !this.#startSession()) return;
    this.#reading = true;
    receiveBytes(stream, this);
    if (initial !== undefined && initial.length > 0) this.onBytes(initial);
    else this.#out.flush();
  }

  /**
   * Makes the session and queues its greeting (none for a health check).
   * False if the protocol threw: nothing is owed to the client yet, so the
   * connection is closed at once.
   */
  #startSession(): boolean {
    try {
      if (this.healthCheck) this.#id = this.#config.nextId();
      this.#session = this.#config.protocol.createSession(this);
      const greeting = this.#session.greeting;
      if (greeting !== undefined && !this.healthCheck) {
        this.#out.appendText(this.#config.encoder.line(greeting));
      }
      return true;
    } catch (error) {
      this.#logFault(error);
      this.#endAs("fault");
      this.#destroy();
      return false;
    }
  }

  send(...lines: string[]): boolean {
    if (this.#state !== "open") return false;
    const { encoder } = this.#config;
    for (const line of lines) encoder.check(line, { refuseCr: true });
    for (const line of lines) this.#out.appendText(line + encoder.ending);
    return this.#afterQueued();
  }

  /** How lines written to this client are ended and checked. */
  get encoder(): FrameEncoder {
    return this.#config.encoder;
  }

  /**
   * Queues `[position, end)` of a group's log: lines broadcast to many
   * connections, encoded once (see ConnectionGroup). @internal
   */
  queueSpan(log: BroadcastLog, position: LogPosition, end: number): boolean {
    if (this.#state !== "open") return false;
    this.#out.appendSpan(log, position, end);
    return this.#afterQueued();
  }

  /**
   * After output was queued by `send` or a broadcast: enforces the bound,
   * schedules one write for everything queued in this turn.
   */
  #afterQueued(): boolean {
    const out = this.#out;
    const max = this.#config.maxQueuedBytes;
    if (out.waitingBytesAtMost() > max) {
      const queued = out.waitingBytes(true);
      if (queued > max) {
        this.#disconnectSlowConsumer(queued);
        return false;
      }
    }
    if (!this.#pumping && !this.#flushQueued) {
      // Lines sent in one turn (a broadcast, a listing) go out in one write.
      this.#flushQueued = true;
      queueMicrotask(() => this.#flushQueuedOutput());
    }
    return !this.#outputFull();
  }

  /** Bytes waiting for this client (a lower bound while text is unencoded). */
  get waitingBytes(): number {
    return this.#out.waitingBytes();
  }

  drained(): Promise<void> {
    return this.whenWaitingAtMost(0);
  }

  /**
   * Resolves once at most `bytes` wait for this client (0: everything was
   * handed to the system), or the connection has closed.
   */
  whenWaitingAtMost(bytes: number): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    return this.#out.whenWaitingAtMost(bytes);
  }

  readBytes(length: number): void {
    (this.#decoder ??= new FrameDecoder(this.#config.framing)).readBytes(
      length,
    );
  }

  close(finalLine?: string): void {
    if (finalLine !== undefined) this.#config.encoder.check(finalLine);
    if (this.#state !== "open") return;
    // During a reply, the reply's own lines go first.
    if (this.#replying) {
      this.#closeRequest ??= finalLine ?? null;
      return;
    }
    this.#beginClosing("quit", finalLine);
  }

  /**
   * The server is draining: a connection between lines says goodbye now;
   * one in the middle of a line, or answering, finishes that first.
   */
  beginShutdown(): void {
    if (this.#state === "open" && this.#atLineBoundary()) {
      this.#beginClosing("shutdown", ServerReplies.shuttingDown);
    }
  }

  /** Closes at once (shutdown deadline or abort), with a best-effort shutdown line. */
  forceClose(): void {
    if (this.#state === "closed") return;
    if (this.#state === "open") {
      return this.#beginClosing("forced", ServerReplies.shuttingDown, true);
    }
    this.#closing?.force();
  }

  /** Called by the server's idle tracker: nothing was received for the idle timeout. */
  onIdleTimeout(): void {
    this.#beginClosing("idle_timeout", ServerReplies.idleTimeout);
  }

  /** Called by the server's line tracker: a line stayed unfinished for the line timeout. */
  onLineTimeout(): void {
    this.#beginClosing("line_timeout", ServerReplies.lineTimeout);
  }

  /** Called by the server's reply tracker: a reply promise did not settle in time. */
  onReplyTimeout(): void {
    if (this.#state !== "open" || this.#wait !== "reply") return;
    this.#replyAbort?.abort(new Error("The reply took too long"));
    this.#config.logger.warn(
      "connection {peer}: a reply did not settle in time: closing",
      { peer: this.peerText },
    );
    this.#beginClosing("reply_timeout");
  }

  // The stream's listeners are shared by every connection (each finds its
  // own through the stream): closures per connection would cost more memory
  // than an idle connection's own state.
  static #endListener(this: Duplex) {
    (this as OwnedStream)[OWNER].#onEnd();
  }
  static #errorListener(this: Duplex, error: Error) {
    (this as OwnedStream)[OWNER].#onError(error);
  }
  static #closeListener(this: Duplex) {
    (this as OwnedStream)[OWNER].#onClose();
  }

  /**
   * Bytes from the client, lent for this call. Returns whether to go on
   * reading: not while requests wait to be answered.
   */
  onBytes(bytes: Uint8Array): boolean {
    if (this.#state !== "open") return true; // closing: input is dropped
    const started = performance.now();
    this.#config.metrics.received(bytes.length);
    // Any byte, even part of a line, restarts the idle clock (stopped while
    // a reply is computed: the client waits for us then).
    if (this.#wait !== "reply") this.#config.idle?.start(this);
    const decoder = this.#decoder ??= new FrameDecoder(this.#config.framing);
    decoder.push(bytes);
    this.#inRead = true;
    try {
      // A large read while connections wait for turns is a heavy sender's:
      // it waits for a turn too, instead of taking a slice at once. The
      // first reads of 50 flooding clients, arriving together, would
      // otherwise each take a slice before anyone else is read. Not while
      // the connection already waits (for a reply, read meanwhile).
      if (
        this.#wait === undefined && bytes.length >= LARGE_READ_BYTES &&
        turns.length > 0
      ) {
        this.#waitFor("turn");
      } else this.#pump(started);
    } finally {
      this.#inRead = false;
    }
    if (this.#state === "open") decoder.release();
    this.#reading = this.#state !== "open" || this.#wait === undefined ||
      this.#readsWhileReplying();
    return this.#reading;
  }

  /**
   * While a reply is computed the socket is still read, as long as nothing
   * waits in the decoder: a socket that is not read reports neither a reset
   * nor a FIN, and a client that has gone must not hold its slot until the
   * reply timeout. Bytes that arrive meanwhile stop the reading (one read
   * at most is kept).
   */
  #readsWhileReplying(): boolean {
    return this.#wait === "reply" && this.#decoder?.bufferedBytes === 0;
  }

  #onEnd() {
    this.#peerEnded = true;
    if (this.#state !== "open") return this.#closing?.peerEnded();
    this.#stopLineClock();
    this.#decoder?.end();
    this.#pump();
  }

  #onError(error: Error) {
    if (this.#state === "open") {
      this.#endAs("reset");
      this.#config.logger.debug("connection {peer} lost: {error}", {
        peer: this.peerText,
        error: String(error),
      });
    }
    this.#destroy();
  }

  /**
   * Answers the framed requests in order until they are done or the handler
   * must wait (a reply promise, its turn, the client's reading). Line
   * boundaries are where the end of input and a shutdown take effect.
   * `started` is when the work began (a read counts its decoding).
   */
  #pump(started = performance.now()): void {
    if (this.#state !== "open" || this.#wait !== undefined) return;
    const decoder = this.#decoder;
    const out = this.#out;
    this.#pumping = true;
    try {
      while (decoder !== undefined) {
        // One output budget: no further request is answered while the
        // client leaves the replies it has unread.
        if (out.textUnits >= FLUSH_UNITS) this.#out.flush();
        if (this.#outputBlocks()) return this.#waitFor("output");
        const frame = decoder.next();
        if (frame === undefined) break;
        this.#answer(frame);
        if (this.#state !== "open" || this.#wait !== undefined) return;
        // Fairness: a batch of heavy lines (say, products of thousands of
        // numbers) must not hold the event loop while other clients wait.
        // The slice counts from before the first line and carries over from
        // one read to the next until the connection yields: the runtime
        // hands over a busy socket's reads back to back (up to 32 of 64 KiB
        // at a time, as libuv does), and with one long line per read a slice
        // restarted at every read would never run out. The clock is read
        // every 16 lines, or after a long one, to keep its cost off the hot
        // path of small lines.
        if (
          ((this.#lines & 15) === 0 ||
            (frame !== LINE_TOO_LONG && frame.length > 256)) &&
          this.#busyMs + performance.now() - started >= TIME_SLICE_MS
        ) {
          return this.#waitFor("turn");
        }
      }
    } finally {
      this.#pumping = false;
    }
    this.#busyMs += performance.now() - started;
    if (this.#peerEnded) {
      return this.#config.draining()
        ? this.#beginClosing("shutdown", ServerReplies.shuttingDown)
        : this.#beginClosing("peer_closed");
    }
    if (this.#config.draining() && !decoder?.inFrame) {
      return this.#beginClosing("shutdown", ServerReplies.shuttingDown);
    }
    this.#updateLineClock();
    this.#out.flush();
    // Nothing more is read while the client leaves its replies unread.
    if (this.#outputBlocks()) return this.#waitFor("output");
    if (!this.#reading) {
      this.#reading = true;
      resumeReading(this.#stream);
    }
  }

  /** Answers one frame: the session's reply, or the server's own for an over-long one. */
  #answer(frame: Frame) {
    this.#framesSinceLineStart++;
    if (frame === LINE_TOO_LONG) {
      this.#out.appendText(this.#config.tooLongReply);
      this.#lines++;
      this.#config.metrics.lineTooLong();
      return;
    }
    if (this.#session === undefined && !this.#startSession()) return;
    const session = this.#session!;
    let reply: unknown;
    this.#replying = true;
    try {
      if (typeof frame === "string") {
        if (this.#config.logLines) {
          this.#config.logger.debug("line from {peer}: {line}", {
            peer: this.peerText,
            line: frame,
          });
        }
        reply = session.reply(frame, this.#context());
      } else if (session.replyBytes === undefined) {
        throw new TypeError(
          "The session asked for raw bytes (readBytes) but has no replyBytes",
        );
      } else {
        reply = session.replyBytes(frame, this.#context());
      }
    } catch (error) {
      this.#replying = false;
      return this.#fail(error);
    }
    if (isThenable(reply)) return this.#awaitReply(reply);
    this.#replyAbort = undefined;
    this.#settle(reply);
  }

  /** What a reply receives besides its line: the request's cancellation. */
  #context(): ReplyContext {
    return this.#replyContext ??= new RequestContext(this);
  }

  /** The current request's signal, made on first use. */
  replySignal(): AbortSignal {
    return (this.#replyAbort ??= new AbortController()).signal;
  }

  /** A reply value is here: queues its lines, then honours a close or `ended`. */
  #settle(reply: unknown) {
    this.#replying = false;
    try {
      const text = replyText(reply, this.#config.encoder);
      if (text !== "") this.#out.appendText(text);
      this.#lines++;
      this.#config.metrics.lineAnswered();
      const closeRequest = this.#closeRequest;
      if (closeRequest !== undefined) {
        this.#closeRequest = undefined;
        return this.#beginClosing("quit", closeRequest ?? undefined);
      }
      if (this.#session!.ended) this.#beginClosing("quit");
    } catch (error) {
      this.#fail(error);
    }
  }

  /** A reply is a promise: read nothing more until it settles (request order is kept). */
  #awaitReply(reply: PromiseLike<unknown>) {
    this.#replying = true;
    this.#waitFor("reply");
    // The client waits for us: its silence now is not idleness.
    this.#config.idle?.stop(this);
    this.#stopLineClock();
    this.#config.replyDeadline?.start(this);
    Promise.resolve(reply).then((value) => {
      if (!this.#replyDone()) return;
      this.#settle(value);
      this.#pump();
    }, (error) => {
      if (!this.#replyDone()) return;
      this.#replying = false;
      this.#fail(error);
    });
  }

  /** A reply promise settled: false when the connection has moved on since. */
  #replyDone(): boolean {
    if (this.#state !== "open" || this.#wait !== "reply") return false;
    this.#wait = undefined;
    this.#replyAbort = undefined;
    this.#config.replyDeadline?.stop(this);
    this.#config.idle?.start(this);
    return true;
  }

  /** Enough waits for the client that no further request is answered until it reads. */
  #outputFull(): boolean {
    return this.#out.waitingBytes() >= HIGH_WATER_BYTES;
  }

  /** True when output is still over the budget after writing what the stream takes now. */
  #outputBlocks(): boolean {
    if (!this.#outputFull()) return false;
    this.#out.flush();
    return this.#outputFull();
  }

  /** Stops pulling requests until `wait` is over; output so far goes out now. */
  #waitFor(wait: Exclude<Wait, undefined>) {
    this.#wait = wait;
    this.#out.flush();
    // Inside onBytes its return value decides the reading.
    const reading = this.#readsWhileReplying();
    if (!this.#inRead && reading !== this.#reading) {
      this.#reading = reading;
      if (reading) resumeReading(this.#stream);
      else pauseReading(this.#stream);
    }
    // The next turn comes from the turn queue, after the event loop has
    // looked for other sockets' input: a client whose line waits in the
    // kernel is served before this connection goes on.
    if (wait === "turn") {
      this.#busyMs = 0;
      turns.enqueue(() => {
        if (this.#wait !== "turn") return;
        this.#wait = undefined;
        this.#pump();
      });
    }
  }

  /** A write completed (the queue has written what waited behind it). @internal */
  outputWritten(): void {
    if (this.#state === "closing") return this.#closing?.written();
    if (this.#wait === "output" && !this.#outputFull()) {
      this.#wait = undefined;
      this.#pump();
    }
  }

  #flushQueuedOutput() {
    this.#flushQueued = false;
    if (this.#state === "open") this.#out.flush();
  }

  #atLineBoundary(): boolean {
    return (this.#wait === undefined || this.#wait === "output") &&
      !this.#decoder?.inFrame;
  }

  /** The line clock starts with the first byte of a line and stops at its end. */
  #updateLineClock() {
    const line = this.#config.line;
    if (line === undefined) return;
    if (!this.#decoder?.inFrame) return this.#stopLineClock();
    if (!this.#lineClock || this.#framesSinceLineStart > 0) {
      this.#lineClock = true;
      this.#framesSinceLineStart = 0;
      line.start(this);
    }
  }

  #stopLineClock() {
    if (!this.#lineClock) return;
    this.#lineClock = false;
    this.#config.line?.stop(this);
  }

  #stopClocks() {
    this.#config.idle?.stop(this);
    this.#stopLineClock();
    this.#config.replyDeadline?.stop(this);
    this.#replyAbort?.abort(new Error("The connection is closing"));
    this.#replyAbort = undefined;
  }

  /** A session threw: log it with its stack, deliver the replies owed so far, close. */
  #fail(error: unknown) {
    this.#logFault(error);
    this.#beginClosing("fault");
  }

  /** An unexpected exception: counted, logged with its stack; it ends this connection only. */
  #logFault(error: unknown) {
    this.#config.metrics.handlerFault();
    this.#config.logger.error("connection {peer} failed: {error}", {
      peer: this.peerText,
      error: errorWithStack(error),
    });
  }

  #disconnectSlowConsumer(queued: number) {
    this.#endAs("slow_consumer");
    this.#stopClocks();
    this.#config.logger.warn(
      "connection {peer} does not read its lines ({queued} bytes waiting): disconnecting",
      { peer: this.peerText, queued },
    );
    this.#out.release();
    this.#destroy();
  }

  /**
   * Writes what is owed and `finalLine`, then FIN (see closing.ts); input
   * from now on is read and dropped. `force`: the line gets a moment only.
   */
  #beginClosing(outcome: CloseReason, finalLine?: string, force = false) {
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#endAs(outcome);
    this.#stopClocks();
    if (finalLine !== undefined) {
      this.#out.appendText(finalLine + this.#config.encoder.ending);
    }
    this.#decoder = undefined;
    if (!this.#reading) {
      this.#reading = true;
      resumeReading(this.#stream);
    }
    this.#closing = new Closing(this.#stream, this.#out, {
      lingerMs: this.#config.lingerMs,
      peerEnded: this.#peerEnded,
      force,
    });
  }

  /**
   * Settles how this connection ends (once, while it is open) and counts
   * the error that goes with it; the outcome itself is counted when the
   * connection has closed.
   */
  #endAs(outcome: CloseReason) {
    this.#outcome = outcome;
    this.#config.metrics.connectionClosing(outcome);
  }

  #destroy() {
    if (this.#state === "open") this.#state = "closing";
    this.#stream.destroy();
  }

  #onClose() {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#closing?.closed();
    this.#stopClocks();
    this.#out.release();
    const { logger, metrics } = this.#config;
    const lines = this.#lines;
    this.#log(
      lines === 1
        ? "connection closed {peer} after {durationMs} ms, {lines} line, {outcome}"
        : "connection closed {peer} after {durationMs} ms, {lines} lines, {outcome}",
      {
        peer: this.peerText,
        durationMs: Date.now() - this.#openedAt,
        lines,
        outcome: this.#outcome,
      },
    );
    try {
      this.#session?.onClose?.(this.#outcome);
    } catch (error) {
      metrics.handlerFault();
      logger.error("close hook of {peer} failed: {error}", {
        peer: this.peerText,
        error: errorWithStack(error),
      });
    }
    this.#config.onEnd(this);
  }

  /** Connection events: info level, debug for a health check. */
  #log(message: string, properties: Record<string, unknown>) {
    const logger = this.#config.logger;
    if (this.healthCheck) logger.debug(message, properties);
    else logger.info(message, properties);
  }
}

/** Per connection, made once: hands a reply the current request's signal. */
class RequestContext implements ReplyContext {
  readonly #connection: Connection;
  constructor(connection: Connection) {
    this.#connection = connection;
  }
  get signal(): AbortSignal {
    return this.#connection.replySignal();
  }
}

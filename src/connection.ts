/**
 * The per-connection handler: owns one client stream, its line decoder, its
 * output and its protocol session, and serves them until the connection
 * ends.
 *
 * Data flows one way: stream → {@linkcode LineDecoder} → session → one write
 * per batch of input. The handler stops reading while a reply is being
 * computed asynchronously or while the client is not reading what was
 * written (backpressure), so no client is buffered without bound, and a
 * connection that has spent a few milliseconds on its input lets the others
 * run before it reads on.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import type { Logger } from "@logtape/logtape";
import { type Frame, LINE_TOO_LONG, LineDecoder } from "./line_decoder.ts";
import type {
  CloseReason,
  LineConnection,
  LineProtocol,
  LineSession,
  PeerAddress,
  Reply,
} from "./session.ts";
import type { ServerMetrics } from "./metrics.ts";
import { formatAddr } from "./transport.ts";
import { ServerReplies } from "./replies.ts";
import type { TimeoutTracker } from "./timeout_tracker.ts";
import { errorWithStack, plural } from "./logging.ts";

/** Settings every connection of a server shares. */
export interface ConnectionConfig {
  /** The protocol spoken on every connection. */
  protocol: LineProtocol;
  maxLineBytes: number;
  /** The reply to a line over the limit, CRLF included. */
  tooLongReply: string;
  /** Bound of lines waiting for a client (see `LineProtocol.maxQueuedBytes`). */
  maxQueuedBytes: number;
  /** Whether request lines are logged (debug level). */
  logLines: boolean;
  /** Closes connections that received nothing for the idle timeout; absent when disabled. */
  idle: TimeoutTracker<Connection> | undefined;
  /** Closes connections whose line is unfinished after the line timeout; absent when disabled. */
  line: TimeoutTracker<Connection> | undefined;
  /**
   * After our FIN, how long to keep reading (and dropping) what the client
   * still sends before closing. Closing a socket with unread input makes the
   * kernel send a reset, which can destroy replies the client has not read
   * yet; waiting for the client's own FIN avoids that.
   */
  lingerMs: number;
  /** True once the server is draining. */
  draining: () => boolean;
  /** Called once when a connection has ended (its stream is closed): the server counts it and frees its slot. */
  onEnd: (connection: Connection) => void;
  metrics: ServerMetrics;
  logger: Logger;
}

/**
 * Where the handler is: `open` while it serves; `closing` once its final
 * output and FIN are on their way (input is dropped); `closed` when the
 * stream is gone and the session has been told.
 */
type State = "open" | "closing" | "closed";

/**
 * Why an open connection is not reading: a reply promise is pending, or a
 * batch of lines used up its time slice and waits for its next turn.
 * (Unread output is the third reason, read off the stream itself.)
 */
type Wait = "reply" | "turn" | undefined;

const CRLF = "\r\n";
/** How long a connection may spend on its input (decoding, answering) before letting others run. */
const TIME_SLICE_MS = 2;
/** How long closing output may take to be written before the stream is destroyed. */
const FINAL_FLUSH_MS = 1500;
/** How long a forced close waits for its best-effort shutdown line. */
const FORCED_LINE_WAIT_MS = 50;
const encoder = new TextEncoder();
/** Default bound of {@linkcode LineProtocol.maxQueuedBytes}. */
export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

/** Where a stream keeps the connection that owns it (see the listeners). */
const OWNER = Symbol("connection");
type OwnedStream = Duplex & { [OWNER]: Connection };

/** One admitted connection and the task that serves it. */
export class Connection implements LineConnection {
  readonly id: number;
  readonly peer: PeerAddress;
  readonly #stream: Duplex;
  readonly #config: ConnectionConfig;
  /** Made at the first byte received: an idle connection needs none. */
  #decoder: LineDecoder | undefined;
  readonly #openedAt = Date.now();
  #session: LineSession | undefined;
  #state: State = "open";
  #wait: Wait;
  #reading = false;
  /** A `drain` listener is waiting for the client to read (attached only then). */
  #awaitingDrain = false;
  /** Request lines framed and not yet answered, from index #next on. */
  #frames: Frame[] = [];
  #next = 0;
  /** Output not yet handed to the stream; written once per batch. */
  #out = "";
  #flushQueued = false;
  #pumping = false;
  /** The client half-closed: answer what is left, then close. */
  #peerEnded = false;
  #outcome: CloseReason = "peer_closed";
  #lines = 0;
  /** Time spent on input since this connection last let the others run (ms). */
  #busyMs = 0;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  // An idle connection should cost little more than its socket: settings
  // shared by all live in the config, and the log text of the peer is made
  // when a line is logged, not kept.
  constructor(
    stream: Duplex,
    config: ConnectionConfig,
    options: { id: number; peer: PeerAddress },
  ) {
    this.#stream = stream;
    this.#config = config;
    this.id = options.id;
    this.peer = options.peer;
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

  /** Starts serving; `config.onEnd` is called when the connection has ended. Never throws. */
  run(): void {
    const stream = this.#stream;
    (stream as OwnedStream)[OWNER] = this;
    stream.on("data", Connection.#dataListener);
    stream.on("end", Connection.#endListener);
    stream.on("error", Connection.#errorListener);
    stream.on("close", Connection.#closeListener);
    this.#config.logger.info("connection opened {peer}", {
      peer: this.peerText,
    });
    this.#config.idle?.start(this);
    try {
      this.#session = this.#config.protocol.createSession(this);
      if (this.#session.greeting !== undefined) {
        this.#out = this.#session.greeting + CRLF + this.#out;
      }
    } catch (error) {
      // Nothing is owed to the client yet: close at once.
      this.#logFault(error);
      this.#endAs("fault");
      this.#state = "closing";
      this.#destroy();
      return;
    }
    this.#pump();
  }

  send(...lines: string[]): boolean {
    if (this.#state !== "open") return false;
    for (const line of lines) this.#out += line + CRLF;
    const queued = this.#queuedBytes();
    if (queued > this.#config.maxQueuedBytes) {
      this.#disconnectSlowConsumer(queued);
      return false;
    }
    if (!this.#pumping && !this.#flushQueued) {
      // Lines sent in one turn (a broadcast, a listing) go out in one write.
      this.#flushQueued = true;
      queueMicrotask(() => this.#flushQueuedOutput());
    }
    return queued < this.#stream.writableHighWaterMark;
  }

  /**
   * Bytes waiting for this client: in the stream and not yet handed to it.
   * A UTF-16 code unit is 1 to 3 UTF-8 bytes, so the exact count is taken
   * only when the cheap bounds cannot decide.
   */
  #queuedBytes(): number {
    const buffered = this.#stream.writableLength;
    const atMost = this.#out.length * 3 + buffered;
    if (atMost <= this.#config.maxQueuedBytes) return atMost;
    return Buffer.byteLength(this.#out, "utf8") + buffered;
  }

  drained(): Promise<void> {
    this.#flush();
    if (this.#state === "closed" || !this.#stream.writableNeedDrain) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        this.#stream.off("drain", done);
        this.#stream.off("close", done);
        resolve();
      };
      this.#stream.on("drain", done);
      this.#stream.on("close", done);
    });
  }

  close(finalLine?: string): void {
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
      this.#beginClosing("forced", ServerReplies.shuttingDown);
    }
    clearTimeout(this.#closeTimer);
    this.#closeTimer = setTimeout(() => this.#destroy(), FORCED_LINE_WAIT_MS);
  }

  /** Called by the server's idle tracker: nothing was received for the idle timeout. */
  onIdleTimeout(): void {
    if (this.#state !== "open") return;
    this.#beginClosing("idle_timeout", ServerReplies.idleTimeout);
  }

  /** Called by the server's line tracker: a line stayed unfinished for the line timeout. */
  onLineTimeout(): void {
    if (this.#state !== "open") return;
    this.#beginClosing("line_timeout", ServerReplies.lineTimeout);
  }

  // The stream's listeners are shared by every connection (each finds its
  // own through the stream): five closures per connection would cost more
  // memory than an idle connection's own state.
  static #dataListener(this: Duplex, chunk: Uint8Array) {
    (this as OwnedStream)[OWNER].#onData(chunk);
  }
  static #endListener(this: Duplex) {
    (this as OwnedStream)[OWNER].#onEnd();
  }
  static #errorListener(this: Duplex, error: Error) {
    (this as OwnedStream)[OWNER].#onError(error);
  }
  static #closeListener(this: Duplex) {
    (this as OwnedStream)[OWNER].#onClose();
  }
  static #drainListener(this: Duplex) {
    const connection = (this as OwnedStream)[OWNER];
    connection.#awaitingDrain = false;
    connection.#updateReading();
  }

  #onData(chunk: Uint8Array) {
    if (this.#state !== "open") return; // closing: input is dropped
    const started = performance.now();
    const { idle, line, metrics } = this.#config;
    metrics.received(chunk.length);
    // Any byte, even part of a line, restarts the idle clock.
    idle?.start(this);
    const decoder = this.#decoder ??= new LineDecoder(
      this.#config.maxLineBytes,
    );
    const framed = this.#frames.length;
    const wasInLine = decoder.inLine;
    decoder.push(chunk, this.#frames);
    if (line !== undefined) {
      // The line clock starts with the first byte of a line and stops at its LF.
      if (!decoder.inLine) line.stop(this);
      else if (!wasInLine || this.#frames.length > framed) line.start(this);
    }
    this.#pump(started);
  }

  #onEnd() {
    if (this.#state !== "open") return;
    this.#peerEnded = true;
    this.#config.line?.stop(this);
    this.#decoder?.finish(this.#frames);
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
   * Answers the framed lines in order until they are done or the handler
   * must wait (a reply promise, its turn, the client's reading). Line
   * boundaries are where the end of input and a shutdown take effect.
   * `started` is when the work began (a data event counts its decoding).
   */
  #pump(started = performance.now()): void {
    if (this.#state !== "open" || this.#wait !== undefined) return;
    const session = this.#session!;
    const frames = this.#frames;
    this.#pumping = true;
    try {
      while (this.#next < frames.length) {
        const frame = frames[this.#next++];
        if (frame === LINE_TOO_LONG) {
          this.#out += this.#config.tooLongReply;
          this.#lines++;
          this.#config.metrics.lineTooLong();
          continue;
        }
        if (this.#config.logLines) {
          this.#config.logger.debug("line from {peer}: {line}", {
            peer: this.peerText,
            line: frame,
          });
        }
        let reply: Reply | Promise<Reply>;
        try {
          reply = session.reply(frame);
        } catch (error) {
          return this.#fail(error);
        }
        if (reply instanceof Promise) return this.#awaitReply(reply);
        this.#queueReply(reply);
        if (this.#state !== "open") return;
        if (session.ended) return this.#beginClosing("quit");
        // Fairness: a batch of heavy lines (say, products of thousands of
        // numbers) must not hold the event loop while other clients wait.
        // The slice counts from before the first line and carries over from
        // one data event to the next until the connection yields: the
        // runtime hands over a busy socket's chunks back to back (up to 32
        // reads of 64 KiB at a time, as libuv does), one data event each, and
        // with one long line per chunk a slice restarted at every event
        // would never run out. The clock is read every 16 lines, or after a
        // long one, to keep its cost off the hot path of small lines.
        if ((this.#lines & 15) === 0 || frame.length > 256) {
          const busyMs = this.#busyMs + performance.now() - started;
          if (busyMs >= TIME_SLICE_MS) return this.#yieldTurn();
        }
      }
    } finally {
      this.#pumping = false;
    }
    frames.length = 0;
    this.#next = 0;
    if (this.#peerEnded) {
      return this.#config.draining()
        ? this.#beginClosing("shutdown", ServerReplies.shuttingDown)
        : this.#beginClosing("peer_closed");
    }
    if (this.#config.draining() && this.#atLineBoundary()) {
      return this.#beginClosing("shutdown", ServerReplies.shuttingDown);
    }
    this.#flush();
    this.#updateReading();
    this.#busyMs += performance.now() - started;
  }

  #atLineBoundary(): boolean {
    return this.#wait === undefined && this.#next >= this.#frames.length &&
      !this.#decoder?.hasPartialLine;
  }

  #queueReply(reply: Reply) {
    if (typeof reply === "string") this.#out += reply + CRLF;
    else if (reply !== undefined) {
      for (const line of reply) this.#out += line + CRLF;
    }
    this.#answered();
  }

  #answered() {
    this.#lines++;
    this.#config.metrics.lineAnswered();
  }

  /** A reply is a promise: read nothing more until it settles (request order is kept). */
  #awaitReply(reply: Promise<Reply>) {
    this.#wait = "reply";
    // The client waits for us: its silence now is not idleness.
    this.#config.idle?.stop(this);
    this.#config.line?.stop(this);
    this.#flush();
    this.#updateReading();
    reply.then((value) => {
      if (this.#state !== "open") return;
      this.#wait = undefined;
      this.#config.idle?.start(this);
      if (this.#decoder?.inLine) this.#config.line?.start(this);
      this.#queueReply(value);
      if (this.#state !== "open") return;
      if (this.#session!.ended) return this.#beginClosing("quit");
      this.#pump();
    }, (error) => {
      if (this.#state !== "open") return;
      this.#wait = undefined;
      this.#fail(error);
    });
  }

  /**
   * Lets the other connections run, then goes on: reading stops (Deno's
   * `pause()` stops the socket's reads at once) and a timer resumes. A
   * timer, not `setImmediate` or a microtask: Deno's event loop is one task
   * that queues itself again while it has I/O or immediates to handle, and
   * the runtime asks the kernel which other sockets have input only when
   * that task goes idle or every 61st run. Waiting on a timer with reading
   * stopped lets it go idle, so a client whose line waits in the kernel is
   * served before this connection's next turn.
   */
  #yieldTurn() {
    this.#wait = "turn";
    this.#busyMs = 0;
    this.#flush();
    this.#updateReading();
    setTimeout(() => {
      this.#wait = undefined;
      this.#pump();
    }, 0);
  }

  /** Reads while open and nothing waits; while closing, reads to drop input. */
  #updateReading() {
    const needDrain = this.#stream.writableNeedDrain;
    if (needDrain && !this.#awaitingDrain) {
      this.#awaitingDrain = true;
      this.#stream.once("drain", Connection.#drainListener);
    }
    const read = this.#state === "closing" ||
      (this.#state === "open" && this.#wait === undefined && !needDrain);
    if (read === this.#reading) return;
    this.#reading = read;
    if (read) this.#stream.resume();
    else this.#stream.pause();
  }

  #flushQueuedOutput() {
    this.#flushQueued = false;
    if (this.#state === "open") this.#flush();
  }

  #flush() {
    if (this.#out === "") return;
    // One encoding call (Buffer.from would measure the string first).
    const bytes = encoder.encode(this.#out);
    this.#out = "";
    this.#config.metrics.sent(bytes.length);
    this.#stream.write(bytes);
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
    this.#config.logger.warn(
      "connection {peer} does not read its lines ({queued} bytes waiting): disconnecting",
      { peer: this.peerText, queued },
    );
    this.#out = "";
    this.#state = "closing";
    this.#destroy();
  }

  /**
   * Writes what is owed and `finalLine`, then FIN; input from now on is
   * dropped until the client closes too or the linger time ends.
   */
  #beginClosing(outcome: CloseReason, finalLine?: string) {
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#endAs(outcome);
    this.#config.idle?.stop(this);
    this.#config.line?.stop(this);
    if (finalLine !== undefined) this.#out += finalLine + CRLF;
    this.#flush();
    this.#stream.end(() => {
      if (this.#state !== "closing") return;
      clearTimeout(this.#closeTimer);
      this.#closeTimer = setTimeout(
        () => this.#destroy(),
        this.#config.lingerMs,
      );
    });
    this.#closeTimer = setTimeout(
      () => this.#destroy(),
      FINAL_FLUSH_MS + this.#config.lingerMs,
    );
    this.#updateReading();
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
    this.#stream.destroy();
  }

  #onClose() {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#closeTimer);
    this.#config.idle?.stop(this);
    this.#config.line?.stop(this);
    const { logger, metrics } = this.#config;
    logger.info(
      "connection closed {peer} after {durationMs} ms, {linesAnswered}, {reason}",
      {
        peer: this.peerText,
        durationMs: Date.now() - this.#openedAt,
        lines: this.#lines,
        linesAnswered: plural(this.#lines, "line"),
        reason: this.#outcome,
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
}

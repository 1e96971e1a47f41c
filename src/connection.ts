/**
 * The per-connection handler: owns one socket, its read buffer, its line
 * decoder and its protocol session, and runs them until the connection ends.
 *
 * Data flows one way: socket → {@linkcode LineDecoder} → session → one write
 * per read. The loop never reads while replies are unwritten, so a client
 * that does not read its replies is not buffered without bound
 * (backpressure), and at most one write per connection is ever pending.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { type Frame, LINE_TOO_LONG, LineDecoder } from "./line_decoder.ts";
import type { LineProtocol, LineSession } from "./session.ts";
import type { ConnectionOutcome, ServerMetrics } from "./metrics.ts";
import { formatAddr, isPeerGone, type LineConn } from "./transport.ts";
import { ServerReplies } from "./replies.ts";
import {
  returnWriteBuffer,
  takeWriteBuffer,
  WRITE_BUFFER_BYTES,
} from "./write_pool.ts";
import type { IdleTracker } from "./idle_tracker.ts";
import { settleWithin } from "./deadline.ts";
import { errorWithStack } from "./logging.ts";

/** Settings every connection of a server shares. */
export interface ConnectionConfig {
  maxLineBytes: number;
  /** Closes connections that received nothing for the idle timeout; absent when disabled. */
  idle: IdleTracker | undefined;
  /**
   * After our FIN, how long to keep reading (and dropping) what the client
   * still sends before closing. Closing a socket with unread input makes the
   * kernel send a reset, which can destroy replies the client has not read
   * yet; waiting for the client's own FIN avoids that.
   */
  lingerMs: number;
  metrics: ServerMetrics;
  logger: Logger;
}

/**
 * Where the handler is, so that events from outside (idle timer, shutdown,
 * force close) know what they may safely do:
 * - `starting`: the greeting is being written;
 * - `reading`: waiting for input with nothing to write (the only state in
 *   which a line may be written from outside the loop);
 * - `busy`: answering a read (a session call or a write is in flight);
 * - `closing`: the final line and FIN are on their way; input is dropped;
 * - `closed`: the socket is closed.
 */
type Phase = "starting" | "reading" | "busy" | "closing" | "closed";

const CRLF = "\r\n";
/** Idle connections hold only this much; reads that fill it grow it 4x, up to the max. */
const MIN_READ_BUFFER = 512;
const MAX_READ_BUFFER = 64 * 1024;
/** How long a forced close waits for its best-effort shutdown line. */
const FORCED_LINE_WAIT_MS = 50;

/** The longest a connection computes replies before letting others run. */
const TIME_SLICE_MS = 2;

const encoder = new TextEncoder();

/** Lets timers and I/O of other connections run (a macrotask, not a microtask). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** One accepted connection and the task that serves it. */
export class Connection {
  /** The peer as `HOST:PORT`, for logs. */
  readonly peer: string;
  readonly #conn: LineConn;
  readonly #protocol: LineProtocol;
  readonly #decoder: LineDecoder;
  readonly #config: ConnectionConfig;
  /** Asks the server's connection limit for a slot (see {@linkcode admitted}). */
  readonly #admit: () => boolean | Promise<boolean>;
  #admitted = false;
  readonly #tooLongReply: string;
  readonly #logLines: boolean;
  readonly #openedAt = Date.now();
  #buffer = new Uint8Array(MIN_READ_BUFFER);
  #phase: Phase = "starting";
  #outcome: ConnectionOutcome = "peer_closed";
  #lines = 0;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set once the server starts draining; checked at every line boundary. */
  #draining = false;
  /** The final line and FIN, when closing began. Never rejects. */
  #closing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    conn: LineConn,
    config: ConnectionConfig,
    options: {
      protocol: LineProtocol;
      admit: () => boolean | Promise<boolean>;
    },
  ) {
    this.#conn = conn;
    this.#config = config;
    this.#protocol = options.protocol;
    this.#admit = options.admit;
    this.#decoder = new LineDecoder(config.maxLineBytes);
    this.#tooLongReply = ServerReplies.lineTooLong(config.maxLineBytes) + CRLF;
    this.#logLines = config.logger.isEnabledFor("debug");
    this.peer = formatAddr(conn.remoteAddr);
  }

  /** True once the connection holds a slot of the server's limit (refused ones never do). */
  get admitted(): boolean {
    return this.#admitted;
  }

  /** How the connection ended (meaningful once {@linkcode run} has resolved). */
  get outcome(): ConnectionOutcome {
    return this.#outcome;
  }

  /** Request lines answered so far. */
  get lines(): number {
    return this.#lines;
  }

  /** Serves the connection to its end. Never rejects: errors end only this connection. */
  async run(): Promise<ConnectionOutcome> {
    const { logger, metrics } = this.#config;
    try {
      await this.#serve();
      if (this.#phase === "closing") {
        await this.#closing;
        await this.#discardUntilEof();
      }
    } catch (error) {
      this.#onError(error);
    } finally {
      this.#phase = "closed";
      this.#config.idle?.remove(this);
      clearTimeout(this.#lingerTimer);
      this.#closeSocket();
    }
    metrics.connectionsClosed[this.#outcome]++;
    if (this.#admitted) {
      logger.info(
        "connection closed {peer} after {durationMs} ms, {lines} lines, {reason}",
        {
          peer: this.peer,
          durationMs: Date.now() - this.#openedAt,
          lines: this.#lines,
          reason: this.#outcome,
        },
      );
    }
    return this.#outcome;
  }

  /**
   * The server is draining: a connection idle between lines says goodbye
   * now; one mid-line or answering finishes that first (checked in the loop).
   */
  beginShutdown(): void {
    this.#draining = true;
    if (this.#phase === "reading" && !this.#decoder.hasPartialLine) {
      this.#beginClosing("shutdown", ServerReplies.shuttingDown);
    }
  }

  /**
   * Closes at once (shutdown deadline or abort), with a best-effort
   * shutdown line when nothing else is being written.
   */
  async forceClose(): Promise<void> {
    if (this.#closed) return;
    if (this.#phase !== "closing") {
      this.#outcome = "forced";
      if (this.#phase === "reading") {
        this.#phase = "closing";
        await settleWithin(
          this.#write(ServerReplies.shuttingDown + CRLF),
          FORCED_LINE_WAIT_MS,
        );
      }
    }
    this.#closeSocket();
  }

  async #serve(): Promise<void> {
    const admitted = this.#admit();
    this.#admitted = typeof admitted === "boolean" ? admitted : await admitted;
    // Force-closed while waiting for a slot (abort, shutdown deadline).
    if (this.#closed) return;
    if (!this.#admitted) {
      this.#config.logger.debug("connection refused {peer}: server full", {
        peer: this.peer,
      });
      this.#beginClosing("refused_busy", ServerReplies.tooManyConnections);
      return;
    }
    this.#config.logger.info("connection opened {peer}", { peer: this.peer });
    this.#config.idle?.touch(this, this.#openedAt);
    const session = this.#protocol.createSession();
    if (session.greeting !== undefined) {
      await this.#write(session.greeting + CRLF);
    }
    const frames: Frame[] = [];
    while (true) {
      if (this.#phase === "closing" || this.#closed) return;
      if (this.#draining && !this.#decoder.hasPartialLine) {
        this.#beginClosing("shutdown", ServerReplies.shuttingDown);
        return;
      }
      this.#phase = "reading";
      const n = await this.#conn.read(this.#buffer);
      // Closing began from outside (idle timeout, shutdown, force) while we waited.
      if (this.#phase !== "reading") return;
      this.#phase = "busy";
      if (n === null) {
        // The client half-closed: answer a final unterminated line, then close.
        this.#decoder.finish(frames);
        const { replies, fault } = await this.#answer(session, frames);
        if (fault !== undefined) return this.#fail(fault.error, replies);
        if (session.ended) return this.#beginClosing("quit", replies);
        if (this.#draining) {
          return this.#beginClosing(
            "shutdown",
            replies + ServerReplies.shuttingDown,
          );
        }
        return this.#beginClosing("peer_closed", replies);
      }
      // Any byte, even part of a line, restarts the idle clock.
      this.#config.idle?.touch(this);
      this.#config.metrics.bytesReceived += n;
      this.#decoder.push(this.#buffer.subarray(0, n), frames);
      this.#resizeBuffer(n);
      if (frames.length === 0) continue;
      const { replies, fault } = await this.#answer(session, frames);
      if (fault !== undefined) return this.#fail(fault.error, replies);
      if (session.ended) return this.#beginClosing("quit", replies);
      await this.#write(replies);
    }
  }

  /**
   * Answers every frame in order; stops after a reply that ends the session.
   * If the session throws, the replies before it are kept (they are owed to
   * the client) and the error is returned for the caller to close on.
   */
  async #answer(
    session: LineSession,
    frames: Frame[],
  ): Promise<{ replies: string; fault?: { error: unknown } }> {
    let replies = "";
    let answered = 0;
    let fault: { error: unknown } | undefined;
    let sliceStart = Date.now();
    for (const frame of frames) {
      if (frame === LINE_TOO_LONG) {
        this.#config.metrics.errors.line_too_long++;
        replies += this.#tooLongReply;
        answered++;
        continue;
      }
      if (this.#logLines) {
        this.#config.logger.debug("line from {peer}: {line}", {
          peer: this.peer,
          line: frame,
        });
      }
      try {
        const reply = session.reply(frame);
        replies += (typeof reply === "string" ? reply : await reply) + CRLF;
      } catch (error) {
        fault = { error };
        break;
      }
      answered++;
      if (session.ended) break;
      // Fairness: a batch of heavy lines (say, products of thousands of
      // numbers) must not hold the event loop while other clients wait. The
      // clock (Date.now: V8's own, no runtime call, unlike performance.now)
      // is read only every 16 lines, or after a long one, to keep the cost
      // off the hot path of small pipelined lines.
      if ((answered & 15) === 0 || frame.length > 256) {
        const now = Date.now();
        if (now - sliceStart >= TIME_SLICE_MS) {
          await yieldToEventLoop();
          sliceStart = Date.now();
        }
      }
    }
    frames.length = 0;
    this.#lines += answered;
    this.#config.metrics.linesTotal += answered;
    return fault === undefined ? { replies } : { replies, fault };
  }

  /** A session threw: log it with its stack, deliver the replies owed so far, close. */
  #fail(error: unknown, replies: string): void {
    this.#logFault(error);
    this.#beginClosing("fault", replies);
  }

  /**
   * Sends the final text (replies and/or a server line, CRLF added when it
   * lacks one) and a FIN, then lets {@linkcode run} drop input until the
   * client closes or the linger time ends.
   */
  #beginClosing(outcome: ConnectionOutcome, finalText?: string): void {
    this.#phase = "closing";
    this.#outcome = outcome;
    this.#config.idle?.remove(this);
    const text =
      finalText === undefined || finalText === "" || finalText.endsWith(CRLF)
        ? finalText
        : finalText + CRLF;
    this.#closing = (async () => {
      try {
        if (text) await this.#write(text);
        await this.#conn.closeWrite();
      } catch {
        // The peer is gone or we were forced closed: nothing left to say.
        this.#closeSocket();
        return;
      }
      this.#lingerTimer = setTimeout(
        () => this.#closeSocket(),
        this.#config.lingerMs,
      );
    })();
  }

  async #discardUntilEof(): Promise<void> {
    while (!this.#closed) {
      if (await this.#conn.read(this.#buffer) === null) return;
    }
  }

  async #write(text: string): Promise<void> {
    // A UTF-16 code unit needs at most 3 UTF-8 bytes.
    const pooled = text.length * 3 <= WRITE_BUFFER_BYTES
      ? takeWriteBuffer()
      : undefined;
    try {
      const bytes = pooled === undefined
        ? encoder.encode(text)
        : pooled.subarray(0, encoder.encodeInto(text, pooled).written);
      let offset = 0;
      while (offset < bytes.length) {
        offset += await this.#conn.write(bytes.subarray(offset));
      }
      this.#config.metrics.bytesSent += bytes.length;
    } finally {
      if (pooled !== undefined) returnWriteBuffer(pooled);
    }
  }

  /** Sizes the read buffer to the traffic: small while idle, larger when reads fill it. */
  #resizeBuffer(lastRead: number) {
    const size = this.#buffer.length;
    if (lastRead === size && size < MAX_READ_BUFFER) {
      this.#buffer = new Uint8Array(Math.min(MAX_READ_BUFFER, size * 4));
    } else if (size > MIN_READ_BUFFER && lastRead <= size / 8) {
      this.#buffer = new Uint8Array(Math.max(MIN_READ_BUFFER, size / 4));
    }
  }

  /** Called by the server's idle tracker: nothing was received for the idle timeout. */
  onIdleTimeout(): void {
    if (this.#phase === "closing" || this.#phase === "closed") return;
    this.#config.metrics.errors.idle_timeout++;
    if (this.#phase === "reading") {
      this.#beginClosing("idle_timeout", ServerReplies.idleTimeout);
    } else {
      // A write is stuck behind a client that does not read: nothing more
      // can be delivered in order, so close without waiting for it.
      this.#outcome = "idle_timeout";
      this.#closeSocket();
    }
  }

  #onError(error: unknown) {
    // An operation interrupted by our own close, or a failure after the
    // final line, changes nothing about how the connection ended.
    if (this.#closed || this.#phase === "closing") return;
    const { logger, metrics } = this.#config;
    if (isPeerGone(error) || error instanceof Deno.errors.InvalidData) {
      this.#outcome = "reset";
      metrics.errors.reset++;
      logger.debug("connection {peer} lost: {error}", {
        peer: this.peer,
        error: String(error),
      });
    } else {
      this.#logFault(error);
    }
  }

  /** An unexpected exception: counted, logged with its stack; it ends this connection only. */
  #logFault(error: unknown) {
    this.#outcome = "fault";
    this.#config.metrics.errors.handler_fault++;
    this.#config.logger.error("connection {peer} failed: {error}", {
      peer: this.peer,
      error: errorWithStack(error),
    });
  }

  #closeSocket() {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}

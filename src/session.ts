/**
 * The seam between the server core and a line protocol: what a protocol
 * implements ({@linkcode LineProtocol}, {@linkcode LineSession}) and what the
 * server hands it for each connection ({@linkcode LineConnection}).
 *
 * @module
 */
import type { FramingOptions } from "./framing.ts";

/**
 * Why a connection ended, as logs, metrics and
 * {@linkcode LineSession.onClose} name it:
 * - `quit`: the session ended it (a `quit` command, or
 *   {@linkcode LineConnection.close});
 * - `peer_closed`: the client closed its side;
 * - `reset`: the client vanished or reset the connection;
 * - `idle_timeout`, `line_timeout`: the client was silent, or took too long
 *   to finish a line;
 * - `shutdown`: the server drained gracefully; `forced`: it closed the
 *   connection at its shutdown deadline;
 * - `slow_consumer`: the client did not read what was sent to it;
 * - `fault`: the session threw, or returned what cannot be sent;
 * - `reply_timeout`: a reply promise did not settle within the server's
 *   reply timeout.
 */
export type CloseReason =
  | "quit"
  | "peer_closed"
  | "reset"
  | "idle_timeout"
  | "line_timeout"
  | "shutdown"
  | "forced"
  | "slow_consumer"
  | "fault"
  | "reply_timeout";

/**
 * What a session answers to one request line: one line, several lines (in
 * order), or nothing (`undefined` or an empty array). Lines are given
 * without CRLF; the server adds it. A line must not contain LF (it would
 * reach the client as two lines); anything else (`null`, a number, a line
 * with LF) is a fault of that connection: it is logged with what was
 * returned and the connection is closed (outcome `fault`).
 */
export type Reply = string | readonly string[] | undefined | void;

/** Where a client connects from. */
export interface PeerAddress {
  /** The client's IP address (from the PROXY header when there is one). */
  readonly hostname: string;
  /** The client's port (from the PROXY header when there is one). */
  readonly port: number;
}

/**
 * One connection as its session sees it. The server keeps it only while the
 * connection is open; once closed, every method is a harmless no-op, so a
 * protocol may hold on to it (in a room, say) until its
 * {@linkcode LineSession.onClose} runs.
 */
export interface LineConnection {
  /** 1 for the first connection the server admitted, 2 for the next, and so on. */
  readonly id: number;
  /** The client's address (the real client's, behind a PROXY header). */
  readonly peer: PeerAddress;
  /** True once the connection is closing or closed: sending does nothing. */
  readonly closed: boolean;
  /**
   * True once the server has begun a graceful shutdown: every connection
   * will be closed with `<server shutting down>` at its next line boundary.
   */
  readonly draining: boolean;
  /**
   * Sends lines to this client now, after every line already sent or
   * answered, each line whole. It never blocks: the lines are queued. If
   * everything waiting for the client (replies and sent lines alike) passes
   * the protocol's {@linkcode LineProtocol.maxQueuedBytes}, the connection
   * is closed as `slow_consumer` (and false is returned).
   *
   * Throws a `TypeError`, sending none of `lines`, if a line would not
   * arrive as one line: with line framing, if it contains CR or LF (a
   * client splitting lines on either would see a line the server did not
   * send); with another framing, if it contains the terminator.
   *
   * @returns false once 64 KiB or more wait for the client, so that a
   * protocol streaming many lines should wait for {@linkcode drained} before
   * sending more (as with a Node.js stream's `write`); true otherwise.
   */
  send(...lines: string[]): boolean;
  /** Resolves when everything queued for this client has been handed to the system (or the connection closed). */
  drained(): Promise<void>;
  /**
   * Asks for the next `length` bytes from the client as one raw frame,
   * whatever they contain, delivered to {@linkcode LineSession.replyBytes};
   * framing goes back to lines after it (a memcached data block). At most
   * the protocol's frame limit; throws a `RangeError` beyond it.
   */
  readBytes(length: number): void;
  /**
   * Closes the connection (reason `quit`) after everything queued so far,
   * with `finalLine` last when given. Called during `reply`, it takes effect
   * after that reply's own lines. Throws a `TypeError` for a final line that
   * contains LF.
   */
  close(finalLine?: string): void;
}

/** What a session's `reply` receives besides the line. */
export interface ReplyContext {
  /**
   * Aborted when the answer is no longer wanted: the reply took longer than
   * the server's reply timeout, or the connection closed (reset, shutdown
   * deadline). A reply that returns a promise should stop its work then.
   */
  readonly signal: AbortSignal;
}

/**
 * One connection's protocol state. The server calls {@linkcode reply} once
 * per framed request line, in order, and writes what it returns, each line
 * followed by CRLF.
 */
export interface LineSession {
  /** The first line sent when the connection opens, if any. */
  readonly greeting?: string;
  /**
   * Answers one request line (already framed: terminator and trailing
   * whitespace removed). It may return a promise; the connection reads no
   * further until it settles, so replies keep the order of the requests,
   * and `context.signal` aborts when the answer is no longer wanted (see
   * {@linkcode ReplyContext}; the server always passes a context). A thrown error (or rejection) closes this
   * connection only, and is logged.
   */
  reply(line: string, context?: ReplyContext): Reply | Promise<Reply>;
  /**
   * Answers a raw frame asked for with {@linkcode LineConnection.readBytes},
   * as `reply` answers a line. Needed only by a protocol that asks for one.
   */
  replyBytes?(
    bytes: Uint8Array,
    context?: ReplyContext,
  ): Reply | Promise<Reply>;
  /** Once true (e.g. after `quit`), the connection closes after this reply. */
  readonly ended?: boolean;
  /**
   * Called exactly once when the connection has ended, whatever ended it,
   * with the reason. An error thrown here is logged and goes no further.
   */
  onClose?(reason: CloseReason): void;
}

/** A line protocol: makes a fresh session for every admitted connection. */
export interface LineProtocol {
  /** A short name for logs, e.g. `calc`. */
  readonly name: string;
  /** Called once per admitted connection, before its greeting. */
  createSession(connection: LineConnection): LineSession;
  /**
   * How many bytes may wait unread for a client when
   * {@linkcode LineConnection.send} queues more: past it the client is
   * disconnected as `slow_consumer`. Everything waiting counts, replies
   * included; but replies alone never disconnect anyone (a client that does
   * not read its replies is simply not read from until it does). Default
   * 1 MiB; raise it for a protocol that sends larger messages at once.
   */
  readonly maxQueuedBytes?: number;
  /**
   * How this protocol cuts the byte stream into frames, both ways: its
   * terminator ends every request frame and every line written to the
   * client, and its `maxFrameBytes` replaces the server's line limit.
   * Default: lines ended by LF (CRLF accepted; CRLF written).
   */
  readonly framing?: FramingOptions;
}

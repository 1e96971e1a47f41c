/**
 * The seam between the server core and a line protocol: what a protocol
 * implements ({@linkcode LineProtocol}, {@linkcode LineSession}) and what the
 * server hands it for each connection ({@linkcode LineConnection}).
 *
 * @module
 */

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
 * - `fault`: the session threw.
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
  | "fault";

/**
 * What a session answers to one request line: one line, several lines (in
 * order), or nothing (`undefined` or an empty array). Lines are given
 * without CRLF; the server adds it.
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
   * answered, each line whole. It never blocks: the lines are queued. If the
   * client lets more than the protocol's {@linkcode LineProtocol.maxQueuedBytes}
   * pile up unread, the connection is closed as `slow_consumer` (and false
   * is returned).
   *
   * @returns false once the queue is long enough that a protocol streaming
   * many lines should wait for {@linkcode drained} before sending more (as
   * with a Node.js stream's `write`); true otherwise.
   */
  send(...lines: string[]): boolean;
  /** Resolves when this client has read what was queued for it (or the connection closed). */
  drained(): Promise<void>;
  /**
   * Closes the connection (reason `quit`) after everything queued so far,
   * with `finalLine` last when given.
   */
  close(finalLine?: string): void;
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
   * further until it settles, so replies keep the order of the requests. A
   * thrown error (or rejection) closes this connection only, and is logged.
   */
  reply(line: string): Reply | Promise<Reply>;
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
   * 1 MiB; raise it for a protocol whose replies are large.
   */
  readonly maxQueuedBytes?: number;
}

/**
 * The seam between the server core and a line protocol.
 *
 * @module
 */

/**
 * One connection's protocol state. The server calls {@linkcode reply} once
 * per framed request line, in order, and writes the result followed by CRLF.
 */
export interface LineSession {
  /** The first line sent when the connection opens, or `undefined` for none. */
  readonly greeting: string | undefined;
  /**
   * Answers one request line (already framed: terminator and trailing
   * whitespace removed) with exactly one reply line, without CRLF. It may
   * return a promise; the connection reads no further until it settles.
   * A thrown error closes this connection only, and is logged.
   */
  reply(line: string): string | Promise<string>;
  /** Becomes true when the session is over (e.g. after `quit`): the connection closes after this reply. */
  readonly ended: boolean;
}

/** A line protocol: makes a fresh session for every connection. */
export interface LineProtocol {
  /** A short name for logs, e.g. `calc`. */
  readonly name: string;
  /** Called once per accepted connection. */
  createSession(): LineSession;
}

/**
 * The transport seam: the parts of `Deno.Conn` and `Deno.Listener` the server
 * core uses. Plain TCP connections from `Deno.listen` fit as they are; TLS
 * connections (see tls_listener.ts) are adapted to them.
 *
 * @module
 */

/** A byte stream to one client. */
export interface LineConn {
  readonly remoteAddr: Deno.Addr;
  /** Reads into `buffer`; resolves to the byte count, or null at the client's FIN. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some or all of `bytes`; resolves to how many were written. */
  write(bytes: Uint8Array): Promise<number>;
  /** Sends FIN after everything written so far. */
  closeWrite(): Promise<void>;
  /** Closes both directions at once; pending operations reject. */
  close(): void;
}

/** A source of connections. */
export interface LineListener<C extends LineConn = LineConn> {
  readonly addr: Deno.Addr;
  /** The next connection; rejects with `Deno.errors.BadResource` once closed. */
  accept(): Promise<C>;
  close(): void;
}

/** Errors that mean the peer went away (or we closed the socket under an operation). */
export function isPeerGone(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.UnexpectedEof ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.TimedOut;
}

/** `HOST:PORT` (IPv6 in brackets), for logs. */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`;
  }
  return "path" in addr ? addr.path : String(addr.transport);
}

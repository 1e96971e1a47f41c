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

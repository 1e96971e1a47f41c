/**
 * TLS for lineserver, on `node:tls`.
 *
 * Why not `Deno.listenTls`: in Deno 2.9, closing a `Deno.TlsConn` whose
 * handshake has not finished does not close its TCP socket, so a client that
 * connects and stays silent could never be dropped; every stalled handshake
 * would keep a descriptor forever. Here the raw TCP socket is ours to
 * destroy when the handshake misses its deadline.
 *
 * The listener hands out connections only once their handshake is done, as
 * the same {@linkcode LineConn} the plain TCP path uses.
 *
 * @module
 */
import tls from "node:tls";
import type { Socket } from "node:net";
import type { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { LineConn, LineListener } from "./transport.ts";

/** Options of {@linkcode listenTls}. */
export interface TlsListenOptions {
  hostname: string;
  port: number;
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** A handshake not finished after this long is dropped (its socket destroyed). */
  handshakeTimeoutMs: number;
  /** Called for every handshake that failed or timed out. */
  onHandshakeFailure?: (peer: string, reason: string) => void;
  /** Called for an error of the listening socket itself. */
  onServerError?: (error: Error) => void;
}

/**
 * Throws a one-line error if `cert` or `key` is not usable PEM, or if the
 * key does not belong to the certificate.
 */
export function validateTlsPair(cert: string, key: string): void {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new Error(
      `Cannot parse the certificate: ${(error as Error).message}`,
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new Error(
      `Cannot parse the private key: ${(error as Error).message}`,
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new Error("The private key does not match the certificate");
  }
}

function peerOf(socket: Socket): string {
  const host = socket.remoteAddress ?? "unknown";
  return `${host.includes(":") ? `[${host}]` : host}:${socket.remotePort}`;
}

/** Maps a node socket error to the Deno error class the connection handler knows. */
function asDenoError(error: Error & { code?: string }): Error {
  if (error.code === "EPIPE") return new Deno.errors.BrokenPipe(error.message);
  return new Deno.errors.ConnectionReset(error.message);
}

/**
 * A TLS socket seen through the small `Deno.Conn`-like surface that
 * {@linkcode LineConn} describes: pull-style reads into the caller's buffer,
 * writes that resolve once flushed (so backpressure holds), FIN, close.
 */
class TlsSocketConn implements LineConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly #socket: tls.TLSSocket;
  /** Bytes read from the socket that did not fit the caller's buffer. */
  #leftover: Uint8Array | null = null;
  #ended = false;
  #closed = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  /** Rejects the write in flight, if any, when the connection is closed. */
  #abortWrite: ((error: Error) => void) | null = null;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "",
      port: socket.remotePort ?? 0,
    };
    const wake = () => {
      const resolve = this.#wake;
      this.#wake = null;
      resolve?.();
    };
    socket.on("readable", wake);
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (error) => {
      this.#error ??= asDenoError(error);
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#closed) {
        throw new Deno.errors.Interrupted("The connection was closed");
      }
      if (this.#leftover === null) {
        const chunk: Buffer | null = this.#socket.read();
        if (chunk !== null) {
          this.#leftover = new Uint8Array(
            chunk.buffer,
            chunk.byteOffset,
            chunk.length,
          );
        }
      }
      if (this.#leftover !== null) {
        const n = Math.min(buffer.length, this.#leftover.length);
        buffer.set(this.#leftover.subarray(0, n));
        this.#leftover = n === this.#leftover.length
          ? null
          : this.#leftover.subarray(n);
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(
        new Deno.errors.Interrupted("The connection was closed"),
      );
    }
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#abortWrite = reject;
      this.#socket.write(bytes, (error) => {
        this.#abortWrite = null;
        if (error) reject(asDenoError(error));
        else resolve(bytes.length);
      });
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#abortWrite?.(
      new Deno.errors.Interrupted("The connection was closed"),
    );
    this.#abortWrite = null;
    const resolve = this.#wake;
    this.#wake = null;
    resolve?.();
  }
}

/** A TLS listener with the `accept()`/`close()` surface of `Deno.Listener`. */
class TlsListener implements LineListener {
  readonly addr: Deno.NetAddr;
  readonly #server: tls.Server;
  readonly #ready: LineConn[] = [];
  readonly #waiting: {
    resolve: (c: LineConn) => void;
    reject: (e: Error) => void;
  }[] = [];
  #closed = false;

  constructor(server: tls.Server, addr: Deno.NetAddr) {
    this.#server = server;
    this.addr = addr;
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      const conn = new TlsSocketConn(socket);
      if (this.#closed) return conn.close();
      const waiter = this.#waiting.shift();
      if (waiter) waiter.resolve(conn);
      else this.#ready.push(conn);
    });
  }

  accept(): Promise<LineConn> {
    const conn = this.#ready.shift();
    if (conn) return Promise.resolve(conn);
    if (this.#closed) {
      return Promise.reject(
        new Deno.errors.BadResource("Listener has been closed"),
      );
    }
    return new Promise((resolve, reject) =>
      this.#waiting.push({ resolve, reject })
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const conn of this.#ready.splice(0)) conn.close();
    for (const waiter of this.#waiting.splice(0)) {
      waiter.reject(new Deno.errors.BadResource("Listener has been closed"));
    }
  }
}

/**
 * Binds a TLS listener. Rejects with `Deno.errors.AddrInUse` when the port
 * is taken.
 *
 * @example
 * ```ts ignore
 * const listener = await listenTls({ hostname: "127.0.0.1", port: 0, cert, key, handshakeTimeoutMs: 10_000 });
 * const conn = await listener.accept(); // handshake already done
 * ```
 */
export function listenTls(options: TlsListenOptions): Promise<LineListener> {
  validateTlsPair(options.cert, options.key);
  // allowHalfOpen: a client's FIN must not close our side before its final
  // line is answered.
  const server = tls.createServer({
    cert: options.cert,
    key: options.key,
    allowHalfOpen: true,
  });
  // The deadline is kept on the raw TCP socket, keyed by the peer address,
  // so a silent or stalled client is destroyed after handshakeTimeoutMs.
  const pending = new Map<string, ReturnType<typeof setTimeout>>();
  server.on("connection", (raw: Socket) => {
    raw.setNoDelay(true);
    raw.setKeepAlive(true);
    const peer = peerOf(raw);
    const timer = setTimeout(() => {
      pending.delete(peer);
      options.onHandshakeFailure?.(peer, "handshake timed out");
      raw.destroy();
    }, options.handshakeTimeoutMs);
    pending.set(peer, timer);
    raw.once("close", () => {
      clearTimeout(timer);
      pending.delete(peer);
    });
  });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    const peer = peerOf(socket);
    clearTimeout(pending.get(peer));
    pending.delete(peer);
  });
  server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
    options.onHandshakeFailure?.(peerOf(socket), error.message);
    socket.destroy();
  });
  return new Promise((resolve, reject) => {
    const onError = (error: Error & { code?: string }) => {
      reject(
        error.code === "EADDRINUSE"
          ? new Deno.errors.AddrInUse(error.message)
          : error,
      );
    };
    server.once("error", onError);
    server.listen({ host: options.hostname, port: options.port }, () => {
      server.off("error", onError);
      // Later server errors (e.g. out of descriptors) must not crash the process.
      server.on("error", (error: Error) => options.onServerError?.(error));
      const address = server.address();
      if (address === null || typeof address === "string") {
        reject(new Error("Cannot read the TLS listener's address"));
        return;
      }
      resolve(
        new TlsListener(server, {
          transport: "tcp",
          hostname: address.address,
          port: address.port,
        }),
      );
    });
  });
}

/**
 * The transport: a TCP listener on `node:net` whose accepted sockets are an
 * async iterable, the one thing the server's accept loop consumes, and the
 * settings its accepted sockets are made with.
 *
 * Why `node:net` rather than `Deno.listen`: under a saturating load of
 * 1000 connections, `Deno.Conn` reads are served unevenly (a measured
 * median reply of 3 ms next to waits of 1.6 s, even for a bare echo
 * server), while Deno's `node:net` layer reads and writes in bounded
 * batches per socket and tick, the way libuv does, and serves every
 * connection in turn (see docs/performance.md for the figures). TLS uses
 * the same sockets (see tls.ts), so one connection task serves both.
 *
 * Accepted plain sockets read into one buffer shared by every connection
 * (see socket_reading.ts).
 *
 * @module
 */
import net from "node:net";
import type { Logger } from "@logtape/logtape";
import { lendReadsOfAcceptedSockets } from "./socket_reading.ts";
import type { AcceptErrorKind, ServerMetrics } from "./metrics.ts";

/** Where a listener is bound. */
export interface ListenAddress {
  hostname: string;
  port: number;
}

/** Options of {@linkcode TcpListener.listen}. */
export interface ListenOptions extends ListenAddress {
  /** Share the port with other listeners (Linux `SO_REUSEPORT`). */
  reusePort?: boolean;
  /**
   * Read accepted sockets into the shared read buffer (see the module
   * documentation). Off for sockets that will carry TLS: the TLS layer reads
   * the socket itself. Default true.
   */
  sharedReadBuffer?: boolean;
  logger: Logger;
  /** Where failed accepts are counted. */
  metrics: ServerMetrics;
}

/**
 * How often a listener that has accepted nothing lately makes sure it still
 * accepts. Deno 2.9's `node:net` layer stops accepting for good once an
 * accept fails with EMFILE (out of file descriptors), and reports nothing;
 * listening again on the same handle resumes it. The check costs a few
 * microseconds, so it runs often enough that a client waits at most about
 * this long once descriptors are free again.
 */
const ACCEPT_CHECK_INTERVAL_MS = 250;
/** The accept queue's length (Node's default). */
const BACKLOG = 511;

/**
 * Accepted sockets, in order, until {@linkcode close}. Sockets are handed
 * over paused, with half-open allowed (a client's FIN does not close our
 * side before its last line is answered).
 */
export class TcpListener implements AsyncIterable<net.Socket> {
  /** The bound address, with the real port. */
  readonly addr: ListenAddress;
  readonly #options: ListenOptions;
  readonly #server: net.Server;
  /** Accepted, not yet taken by the iterator. */
  readonly #ready: net.Socket[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  #lastAccept = Date.now();
  #acceptCheck: ReturnType<typeof setInterval> | undefined;
  /** Descriptors ran out and have not been seen free since. */
  #exhausted = false;

  private constructor(
    server: net.Server,
    addr: ListenAddress,
    options: ListenOptions,
  ) {
    this.#server = server;
    this.addr = addr;
    this.#options = options;
    this.#watch(server);
    this.#acceptCheck = setInterval(
      this.#keepAccepting,
      ACCEPT_CHECK_INTERVAL_MS,
    );
    Deno.unrefTimer(this.#acceptCheck);
  }

  /** Binds a listener; rejects with `Deno.errors.AddrInUse` when the port is taken. */
  static async listen(options: ListenOptions): Promise<TcpListener> {
    const server = await bind(options);
    const address = server.address() as net.AddressInfo;
    return new TcpListener(server, {
      hostname: address.address,
      port: address.port,
    }, options);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<net.Socket> {
    while (true) {
      const socket = this.#ready.shift();
      if (socket !== undefined) {
        yield socket;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Stops accepting at once. Open connections are not touched. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#acceptCheck);
    this.#server.close();
    for (const socket of this.#ready.splice(0)) socket.destroy();
    this.#wakeIterator();
  }

  #watch(server: net.Server) {
    server.on("connection", (socket: net.Socket) => {
      this.#lastAccept = Date.now();
      if (this.#closed) return void socket.destroy();
      this.#ready.push(socket);
      this.#wakeIterator();
    });
    // A listening server's errors are accept failures; none may end it.
    server.on("error", (error: Error & { code?: string }) => {
      const kind = classifyAcceptError(error);
      this.#options.metrics.acceptFailed(kind);
      this.#options.logger.warn("accept failed: {error}", {
        error: String(error),
      });
    });
  }

  #wakeIterator() {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * Runs while no connection has arrived for a while: when descriptors
   * have run out, says so (once per episode); otherwise re-arms the
   * listener, which costs nothing when it was fine.
   */
  #keepAccepting = () => {
    if (this.#closed) return;
    if (Date.now() - this.#lastAccept < ACCEPT_CHECK_INTERVAL_MS) return;
    const { logger, metrics } = this.#options;
    if (outOfDescriptors()) {
      if (!this.#exhausted) {
        this.#exhausted = true;
        metrics.acceptFailed("exhausted");
        logger.warn(
          "accept failed: out of file descriptors; trying again every {ms} ms",
          { ms: ACCEPT_CHECK_INTERVAL_MS },
        );
      }
      return;
    }
    this.#rearm();
    if (this.#exhausted) {
      this.#exhausted = false;
      logger.warn("accept recovered: file descriptors are available again");
    }
  };

  /**
   * Listening anew on the same handle re-arms a stalled listener and keeps
   * the connections waiting in its queue. (The handle is internal to the
   * `node:net` layer; where it is missing, nothing is done.)
   */
  #rearm() {
    const handle = (this.#server as unknown as {
      _handle?: { listen?: (backlog: number) => number };
    })._handle;
    if (typeof handle?.listen === "function") handle.listen(BACKLOG);
  }
}

/** True when this process cannot open one more socket (EMFILE or ENFILE). */
function outOfDescriptors(): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: 0 }).close();
    return false;
  } catch (error) {
    return /os error (23|24)\b/.test(String(error));
  }
}

function bind(options: ListenOptions): Promise<net.Server> {
  const server = net.createServer({
    allowHalfOpen: true,
    pauseOnConnect: true,
  });
  if (options.sharedReadBuffer ?? true) lendReadsOfAcceptedSockets(server);
  return new Promise((resolve, reject) => {
    const onError = (error: Error & { code?: string }) => {
      reject(
        error.code === "EADDRINUSE"
          ? new Deno.errors.AddrInUse(error.message)
          : error,
      );
    };
    server.once("error", onError);
    server.listen({
      host: options.hostname,
      port: options.port,
      backlog: BACKLOG,
      reusePort: options.reusePort ?? false,
    }, () => {
      server.off("error", onError);
      resolve(server);
    });
  });
}

/**
 * Why an accept failed: `peer_reset` concerns one connection only (the
 * client reset it while it waited in the queue); `exhausted` is the process
 * or system running out of descriptors or memory; anything else is `other`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { classifyAcceptError } from "./transport.ts";
 * assert.equal(classifyAcceptError(Object.assign(new Error("x"), { code: "ECONNABORTED" })), "peer_reset");
 * assert.equal(classifyAcceptError(Object.assign(new Error("x"), { code: "EMFILE" })), "exhausted");
 * ```
 */
export function classifyAcceptError(
  error: Error & { code?: string },
): AcceptErrorKind {
  switch (error.code) {
    case "ECONNABORTED":
    case "ECONNRESET":
    case "ENOTCONN":
      return "peer_reset";
    case "EMFILE":
    case "ENFILE":
    case "ENOBUFS":
    case "ENOMEM":
      return "exhausted";
    default:
      return "other";
  }
}

/** `HOST:PORT` (IPv6 in brackets), for logs. */
export function formatAddr(addr: ListenAddress): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

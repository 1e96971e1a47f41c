/**
 * The server core: a listener loop that only accepts and hands off, a set of
 * connection tasks, one connection limit, and a graceful shutdown that reads
 * as its own specification (close the listener, say goodbye to idle
 * connections, wait for busy ones until a deadline, close the rest).
 *
 * @module
 */
import { getLogger, type Logger } from "@logtape/logtape";
import type { LineProtocol } from "./session.ts";
import { calculatorProtocol } from "./calculator.ts";
import { acceptConnections } from "./accept.ts";
import { Connection, type ConnectionConfig } from "./connection.ts";
import { ConnectionLimit } from "./connection_limit.ts";
import { listenTls } from "./tls_listener.ts";
import { IdleTracker } from "./idle_tracker.ts";
import { errorWithStack } from "./logging.ts";
import { settleWithin } from "./deadline.ts";
import type { LineConn, LineListener } from "./transport.ts";
import { type ConnectionOutcome, ServerMetrics } from "./metrics.ts";

/** Options of {@linkcode startServer}; every field has the CLI's default. */
export interface ServerOptions {
  /** Interface to bind. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to bind; 0 picks a free one (see {@linkcode LineServer.addr}). Default 8080. */
  port?: number;
  /** The protocol spoken on every connection. Default: the calculator. */
  protocol?: LineProtocol;
  /** Longest request line in raw bytes, terminator excluded. Default 65536. */
  maxLineBytes?: number;
  /** Most connections served at once; more are refused. Default 10000. */
  maxConnections?: number;
  /** Close connections that sent nothing for this long; 0 disables. Default 300000. */
  idleTimeoutMs?: number;
  /** How long {@linkcode LineServer.shutdown} waits before closing by force. Default 2000. */
  shutdownTimeoutMs?: number;
  /** Serve TLS with this PEM certificate chain and key. */
  tls?: { cert: string; key: string };
  /** Share the port with other listeners (Linux `SO_REUSEPORT`). Default false. */
  reusePort?: boolean;
  /** Where connection events are logged. Default: LogTape category `lineserver`. */
  logger?: Logger;
  /** Counters to update. Default: a fresh {@linkcode ServerMetrics}. */
  metrics?: ServerMetrics;
}

/** What a shutdown did. */
export interface ShutdownSummary {
  /** Connections served (admitted to a slot) since the server started. */
  served: number;
  /** Connections open when shutdown began that closed before the deadline. */
  closedGracefully: number;
  /** Connections closed by force: at the deadline, or by {@linkcode LineServer.abort}. */
  closedByForce: number;
}

/** TLS handshakes that have not finished after this long are dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long a connection that finds the server full waits for a slot before it is refused. */
const ADMISSION_GRACE_MS = 10;
/** After closing by force, how long the drain waits for the tasks to notice. */
const FORCED_CLOSE_GRACE_MS = 1000;
/** How long a closing connection waits for the client's FIN (see ConnectionConfig.lingerMs). */
const LINGER_MS = 500;

/** A running line server. Create it with {@linkcode startServer}. */
export class LineServer {
  /** The bound address, with the real port. */
  readonly addr: Deno.NetAddr;
  /** Live counters (see `GET /metrics`). */
  readonly metrics: ServerMetrics;
  /** The protocol spoken on every connection. */
  readonly protocol: LineProtocol;
  /** Resolves once the server has stopped, by shutdown or abort. */
  readonly finished: Promise<ShutdownSummary>;
  readonly #listener: LineListener;
  readonly #config: ConnectionConfig;
  readonly #limit: ConnectionLimit;
  readonly #shutdownTimeoutMs: number;
  /** Every live connection task, refused ones included; each removes itself when it ends. */
  readonly #connections = new Map<Connection, Promise<ConnectionOutcome>>();
  /** Aborted when accepting must stop (shutdown or abort). */
  readonly #stopAccepting = new AbortController();
  /** Aborted by {@linkcode abort}: cuts a drain short. */
  readonly #abortDrain = new AbortController();
  readonly #acceptLoop: Promise<void>;
  #served = 0;
  #stopping: Promise<ShutdownSummary> | undefined;
  #resolveFinished!: (summary: ShutdownSummary) => void;

  /** @internal Use {@linkcode startServer}. */
  constructor(
    listener: LineListener,
    options: Required<
      Pick<
        ServerOptions,
        | "protocol"
        | "maxLineBytes"
        | "maxConnections"
        | "idleTimeoutMs"
        | "shutdownTimeoutMs"
        | "logger"
        | "metrics"
      >
    >,
  ) {
    this.#listener = listener;
    this.addr = listener.addr as Deno.NetAddr;
    this.protocol = options.protocol;
    this.metrics = options.metrics;
    this.#limit = new ConnectionLimit(options.maxConnections);
    this.#shutdownTimeoutMs = options.shutdownTimeoutMs;
    this.#config = {
      maxLineBytes: options.maxLineBytes,
      idle: options.idleTimeoutMs > 0
        ? new IdleTracker(options.idleTimeoutMs)
        : undefined,
      lingerMs: LINGER_MS,
      metrics: options.metrics,
      logger: options.logger,
    };
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.#acceptLoop = this.#accept();
  }

  /** True from the start of a shutdown on (health checks report `draining`). */
  get draining(): boolean {
    return this.#stopping !== undefined;
  }

  /** Connections currently holding a slot. */
  get activeConnections(): number {
    return this.#limit.active;
  }

  /**
   * Graceful shutdown (SPEC §6): stop accepting, close idle connections with
   * `<server shutting down>`, let busy ones finish their lines, close what is
   * left at the shutdown timeout. Calling it again returns the same result.
   */
  shutdown(): Promise<ShutdownSummary> {
    this.#stopping ??= this.#drain();
    return this.#stopping;
  }

  /** Closes everything at once; also cuts short a shutdown in progress. */
  abort(): Promise<ShutdownSummary> {
    this.#abortDrain.abort();
    return this.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #accept(): Promise<void> {
    const { logger } = this.#config;
    for await (
      const conn of acceptConnections(this.#listener, {
        signal: this.#stopAccepting.signal,
        logger,
        onError: (kind) => this.metrics.acceptErrors[kind]++,
      })
    ) {
      try {
        this.#handOff(conn);
      } catch (error) {
        // Nothing about one connection may end the accept loop.
        logger.error("cannot start a connection task: {error}", {
          error: errorWithStack(error),
        });
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
    }
  }

  /** Starts the task for one accepted connection, or for its refusal when the server is full. */
  #handOff(conn: LineConn) {
    const { metrics } = this.#config;
    if ("setNoDelay" in conn) {
      // A request/reply protocol must not wait for Nagle; keep-alive finds vanished peers.
      const tcp = conn as Deno.TcpConn;
      try {
        tcp.setNoDelay(true);
        tcp.setKeepAlive(true);
      } catch {
        // The peer is already gone; its first read will say so.
      }
    }
    const connection = new Connection(conn, this.#config, {
      protocol: this.protocol,
      admit: () => this.#admit(),
    });
    const task = connection.run().finally(() => {
      this.#connections.delete(connection);
      if (connection.admitted) {
        this.#limit.release();
        metrics.connectionsActive--;
      }
    });
    this.#connections.set(connection, task);
  }

  /**
   * Takes a slot for a new connection. When the server is full, it looks
   * once more after a short grace before refusing: a client that just
   * disconnected may free its slot in the same event-loop turn in which the
   * next client is accepted, and that client should not be turned away.
   */
  #admit(): boolean | Promise<boolean> {
    if (this.#limit.tryAcquire()) return this.#countAdmitted(true);
    return new Promise((resolve) =>
      setTimeout(
        () => resolve(this.#countAdmitted(this.#limit.tryAcquire())),
        ADMISSION_GRACE_MS,
      )
    );
  }

  #countAdmitted(admitted: boolean): boolean {
    if (admitted) {
      this.#served++;
      this.metrics.connectionsActive++;
    } else {
      this.metrics.errors.refused_busy++;
    }
    return admitted;
  }

  async #drain(): Promise<ShutdownSummary> {
    this.metrics.draining = 1;
    await this.#closeListener();
    const open = [...this.#connections.keys()];
    this.#closeIdleConnections(open);
    const drained = await this.#waitForConnections(this.#shutdownTimeoutMs);
    if (!drained) await this.#closeRemainingConnections();
    const outcomes = open.map((c) => c.outcome);
    const forced = outcomes.filter((o) => o === "forced").length;
    const summary: ShutdownSummary = {
      served: this.#served,
      closedGracefully: outcomes.filter((o) => o !== "refused_busy").length -
        forced,
      closedByForce: forced,
    };
    this.#resolveFinished(summary);
    return summary;
  }

  /** Step 1: new connections are refused from now on. */
  async #closeListener() {
    this.#stopAccepting.abort();
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    // Let the pending accept settle, or binding the port again can fail.
    await this.#acceptLoop;
  }

  /** Step 2: idle connections say goodbye now; busy ones at their next line boundary. */
  #closeIdleConnections(open: Connection[]) {
    for (const connection of open) connection.beginShutdown();
  }

  /** Step 3: true when every connection ended before `timeoutMs` (or abort). */
  #waitForConnections(timeoutMs: number): Promise<boolean> {
    const allDone = (async () => {
      while (this.#connections.size > 0) {
        await Promise.allSettled(this.#connections.values());
      }
    })();
    return settleWithin(allDone, timeoutMs, this.#abortDrain.signal);
  }

  /** Step 4: whatever is still open is closed by force. */
  async #closeRemainingConnections() {
    await Promise.all([...this.#connections.keys()].map((c) => c.forceClose()));
    // Closed sockets end their tasks at once; the bound only guarantees
    // that a shutdown never hangs, whatever a transport does.
    await settleWithin(
      Promise.allSettled(this.#connections.values()),
      FORCED_CLOSE_GRACE_MS,
    );
  }
}

/**
 * Binds the listener and starts serving. Rejects (e.g. `Deno.errors.AddrInUse`)
 * if the address cannot be bound.
 *
 * @example
 * ```ts
 * import { startServer, echoProtocol } from "../mod.ts";
 * const server = await startServer({ port: 0, protocol: echoProtocol });
 * console.log(`serving on port ${server.addr.port}`);
 * await server.shutdown();
 * ```
 */
export async function startServer(
  options: ServerOptions = {},
): Promise<LineServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 8080;
  const reusePort = options.reusePort ?? false;
  const logger = options.logger ?? getLogger(["lineserver"]);
  const metrics = options.metrics ?? new ServerMetrics();
  let listener: LineListener;
  if (options.tls) {
    if (reusePort) throw new TypeError("Cannot combine TLS with reusePort");
    listener = await listenTls({
      hostname,
      port,
      cert: options.tls.cert,
      key: options.tls.key,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      onServerError(error) {
        logger.warn("TLS listener error: {error}", { error: String(error) });
      },
      onHandshakeFailure(peer, reason) {
        metrics.errors.handshake_failed++;
        metrics.connectionsClosed.handshake_failed++;
        logger.debug("TLS handshake with {peer} failed: {reason}", {
          peer,
          reason,
        });
      },
    });
  } else {
    listener = Deno.listen({ hostname, port, transport: "tcp", reusePort });
  }
  return new LineServer(listener, {
    protocol: options.protocol ?? calculatorProtocol,
    maxLineBytes: options.maxLineBytes ?? 65536,
    maxConnections: options.maxConnections ?? 10000,
    idleTimeoutMs: options.idleTimeoutMs ?? 300_000,
    shutdownTimeoutMs: options.shutdownTimeoutMs ?? 2000,
    logger,
    metrics,
  });
}

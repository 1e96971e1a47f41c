/**
 * The server core: a listener loop that only accepts and hands off, one task
 * per accepted socket (kept in a set), admission decided in one place, and a
 * graceful shutdown that reads as its own specification (close the
 * listener, say goodbye to idle connections, wait for busy ones until a
 * deadline, close the rest).
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import type { LineProtocol, PeerAddress } from "./session.ts";
import {
  Connection,
  type ConnectionConfig,
  DEFAULT_MAX_QUEUED_BYTES,
} from "./connection.ts";
import { ConnectionLimit } from "./connection_limit.ts";
import { AddressLimit } from "./address_limit.ts";
import { setUpConnection, socketPeer } from "./connection_setup.ts";
import { TimeoutTracker } from "./timeout_tracker.ts";
import { errorWithStack } from "./logging.ts";
import { pause, settleWithin } from "./deadline.ts";
import { formatAddr, TcpListener } from "./transport.ts";
import type { ServerMetrics } from "./metrics.ts";
import { ServerReplies } from "./replies.ts";
import { type ServerOptions, type Settings, settle } from "./server_options.ts";

export type { ServerOptions } from "./server_options.ts";

/** What a shutdown did. */
export interface ShutdownSummary {
  /** Connections served (admitted to a slot) since the server started. */
  served: number;
  /** Of the connections open when shutdown began, those that finished before the deadline. */
  closedGracefully: number;
  /** Connections closed by force: at the deadline, or by {@linkcode LineServer.abort}. */
  closedByForce: number;
}

/** TLS handshakes that have not finished after this long are dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A PROXY header must be complete this long after the connection is accepted. */
const PROXY_HEADER_TIMEOUT_MS = 5_000;
/** How long a connection that finds the server full waits for a slot before it is refused. */
const ADMISSION_GRACE_MS = 10;
/** After closing by force, how long the drain waits for the tasks to notice. */
const FORCED_CLOSE_GRACE_MS = 1000;
/** How long a closing connection waits for the client's FIN (see ConnectionConfig.lingerMs). */
const LINGER_MS = 500;

/** Why a client is turned away. */
type Refusal = "refused_per_ip" | "refused_busy";

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
  readonly #listener: TcpListener;
  readonly #settings: Settings;
  readonly #config: ConnectionConfig;
  readonly #limit: ConnectionLimit;
  readonly #perAddress: AddressLimit | undefined;
  /**
   * The connection tasks: every admitted connection being served, until it
   * ends. (A connection is its own task: a suspended async function per
   * connection would cost an idle connection a quarter of its memory.)
   */
  readonly #connections = new Set<Connection>();
  /** Accepted sockets not yet admitted or refused, and refusals in progress. */
  readonly #preludes = new Set<Promise<void>>();
  /** Called when the last task ends, while a drain waits for that. */
  #onAllEnded: (() => void) | undefined;
  /** Sockets still in their PROXY header or TLS handshake. */
  readonly #settingUp = new Set<net.Socket>();
  /** Aborted by {@linkcode abort}: cuts a drain short. */
  readonly #abortDrain = new AbortController();
  readonly #acceptLoop: Promise<void>;
  #served = 0;
  #stopping: Promise<ShutdownSummary> | undefined;
  #resolveFinished!: (summary: ShutdownSummary) => void;

  /** @internal Use {@linkcode startServer}. */
  constructor(listener: TcpListener, settings: Settings) {
    this.#listener = listener;
    this.#settings = settings;
    this.addr = { transport: "tcp", ...listener.addr };
    this.protocol = settings.protocol;
    this.metrics = settings.metrics;
    this.#limit = new ConnectionLimit(settings.maxConnections);
    this.#perAddress = settings.maxConnectionsPerIp > 0
      ? new AddressLimit(settings.maxConnectionsPerIp)
      : undefined;
    this.#config = {
      protocol: settings.protocol,
      maxLineBytes: settings.maxLineBytes,
      tooLongReply: ServerReplies.lineTooLong(settings.maxLineBytes) + "\r\n",
      maxQueuedBytes: settings.protocol.maxQueuedBytes ??
        DEFAULT_MAX_QUEUED_BYTES,
      logLines: settings.logger.isEnabledFor("debug"),
      idle: settings.idleTimeoutMs > 0
        ? new TimeoutTracker<Connection>(
          settings.idleTimeoutMs,
          (connection) => connection.onIdleTimeout(),
        )
        : undefined,
      line: settings.lineTimeoutMs > 0
        ? new TimeoutTracker<Connection>(
          settings.lineTimeoutMs,
          (connection) => connection.onLineTimeout(),
        )
        : undefined,
      lingerMs: LINGER_MS,
      draining: () => this.draining,
      onEnd: (connection) => this.#ended(connection),
      metrics: settings.metrics,
      logger: settings.logger,
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
   * Graceful shutdown: stop accepting, close idle connections with
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

  /** Shuts down gracefully, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  /** The listener loop: accept and hand off, nothing else. */
  async #accept(): Promise<void> {
    for await (const socket of this.#listener) {
      try {
        this.#handOff(socket);
      } catch (error) {
        // Nothing about one connection may end the accept loop.
        this.#settings.logger.error("cannot start a connection: {error}", {
          error: errorWithStack(error),
        });
        socket.destroy();
      }
    }
  }

  /**
   * One accepted socket: set up (PROXY header, TLS) when configured, then
   * admitted and served, or refused. Plain TCP with a free slot, the common
   * case, is admitted and served at once.
   */
  #handOff(socket: net.Socket) {
    // A request/reply protocol must not wait for Nagle; keep-alive finds vanished peers.
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
    if (this.#settings.proxyProtocol || this.#settings.tls !== undefined) {
      return this.#track(this.#setUpThenAdmit(socket));
    }
    const prelude = this.#admit(socket, socketPeer(socket));
    if (prelude !== undefined) this.#track(prelude);
  }

  /**
   * Admits and serves the client at once, or returns what decides its fate
   * later: the grace wait of a full server, or a refusal being sent.
   */
  #admit(stream: Duplex, peer: PeerAddress): Promise<void> | undefined {
    const admission = this.#tryAdmit(peer);
    if (admission === "full") return this.#admitAfterGrace(stream, peer);
    if (typeof admission === "string") {
      return this.#refuse(stream, peer, admission);
    }
    this.#serve(stream, peer, admission);
  }

  /** Keeps a prelude (setup, grace, refusal) in view until it is over. */
  #track(prelude: Promise<void>) {
    this.#preludes.add(prelude);
    prelude.finally(() => {
      this.#preludes.delete(prelude);
      this.#checkAllEnded();
    });
  }

  async #setUpThenAdmit(socket: net.Socket): Promise<void> {
    // An error with no listener would end the process; every later owner
    // of the stream reacts to errors with its own listener.
    socket.on("error", ignore);
    const { metrics, logger } = this.#settings;
    this.#settingUp.add(socket);
    const setup = await setUpConnection(socket, {
      proxyHeaderTimeoutMs: this.#settings.proxyProtocol
        ? PROXY_HEADER_TIMEOUT_MS
        : undefined,
      tls: this.#settings.tls,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    }).finally(() => this.#settingUp.delete(socket));
    if (!setup.ok) {
      metrics.notAdmitted(setup.failure);
      if (setup.failure === "reset") return;
      const details = {
        peer: formatAddr(setup.socketPeer),
        reason: setup.reason,
      };
      if (setup.failure === "proxy_header_invalid") {
        logger.warn("closing {peer}: invalid PROXY header: {reason}", details);
      } else {
        logger.debug("TLS handshake with {peer} failed: {reason}", details);
      }
      return;
    }
    const { stream, peer } = setup;
    if (this.draining) return void stream.destroy();
    await this.#admit(stream, peer);
  }

  /**
   * Admission, decided here only: the per-address limit first, then a slot
   * of the server's limit. Returns the new connection's number, a refusal,
   * or `full` when the server has no free slot right now. A refused client
   * holds nothing.
   */
  #tryAdmit(peer: PeerAddress): number | Refusal | "full" {
    const perAddress = this.#perAddress;
    if (perAddress !== undefined && !perAddress.tryAcquire(peer.hostname)) {
      return "refused_per_ip";
    }
    if (!this.#limit.tryAcquire()) {
      perAddress?.release(peer.hostname);
      return "full";
    }
    this.metrics.connectionAdmitted();
    return ++this.#served;
  }

  /**
   * A client that finds the server full is looked at once more after a
   * short grace: a client that just disconnected may free its slot in the
   * same event-loop turn in which the next one is accepted, and that one
   * should not be turned away.
   */
  async #admitAfterGrace(stream: Duplex, peer: PeerAddress): Promise<void> {
    stream.on("error", ignore);
    await pause(ADMISSION_GRACE_MS);
    if (this.draining) return void stream.destroy();
    const admission = this.#tryAdmit(peer);
    if (typeof admission === "number") {
      return this.#serve(stream, peer, admission);
    }
    await this.#refuse(
      stream,
      peer,
      admission === "full" ? "refused_busy" : admission,
    );
  }

  /** Starts the connection task; its slot is given back in {@linkcode #ended}. */
  #serve(stream: Duplex, peer: PeerAddress, id: number) {
    const connection = new Connection(stream, this.#config, { id, peer });
    this.#connections.add(connection);
    connection.run();
  }

  /** A connection task has ended: it is counted, its slots are free. */
  #ended(connection: Connection) {
    this.#connections.delete(connection);
    this.#limit.release();
    this.#perAddress?.release(connection.peer.hostname);
    this.metrics.connectionEnded(connection.outcome);
    this.#checkAllEnded();
  }

  #checkAllEnded() {
    if (this.#connections.size === 0 && this.#preludes.size === 0) {
      this.#onAllEnded?.();
    }
  }

  /** Sends the refusal as the first and only line, then closes. */
  async #refuse(
    stream: Duplex,
    peer: PeerAddress,
    outcome: Refusal,
  ): Promise<void> {
    const { metrics, logger } = this.#settings;
    metrics.notAdmitted(outcome);
    logger.debug("connection refused {peer}: {reason}", {
      peer: formatAddr(peer),
      reason: outcome,
    });
    const line =
      (outcome === "refused_busy"
        ? ServerReplies.tooManyConnections
        : ServerReplies.tooManyFromAddress) + "\r\n";
    metrics.sent(line.length);
    await closeWithText(stream, line);
  }

  async #drain(): Promise<ShutdownSummary> {
    this.metrics.drainingStarted();
    await this.#closeListener();
    const open = [...this.#connections];
    this.#closeIdleConnections(open);
    const drained = await this.#waitForConnections(
      this.#settings.shutdownTimeoutMs,
    );
    if (!drained) await this.#closeRemainingConnections();
    const forced = open.filter((c) => c.outcome === "forced").length;
    const summary: ShutdownSummary = {
      served: this.#served,
      closedGracefully: open.length - forced,
      closedByForce: forced,
    };
    this.#resolveFinished(summary);
    return summary;
  }

  /** Step 1: new connections are refused from now on. */
  async #closeListener() {
    this.#listener.close();
    await this.#acceptLoop;
  }

  /**
   * Step 2: idle connections say goodbye now, busy ones at their next line
   * boundary; clients still in their PROXY header or TLS handshake have
   * sent no line and are closed.
   */
  #closeIdleConnections(open: Connection[]) {
    for (const socket of this.#settingUp) socket.destroy();
    for (const connection of open) connection.beginShutdown();
  }

  /** Step 3: true when every task ended before `timeoutMs` (or abort). */
  #waitForConnections(timeoutMs: number): Promise<boolean> {
    return settleWithin(this.#allEnded(), timeoutMs, this.#abortDrain.signal);
  }

  /** Resolves once no connection task and no prelude is left. */
  #allEnded(): Promise<void> {
    if (this.#connections.size === 0 && this.#preludes.size === 0) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#onAllEnded = () => {
        this.#onAllEnded = undefined;
        resolve();
      };
    });
  }

  /** Step 4: whatever is still open is closed by force. */
  async #closeRemainingConnections() {
    for (const socket of this.#settingUp) socket.destroy();
    for (const connection of this.#connections) connection.forceClose();
    // Closed streams end their tasks at once; the bound only guarantees
    // that a shutdown never hangs, whatever a transport does.
    await settleWithin(this.#allEnded(), FORCED_CLOSE_GRACE_MS);
  }
}

function ignore() {}

/**
 * Writes `text` and FIN, drops what the client still sends, and destroys
 * the stream if the client has not closed soon after.
 */
function closeWithText(stream: Duplex, text: string): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => stream.destroy(), 4 * LINGER_MS);
    stream.on("error", ignore);
    stream.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    stream.end(text);
    stream.resume();
  });
}

/**
 * Checks the options, binds the listener and starts serving. Throws a
 * `RangeError` or `TypeError` for a bad option before binding anything;
 * rejects (e.g. `Deno.errors.AddrInUse`) if the address cannot be bound.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { echoProtocol, startServer } from "../mod.ts";
 * const server = await startServer({ port: 0, protocol: echoProtocol });
 * assert.ok(server.addr.port > 0);
 * await server.shutdown();
 * ```
 */
export async function startServer(
  options: ServerOptions = {},
): Promise<LineServer> {
  const settings = settle(options);
  const listener = await TcpListener.listen({
    hostname: settings.hostname,
    port: settings.port,
    reusePort: settings.reusePort,
    logger: settings.logger,
    metrics: settings.metrics,
  });
  return new LineServer(listener, settings);
}

/**
 * The server core: a listener loop that only accepts and hands off; every
 * accepted socket counted against the limits from accept on (the common
 * one becomes a connection at once, any other waits in the reception);
 * one task per admitted connection; and a graceful shutdown that reads as
 * its own specification (close the listener, say goodbye to idle
 * connections, wait for busy ones until a deadline, close the rest).
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import type { PeerAddress } from "./session.ts";
import { Connection } from "./connection.ts";
import { Admission } from "./admission.ts";
import { socketPeer } from "./connection_setup.ts";
import { Reception } from "./reception.ts";
import { errorWithStack } from "./logging.ts";
import { settleWithin } from "./deadline.ts";
import {
  prepareReclaimer,
  reclaimMemoryWhenQuiet,
} from "./memory_reclaimer.ts";
import { readGateOpen } from "./socket_reading.ts";
import { inputPoll } from "./input_poll.ts";
import { TcpListener } from "./transport.ts";
import type { ServerMetrics } from "./metrics.ts";
import { type ServerOptions, type Settings, settle } from "./server_options.ts";
import {
  type ConnectionConfig,
  connectionConfig,
} from "./connection_config.ts";

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

/**
 * How long a client that finds a limit full waits for a slot before it is
 * refused: a client that just closed frees its slot a moment after it sees
 * the close, and the one that reconnects at once should find it free.
 */
const ADMISSION_GRACE_MS = 10;
/**
 * Sockets that hold no slot (waiting for one, or being sent their refusal)
 * at once, at most; beyond it a socket is closed at once, without a line.
 */
const MAX_UNADMITTED = 128;
/** After closing by force, how long the drain waits for the sockets to close. */
const FORCED_CLOSE_GRACE_MS = 1000;

/** A running line server. Create it with {@linkcode startServer}. */
export class LineServer {
  /** The bound address, with the real port. */
  readonly addr: Deno.NetAddr;
  /** Live counters (see `GET /metrics`). */
  readonly metrics: ServerMetrics;
  /** Resolves once the server has stopped, by shutdown or abort. */
  readonly finished: Promise<ShutdownSummary>;
  readonly #listener: TcpListener;
  readonly #settings: Settings;
  readonly #config: ConnectionConfig<Connection>;
  readonly #admission: Admission;
  /**
   * Accepted sockets that are not connections yet: in their PROXY header or
   * TLS handshake, waiting for a slot, being refused.
   */
  readonly #reception: Reception;
  /**
   * The connection tasks: every admitted connection being served, until it
   * ends, with the address whose slot it holds (if the per-address limit is
   * on); each holds a server slot. (A connection is its own task: a
   * suspended async function per connection would cost an idle connection a
   * quarter of its memory.)
   */
  readonly #connections = new Map<Connection, string | undefined>();
  /** Called when the last socket closes, while a drain waits for that. */
  #onAllClosed: (() => void) | undefined;
  /** Aborted by {@linkcode abort}: cuts a drain short. */
  readonly #abortDrain = new AbortController();
  readonly #acceptLoop: Promise<void>;
  /** Stops this server's part in giving memory back after loads. */
  readonly #stopReclaiming: () => Promise<void>;
  #served = 0;
  #stopping: Promise<ShutdownSummary> | undefined;
  #resolveFinished!: (summary: ShutdownSummary) => void;

  /** @internal Use {@linkcode startServer}. */
  constructor(listener: TcpListener, settings: Settings) {
    this.#listener = listener;
    this.#settings = settings;
    this.addr = { transport: "tcp", ...listener.addr };
    this.metrics = settings.metrics;
    this.#admission = new Admission({
      maxConnections: settings.maxConnections,
      maxConnectionsPerIp: settings.maxConnectionsPerIp,
      graceMs: ADMISSION_GRACE_MS,
      maxWaiting: MAX_UNADMITTED,
    });
    this.#config = connectionConfig(settings, {
      draining: () => this.draining,
      onEnd: (connection) => this.#ended(connection),
      nextId: () => ++this.#served,
    });
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    // deno-lint-ignore no-this-alias
    const server = this;
    this.#reception = new Reception(settings, this.#admission, {
      get draining() {
        return server.draining;
      },
      serve: (stream, peer, initial, address, healthCheck) =>
        this.#serve(stream, peer, initial, address, healthCheck),
      checkAllClosed: () => this.#checkAllClosed(),
    });
    const metrics = settings.metrics;
    this.#stopReclaiming = settings.reclaimMemory
      ? reclaimMemoryWhenQuiet(() =>
        metrics.bytesReceived + metrics.bytesSent + this.#served
      )
      : () => Promise.resolve();
    this.#acceptLoop = this.#accept();
  }

  /** True from the start of a shutdown on (health checks report `draining`). */
  get draining(): boolean {
    return this.#stopping !== undefined;
  }

  /** Connections currently admitted and served. */
  get activeConnections(): number {
    return this.#connections.size;
  }

  /**
   * Graceful shutdown: stop accepting, close idle connections with
   * `<server shutting down>`, let busy ones finish their lines, close what is
   * left at the shutdown timeout. Calling it again returns the same result.
   */
  shutdown(): Promise<ShutdownSummary> {
    this.#stopping ??= this.#drain({ force: false });
    return this.#stopping;
  }

  /** Closes everything at once; also cuts short a shutdown in progress. */
  abort(): Promise<ShutdownSummary> {
    this.#abortDrain.abort();
    this.#stopping ??= this.#drain({ force: true });
    return this.#stopping;
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
   * One accepted socket, holding a server slot from now on (or waiting
   * briefly for one), set up when configured (PROXY header, TLS), then
   * served or refused. The common case, plain TCP with both slots free,
   * becomes a connection at once; any other socket is tracked until it
   * does, or closes.
   */
  #handOff(socket: net.Socket) {
    if (this.draining) return void socket.destroy();
    // Read now: once the client has gone the socket no longer knows it.
    const own = socketPeer(socket);
    // A request/reply protocol must not wait for Nagle; keep-alive finds vanished peers.
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
    const { proxyProtocol, tls } = this.#settings;
    if (!proxyProtocol && tls === undefined && this.#admission.takeSlot()) {
      const host = own.hostname;
      if (this.#admission.takeAddress(host)) {
        const address = this.#admission.limitsAddresses ? host : undefined;
        return this.#serve(socket, own, undefined, address);
      }
      this.#admission.releaseSlot();
    }
    this.#reception.receive(socket, own);
  }

  /**
   * Starts the connection task, which holds a server slot and, with the
   * per-address limit, `address`'s slot: both are given back when it ends.
   */
  #serve(
    stream: Duplex,
    peer: PeerAddress,
    initial: Uint8Array | undefined,
    address: string | undefined,
    healthCheck = false,
  ) {
    if (healthCheck) this.metrics.healthCheckStarted();
    else this.metrics.connectionAdmitted();
    const connection = new Connection(stream, this.#config, {
      id: healthCheck ? 0 : this.#config.nextId(),
      peer,
      healthCheck,
    });
    this.#connections.set(connection, address);
    connection.run(initial);
  }

  /** A connection task has ended: it is counted, its slots are free. */
  #ended(connection: Connection) {
    const address = this.#connections.get(connection);
    this.#connections.delete(connection);
    this.#admission.releaseSlot();
    if (address !== undefined) this.#admission.releaseAddress(address);
    if (connection.healthCheck) this.metrics.healthCheckEnded();
    else this.metrics.connectionEnded(connection.outcome);
    this.#checkAllClosed();
  }

  /** No accepted socket is open: none in the reception, no connection. */
  get #allGone(): boolean {
    return this.#reception.size === 0 && this.#connections.size === 0;
  }

  #checkAllClosed() {
    if (this.#allGone) this.#onAllClosed?.();
  }

  async #drain(options: { force: boolean }): Promise<ShutdownSummary> {
    this.metrics.drainingStarted();
    await this.#closeListener();
    const open = [...this.#connections.keys()];
    this.#closeUnadmitted();
    if (options.force) {
      for (const connection of open) connection.forceClose();
    } else {
      for (const connection of open) connection.beginShutdown();
    }
    const closed = options.force || await settleWithin(
      this.#allClosed(),
      this.#settings.shutdownTimeoutMs,
      this.#abortDrain.signal,
    );
    if (!closed || options.force) await this.#closeRemaining();
    await this.#stopReclaiming();
    await readGateOpen();
    await inputPoll.close();
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
   * Step 2 begins with the sockets that are not connections yet (in their
   * PROXY header or TLS handshake, waiting for a slot, being refused): they
   * have sent no line, so they are closed at once.
   */
  #closeUnadmitted() {
    this.#reception.closeAll();
  }

  /** Resolves once every accepted socket has closed. */
  #allClosed(): Promise<void> {
    if (this.#allGone) return Promise.resolve();
    return new Promise((resolve) => {
      this.#onAllClosed = () => {
        this.#onAllClosed = undefined;
        resolve();
      };
    });
  }

  /** Step 4: whatever is still open is closed by force. */
  async #closeRemaining() {
    for (const connection of this.#connections.keys()) connection.forceClose();
    this.#closeUnadmitted();
    // Closed streams end their tasks at once; the bound only guarantees
    // that a shutdown never hangs, whatever a transport does.
    if (!await settleWithin(this.#allClosed(), FORCED_CLOSE_GRACE_MS)) {
      await settleWithin(this.#allClosed(), FORCED_CLOSE_GRACE_MS);
    }
  }
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
  if (settings.reclaimMemory) await prepareReclaimer();
  await inputPoll.open();
  let listener: TcpListener;
  try {
    listener = await TcpListener.listen({
      hostname: settings.hostname,
      port: settings.port,
      reusePort: settings.reusePort,
      sharedReadBuffer: settings.tls === undefined,
      logger: settings.logger,
      metrics: settings.metrics,
    });
  } catch (error) {
    await inputPoll.close();
    throw error;
  }
  return new LineServer(listener, settings);
}

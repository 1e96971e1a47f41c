/**
 * The server core: a listener loop that only accepts and hands off; every
 * accepted socket tracked from accept to close and counted against the
 * limits all that time; one task per admitted connection; and a graceful
 * shutdown that reads as its own specification (close the listener, say
 * goodbye to idle connections, wait for busy ones until a deadline, close
 * the rest).
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import type { PeerAddress } from "./session.ts";
import { Connection } from "./connection.ts";
import { Admission, type Refusal } from "./admission.ts";
import { setUpConnection, socketPeer } from "./connection_setup.ts";
import { errorWithStack } from "./logging.ts";
import { settleWithin } from "./deadline.ts";
import { reclaimMemoryWhenQuiet } from "./memory_reclaimer.ts";
import { formatAddr, TcpListener } from "./transport.ts";
import { receiveBytes, resumeReading } from "./socket_reading.ts";
import type { ServerMetrics } from "./metrics.ts";
import { ServerReplies } from "./replies.ts";
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

/** TLS handshakes that have not finished after this long are dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A PROXY header must be complete this long after the connection is accepted. */
const PROXY_HEADER_TIMEOUT_MS = 5_000;
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
/** How long a refusal may take (its line, the client's FIN) before its socket is destroyed. */
const REFUSAL_DEADLINE_MS = 2_000;
/** After closing by force, how long the drain waits for the sockets to close. */
const FORCED_CLOSE_GRACE_MS = 1000;

/**
 * One accepted socket, from accept to close: the stream that owns it now
 * (the socket, then its TLS stream) and the slots it holds.
 */
interface Tracked {
  stream: Duplex;
  /** Holds a slot of the server-wide limit. */
  slot: boolean;
  /** Holds a slot of this address's limit. */
  address: string | undefined;
  /** Counted among the sockets that hold no slot. */
  unadmitted: boolean;
  /** Its PROXY header read and TLS handshake done (or none needed). */
  setUp: boolean;
}

/** Where an accepted socket keeps its tracking record (see #track). */
const TRACKED = Symbol("tracked");
type TrackedStream = Duplex & { [TRACKED]?: Tracked };

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
  readonly #config: ConnectionConfig;
  readonly #admission: Admission;
  /**
   * Accepted sockets that are not connections yet, until they close: in
   * their PROXY header or TLS handshake, waiting for a slot, being refused.
   */
  readonly #sockets = new Set<Tracked>();
  /**
   * The connection tasks: every admitted connection being served, until it
   * ends, with the address whose slot it holds (if the per-address limit is
   * on); each holds a server slot. (A connection is its own task: a
   * suspended async function per connection would cost an idle connection a
   * quarter of its memory.)
   */
  readonly #connections = new Map<Connection, string | undefined>();
  /**
   * The `close` listener of every tracked socket: one function for all, so
   * that tracking a socket costs no closure.
   */
  readonly #trackedClosed: (this: Duplex) => void;
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
    this.#trackedClosed = function (this: Duplex) {
      server.#closed(this);
    };
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
    const { proxyProtocol, proxyProtocolFrom, tls } = this.#settings;
    if (!proxyProtocol && tls === undefined && this.#admission.takeSlot()) {
      const host = own.hostname;
      if (this.#admission.takeAddress(host)) {
        const address = this.#admission.limitsAddresses ? host : undefined;
        return this.#serve(socket, own, undefined, address);
      }
      this.#admission.releaseSlot();
    }
    const tracked = this.#track(socket);
    if (
      proxyProtocol && proxyProtocolFrom !== undefined &&
      !proxyProtocolFrom.contains(own.hostname)
    ) {
      return this.#turnAway(tracked, own, "proxy_untrusted");
    }
    if (this.#admission.takeSlot()) {
      tracked.slot = true;
      return this.#continue(tracked, socket, own);
    }
    this.#waitThen(tracked, own, this.#admission.waitForSlot(), () => {
      tracked.slot = true;
      this.#continue(tracked, socket, own);
    }, "refused_busy");
  }

  /** With its server slot: the address's slot, setup, then service. */
  #continue(tracked: Tracked, socket: net.Socket, own: PeerAddress) {
    const { proxyProtocol, tls } = this.#settings;
    if (!proxyProtocol && tls === undefined) {
      return this.#admitAddress(tracked, socket, own, undefined);
    }
    // The real address is known now unless a PROXY header will tell it.
    const setUp = () => this.#setUp(tracked, socket, own);
    if (proxyProtocol || !this.#admission.limitsAddresses) return setUp();
    this.#withAddress(tracked, own, setUp);
  }

  async #setUp(tracked: Tracked, socket: net.Socket, own: PeerAddress) {
    const { metrics, logger } = this.#settings;
    const setup = await setUpConnection(socket, own, {
      proxyHeaderTimeoutMs: this.#settings.proxyProtocol
        ? PROXY_HEADER_TIMEOUT_MS
        : undefined,
      tls: this.#settings.tls,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    });
    if (!setup.ok) {
      metrics.notAdmitted(setup.failure);
      if (setup.failure === "reset") return;
      const details = { peer: formatAddr(own), reason: setup.reason };
      if (setup.failure === "proxy_header_invalid") {
        logger.warn("closing {peer}: invalid PROXY header: {reason}", details);
      } else {
        logger.debug("TLS handshake with {peer} failed: {reason}", details);
      }
      return;
    }
    const { stream, peer, initial } = setup;
    tracked.setUp = true;
    if (stream !== tracked.stream) this.#retrack(tracked, stream);
    if (this.draining) return void stream.destroy();
    // A balancer's health check keeps the socket's address and no
    // per-address slot (that address is the balancer's).
    if (setup.healthCheck) {
      return this.#serveTracked(tracked, stream, own, initial, true);
    }
    if (tracked.address !== undefined) {
      return this.#serveTracked(tracked, stream, peer, initial);
    }
    this.#admitAddress(tracked, stream, peer, initial);
  }

  /** The last step of admission: the address's slot, then service. */
  #admitAddress(
    tracked: Tracked,
    stream: Duplex,
    peer: PeerAddress,
    initial: Uint8Array | undefined,
  ) {
    if (!this.#admission.limitsAddresses) {
      return this.#serveTracked(tracked, stream, peer, initial);
    }
    this.#withAddress(
      tracked,
      peer,
      () => this.#serveTracked(tracked, stream, peer, initial),
    );
  }

  /** Takes `peer`'s address slot (waiting the grace if need be), then `then`, or refuses. */
  #withAddress(tracked: Tracked, peer: PeerAddress, then: () => void) {
    const host = peer.hostname;
    if (this.#admission.takeAddress(host)) {
      tracked.address = host;
      return then();
    }
    this.#waitThen(tracked, peer, this.#admission.waitForAddress(host), () => {
      tracked.address = host;
      then();
    }, "refused_per_ip");
  }

  /**
   * A limit is full: the socket waits the admission grace (counted among
   * the sockets that hold no slot, or closed at once past their bound),
   * then goes on with `then`, or is refused.
   */
  #waitThen(
    tracked: Tracked,
    peer: PeerAddress,
    slot: Promise<boolean>,
    then: () => void,
    refusal: Refusal,
  ) {
    if (!this.#enterUnadmitted(tracked)) {
      // Past the bound: the wait is given up at once.
      slot.then((taken) => {
        if (taken) this.#releaseTaken(refusal, peer);
      });
      return this.#drop(tracked, peer, refusal);
    }
    slot.then((taken) => {
      if (taken && !this.draining && !tracked.stream.destroyed) {
        this.#leaveUnadmitted(tracked);
        return then();
      }
      if (taken) this.#releaseTaken(refusal, peer);
      if (tracked.stream.destroyed) return;
      if (this.draining) return void tracked.stream.destroy();
      this.#refuse(tracked, peer, refusal);
    });
  }

  /** A slot taken by a wait that is no longer wanted goes back. */
  #releaseTaken(refusal: Refusal, peer: PeerAddress) {
    if (refusal === "refused_busy") this.#admission.releaseSlot();
    else this.#admission.releaseAddress(peer.hostname);
  }

  #enterUnadmitted(tracked: Tracked): boolean {
    if (tracked.unadmitted) return true;
    if (!this.#admission.enterWaiting()) return false;
    tracked.unadmitted = true;
    return true;
  }

  #leaveUnadmitted(tracked: Tracked) {
    if (!tracked.unadmitted) return;
    tracked.unadmitted = false;
    this.#admission.leaveWaiting();
  }

  /** A tracked socket becomes a connection: the connection owns it from now on. */
  #serveTracked(
    tracked: Tracked,
    stream: Duplex,
    peer: PeerAddress,
    initial: Uint8Array | undefined,
    healthCheck = false,
  ) {
    this.#untrack(tracked);
    this.#serve(stream, peer, initial, tracked.address, healthCheck);
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
      id: healthCheck ? 0 : ++this.#served,
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

  /** Follows `stream` from now on: its `close` ends the tracking. */
  #track(stream: Duplex): Tracked {
    const tracked: Tracked = {
      stream,
      slot: false,
      address: undefined,
      unadmitted: false,
      setUp: !this.#settings.proxyProtocol && this.#settings.tls === undefined,
    };
    this.#sockets.add(tracked);
    this.#listen(tracked, stream);
    return tracked;
  }

  /** The socket's TLS stream owns it now: its close is the one that counts. */
  #retrack(tracked: Tracked, stream: Duplex) {
    tracked.stream = stream;
    this.#listen(tracked, stream);
  }

  #listen(tracked: Tracked, stream: Duplex) {
    (stream as TrackedStream)[TRACKED] = tracked;
    // An error with no listener would end the process; every later owner
    // of the stream reacts to errors with its own listener.
    stream.on("error", ignore);
    stream.on("close", this.#trackedClosed);
  }

  /** A connection takes the stream over (and gives the slots back itself). */
  #untrack(tracked: Tracked) {
    const stream = tracked.stream;
    stream.off("error", ignore);
    stream.off("close", this.#trackedClosed);
    (stream as TrackedStream)[TRACKED] = undefined;
    this.#leaveUnadmitted(tracked);
    this.#sockets.delete(tracked);
  }

  /** A tracked socket has closed: whatever it held is free. */
  #closed(stream: Duplex) {
    const tracked = (stream as TrackedStream)[TRACKED];
    if (tracked === undefined || tracked.stream !== stream) return;
    if (!this.#sockets.delete(tracked)) return;
    this.#release(tracked);
    this.#leaveUnadmitted(tracked);
    this.#checkAllClosed();
  }

  #checkAllClosed() {
    if (this.#sockets.size === 0 && this.#connections.size === 0) {
      this.#onAllClosed?.();
    }
  }

  /** Gives back the slots `tracked` holds. */
  #release(tracked: Tracked) {
    if (tracked.slot) {
      tracked.slot = false;
      this.#admission.releaseSlot();
    }
    if (tracked.address !== undefined) {
      const host = tracked.address;
      tracked.address = undefined;
      this.#admission.releaseAddress(host);
    }
  }

  /** Refused before anything else: closed at once, without a line. */
  #turnAway(tracked: Tracked, peer: PeerAddress, outcome: "proxy_untrusted") {
    this.metrics.notAdmitted(outcome);
    this.#settings.logger.warn(
      "connection refused {peer}: {outcome} (not in --proxy-protocol-from)",
      { peer: formatAddr(peer), outcome },
    );
    tracked.stream.destroy();
  }

  /** Past every bound: closed at once, without a line, still counted. */
  #drop(tracked: Tracked, peer: PeerAddress, outcome: Refusal) {
    this.#release(tracked);
    this.metrics.notAdmitted(outcome);
    this.#logRefusal(peer, outcome);
    tracked.stream.destroy();
  }

  /**
   * Sends the refusal as the first and only line, then closes. A socket not
   * set up yet is set up first (its PROXY header read, its TLS handshake
   * done, within the refusal's deadline), so the line reaches the client.
   */
  async #refuse(tracked: Tracked, peer: PeerAddress, outcome: Refusal) {
    this.#release(tracked);
    this.metrics.notAdmitted(outcome);
    this.#logRefusal(peer, outcome);
    let received = false;
    if (!tracked.setUp) {
      const setup = await setUpConnection(tracked.stream as net.Socket, peer, {
        proxyHeaderTimeoutMs: this.#settings.proxyProtocol
          ? REFUSAL_DEADLINE_MS
          : undefined,
        tls: this.#settings.tls,
        handshakeTimeoutMs: REFUSAL_DEADLINE_MS,
      });
      if (!setup.ok) return;
      tracked.setUp = true;
      if (setup.stream !== tracked.stream) {
        this.#retrack(tracked, setup.stream);
      }
      received = setup.initial !== undefined;
    }
    const line =
      (outcome === "refused_busy"
        ? ServerReplies.tooManyConnections
        : ServerReplies.tooManyFromAddress) + "\r\n";
    this.metrics.sent(line.length);
    closeAfter(tracked.stream, line, received);
  }

  #logRefusal(peer: PeerAddress, outcome: Refusal) {
    this.#settings.logger.info("connection refused {peer}: {outcome}", {
      peer: formatAddr(peer),
      outcome,
    });
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
    this.#admission.cancelWaiting();
    for (const tracked of this.#sockets) tracked.stream.destroy();
  }

  /** Resolves once every accepted socket has closed. */
  #allClosed(): Promise<void> {
    if (this.#sockets.size === 0 && this.#connections.size === 0) {
      return Promise.resolve();
    }
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
      for (const tracked of this.#sockets) tracked.stream.destroy();
      await settleWithin(this.#allClosed(), FORCED_CLOSE_GRACE_MS);
    }
  }
}

function ignore() {}

/**
 * Writes `text` (if any) and FIN, then closes: at once when the client has
 * sent nothing (no unread input, so the close cannot reset the line away),
 * else once the client closes too, within a deadline. What the client
 * sends meanwhile is dropped.
 */
function closeAfter(stream: Duplex, text: string, received: boolean) {
  const timer = setTimeout(() => stream.destroy(), REFUSAL_DEADLINE_MS);
  stream.once("close", () => clearTimeout(timer));
  stream.once("end", () => stream.destroy());
  receiveBytes(stream, {
    onBytes: () => {
      received = true;
      return true;
    },
  });
  resumeReading(stream);
  stream.end(text, () => {
    if (!received) stream.destroy();
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
    sharedReadBuffer: settings.tls === undefined,
    logger: settings.logger,
    metrics: settings.metrics,
  });
  return new LineServer(listener, settings);
}

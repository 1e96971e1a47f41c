/**
 * The reception: accepted sockets that are not connections yet. Each holds a
 * server slot from accept on (or waits the admission grace for one), has its
 * PROXY header read and its TLS handshake done when configured, takes its
 * address's slot, and is then handed to the server to be served; or it is
 * refused (its line after its setup, within a deadline), or closed at once
 * past the bound on sockets that hold no slot. Each is tracked, by its
 * `close`, until it becomes a connection or closes, so that whatever it
 * holds is given back exactly once.
 *
 * The common socket (plain TCP, both slots free) never comes here: the
 * server makes it a connection at once.
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import type { PeerAddress } from "./session.ts";
import type { Admission, Refusal } from "./admission.ts";
import { setUpConnection } from "./connection_setup.ts";
import { formatAddr } from "./transport.ts";
import { receiveBytes, resumeReading } from "./socket_reading.ts";
import { ServerReplies } from "./replies.ts";
import type { Settings } from "./server_options.ts";

/** TLS handshakes that have not finished after this long are dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A PROXY header must be complete this long after the connection is accepted. */
const PROXY_HEADER_TIMEOUT_MS = 5_000;
/** How long a refusal may take (its line, the client's FIN) before its socket is destroyed. */
const REFUSAL_DEADLINE_MS = 2_000;

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

/** What the reception needs of its server. */
export interface ReceptionHost {
  readonly draining: boolean;
  /**
   * Serves `stream` as a connection; it holds a server slot, and
   * `address`'s slot when one is given, which the connection gives back.
   */
  serve(
    stream: Duplex,
    peer: PeerAddress,
    initial: Uint8Array | undefined,
    address: string | undefined,
    healthCheck?: boolean,
  ): void;
  /** A tracked socket has closed (the server may be waiting for the last one). */
  checkAllClosed(): void;
}

/** The sockets of one server that are not connections yet. */
export class Reception {
  readonly #settings: Settings;
  readonly #admission: Admission;
  readonly #host: ReceptionHost;
  /** Every socket here, until it becomes a connection or closes. */
  readonly #sockets = new Set<Tracked>();
  /**
   * The `close` listener of every tracked socket: one function for all, so
   * that tracking a socket costs no closure.
   */
  readonly #trackedClosed: (this: Duplex) => void;

  constructor(settings: Settings, admission: Admission, host: ReceptionHost) {
    this.#settings = settings;
    this.#admission = admission;
    this.#host = host;
    // deno-lint-ignore no-this-alias
    const reception = this;
    this.#trackedClosed = function (this: Duplex) {
      reception.#closed(this);
    };
  }

  /** Sockets here now. */
  get size(): number {
    return this.#sockets.size;
  }

  /**
   * Takes an accepted socket that the server could not serve at once: it
   * needs setup, or a limit is full.
   */
  receive(socket: net.Socket, own: PeerAddress): void {
    const { proxyProtocol, proxyProtocolFrom } = this.#settings;
    const tracked = this.#track(socket);
    if (
      proxyProtocol && proxyProtocolFrom !== undefined &&
      !proxyProtocolFrom.contains(own.hostname)
    ) {
      return this.#turnAway(tracked, own, "proxy_untrusted");
    }
    if (this.#admission.takeSlot()) {
      tracked.slot = true;
      return void this.#continue(tracked, socket, own);
    }
    this.#waitThen(tracked, own, this.#admission.waitForSlot(), () => {
      tracked.slot = true;
      this.#continue(tracked, socket, own);
    }, "refused_busy");
  }

  /**
   * A shutdown: every socket here has sent no line, so each is closed at
   * once, and every wait for a slot ends.
   */
  closeAll(): void {
    this.#admission.cancelWaiting();
    for (const tracked of this.#sockets) tracked.stream.destroy();
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
    if (this.#host.draining) return void stream.destroy();
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
      if (taken && !this.#host.draining && !tracked.stream.destroyed) {
        this.#leaveUnadmitted(tracked);
        return then();
      }
      if (taken) this.#releaseTaken(refusal, peer);
      if (tracked.stream.destroyed) return;
      if (this.#host.draining) return void tracked.stream.destroy();
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
    this.#host.serve(stream, peer, initial, tracked.address, healthCheck);
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
    this.#host.checkAllClosed();
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
    this.#settings.metrics.notAdmitted(outcome);
    this.#settings.logger.warn(
      "connection refused {peer}: {outcome} (not in --proxy-protocol-from)",
      { peer: formatAddr(peer), outcome },
    );
    tracked.stream.destroy();
  }

  /** Past every bound: closed at once, without a line, still counted. */
  #drop(tracked: Tracked, peer: PeerAddress, outcome: Refusal) {
    this.#release(tracked);
    this.#settings.metrics.notAdmitted(outcome);
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
    this.#settings.metrics.notAdmitted(outcome);
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
    this.#settings.metrics.sent(line.length);
    closeAfter(tracked.stream, line, received);
  }

  #logRefusal(peer: PeerAddress, outcome: Refusal) {
    this.#settings.logger.info("connection refused {peer}: {outcome}", {
      peer: formatAddr(peer),
      outcome,
    });
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

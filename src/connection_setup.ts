/**
 * What happens to an accepted socket before it can be admitted: the PROXY
 * header (when the server sits behind a balancer that sends one) and the
 * TLS handshake (when the server has a certificate), each with its own
 * deadline. The result is the client's stream and its real address.
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import type { Buffer } from "node:buffer";
import {
  parseProxyHeader,
  PROXY_HEADER_MAX_BYTES,
  type ProxySource,
} from "./proxy_header.ts";
import { startTls, type TlsContext } from "./tls.ts";
import type { PeerAddress } from "./session.ts";

/** What {@linkcode setUpConnection} needs to know. */
export interface SetupOptions {
  /** Read a PROXY header (v1 or v2) first, within this many ms. */
  proxyHeaderTimeoutMs?: number;
  /** Serve TLS with this context; handshakes must finish within `handshakeTimeoutMs`. */
  tls?: TlsContext;
  handshakeTimeoutMs: number;
}

/** A socket ready to serve, or why it is not. */
export type SetupResult =
  | { ok: true; stream: Duplex; peer: PeerAddress; socketPeer: PeerAddress }
  | {
    ok: false;
    failure: "proxy_header_invalid" | "handshake_failed" | "reset";
    reason: string;
    socketPeer: PeerAddress;
  };

/** The socket's own remote address. */
export function socketPeer(socket: net.Socket): PeerAddress {
  return {
    hostname: normalizeHost(socket.remoteAddress ?? ""),
    port: socket.remotePort ?? 0,
  };
}

/** Clients on an IPv4 address reach a dual-stack listener as `::ffff:a.b.c.d`. */
function normalizeHost(host: string): string {
  return host.startsWith("::ffff:") && host.includes(".")
    ? host.slice(7)
    : host;
}

/**
 * Reads the PROXY header and runs the TLS handshake, as configured. Never
 * rejects; on failure the socket is destroyed.
 */
export async function setUpConnection(
  socket: net.Socket,
  options: SetupOptions,
): Promise<SetupResult> {
  const own = socketPeer(socket);
  let peer = own;
  if (options.proxyHeaderTimeoutMs !== undefined) {
    const header = await readProxyHeader(socket, options.proxyHeaderTimeoutMs);
    if (!header.ok) {
      socket.destroy();
      return {
        ok: false,
        failure: header.reset ? "reset" : "proxy_header_invalid",
        reason: header.reason,
        socketPeer: own,
      };
    }
    if (header.source !== undefined) {
      peer = {
        hostname: normalizeHost(header.source.hostname),
        port: header.source.port,
      };
    }
  }
  if (options.tls === undefined) {
    return { ok: true, stream: socket, peer, socketPeer: own };
  }
  try {
    const stream = await startTls(
      socket,
      options.tls,
      options.handshakeTimeoutMs,
    );
    return { ok: true, stream, peer, socketPeer: own };
  } catch (error) {
    return {
      ok: false,
      failure: "handshake_failed",
      reason: (error as Error).message,
      socketPeer: own,
    };
  }
}

type HeaderResult =
  | { ok: true; source: ProxySource | undefined }
  | { ok: false; reason: string; reset: boolean };

/**
 * Collects bytes until they form a complete header (the rest is put back
 * for whoever reads next), prove not to be one, or the deadline passes.
 * Leaves the socket paused.
 */
function readProxyHeader(
  socket: net.Socket,
  timeoutMs: number,
): Promise<HeaderResult> {
  return new Promise((resolve) => {
    let received = new Uint8Array(0);
    const finish = (result: HeaderResult) => {
      clearTimeout(timer);
      socket.pause();
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        finish({
          ok: false,
          reason: received.length === 0
            ? "no PROXY header within the deadline"
            : "incomplete PROXY header at the deadline",
          reset: false,
        }),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      const joined = new Uint8Array(received.length + chunk.length);
      joined.set(received);
      joined.set(chunk, received.length);
      received = joined;
      const result = parseProxyHeader(received);
      if (result.status === "incomplete") {
        if (received.length < PROXY_HEADER_MAX_BYTES) return;
        return finish({
          ok: false,
          reason: "PROXY header too long",
          reset: false,
        });
      }
      if (result.status === "invalid") {
        return finish({ ok: false, reason: result.reason, reset: false });
      }
      // Stop listening first: unshifting into a flowing stream would hand
      // the rest straight back to this handler.
      finish({ ok: true, source: result.source });
      if (result.length < received.length) {
        socket.unshift(received.subarray(result.length));
      }
    };
    const onEnd = () =>
      finish({
        ok: false,
        reason: "closed before a complete PROXY header",
        reset: false,
      });
    const onError = (error: Error) =>
      finish({ ok: false, reason: error.message, reset: true });
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", onError);
    socket.resume();
  });
}

/**
 * What happens to an accepted socket before it can be admitted: the PROXY
 * header (when the server sits behind a balancer that sends one) and the
 * TLS handshake (when the server has a certificate), each with its own
 * deadline. The result is the client's stream, its real address, and the
 * bytes that followed the header.
 *
 * Either step ends at once when the client closes, resets, or the server
 * destroys the socket (a shutdown): a socket in setup holds a slot, so it
 * must give it back as soon as it is gone.
 *
 * @module
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import {
  parseProxyHeader,
  PROXY_HEADER_MAX_BYTES,
  type ProxySource,
} from "./proxy_header.ts";
import { startTls, type TlsContext } from "./tls.ts";
import type { PeerAddress } from "./session.ts";
import { lendReadsOf, receiveBytes, stopReceiving } from "./socket_reading.ts";

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
  | {
    ok: true;
    stream: Duplex;
    peer: PeerAddress;
    /** Bytes read after the PROXY header (plain TCP only). */
    initial: Uint8Array | undefined;
    /** A PROXY v2 LOCAL connection: the balancer checking the server's health. */
    healthCheck: boolean;
  }
  | {
    ok: false;
    failure: "proxy_header_invalid" | "handshake_failed" | "reset";
    reason: string;
  };

/** The socket's own remote address (read it at accept: it is gone once the socket is). */
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
  own: PeerAddress,
  options: SetupOptions,
): Promise<SetupResult> {
  let peer = own;
  let initial: Uint8Array | undefined;
  let healthCheck = false;
  if (options.proxyHeaderTimeoutMs !== undefined) {
    const header = await readProxyHeader(socket, options.proxyHeaderTimeoutMs);
    if (!header.ok) {
      socket.destroy();
      return {
        ok: false,
        failure: header.reset ? "reset" : "proxy_header_invalid",
        reason: header.reason,
      };
    }
    healthCheck = header.local;
    if (header.source !== undefined) {
      peer = {
        hostname: normalizeHost(header.source.hostname),
        port: header.source.port,
      };
    }
    initial = header.rest;
  }
  if (options.tls === undefined || healthCheck) {
    return { ok: true, stream: socket, peer, initial, healthCheck };
  }
  stopReceiving(socket);
  // What followed the header is the start of the TLS handshake.
  if (initial !== undefined) socket.unshift(initial);
  try {
    const stream = await startTls(
      socket,
      options.tls,
      options.handshakeTimeoutMs,
    );
    // What the client sends from now on is decrypted into the shared read
    // buffer, as a plain socket's bytes are read into it.
    lendReadsOf(stream);
    return { ok: true, stream, peer, initial: undefined, healthCheck };
  } catch (error) {
    return {
      ok: false,
      failure: "handshake_failed",
      reason: (error as Error).message,
    };
  }
}

type HeaderResult =
  | {
    ok: true;
    source: ProxySource | undefined;
    local: boolean;
    rest: Uint8Array | undefined;
  }
  | { ok: false; reason: string; reset: boolean };

/**
 * Collects bytes until they form a complete header (what follows it is
 * returned as `rest`), prove not to be one, or the deadline passes; ends at
 * once when the client or the server closes the socket. Leaves the socket
 * not reading.
 */
function readProxyHeader(
  socket: net.Socket,
  timeoutMs: number,
): Promise<HeaderResult> {
  return new Promise((resolve) => {
    let received = new Uint8Array(0);
    let done = false;
    const finish = (result: HeaderResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off("end", onEnd);
      socket.off("error", onError);
      socket.off("close", onClose);
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
    const onBytes = (bytes: Uint8Array): boolean => {
      if (done) return false;
      const joined = new Uint8Array(received.length + bytes.length);
      joined.set(received);
      joined.set(bytes, received.length);
      received = joined;
      const result = parseProxyHeader(received);
      if (result.status === "incomplete") {
        if (received.length < PROXY_HEADER_MAX_BYTES) return true;
        finish({ ok: false, reason: "PROXY header too long", reset: false });
        return false;
      }
      if (result.status === "invalid") {
        finish({ ok: false, reason: result.reason, reset: false });
        return false;
      }
      finish({
        ok: true,
        source: result.source,
        local: result.local,
        rest: result.length < received.length
          ? received.subarray(result.length)
          : undefined,
      });
      return false;
    };
    const onEnd = () =>
      finish({
        ok: false,
        reason: "closed before a complete PROXY header",
        reset: false,
      });
    const onError = (error: Error) =>
      finish({ ok: false, reason: error.message, reset: true });
    const onClose = () =>
      finish({
        ok: false,
        reason: "closed before a complete PROXY header",
        reset: true,
      });
    socket.on("end", onEnd);
    socket.on("error", onError);
    socket.on("close", onClose);
    receiveBytes(socket, { onBytes });
  });
}

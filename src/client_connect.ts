/**
 * Opening a client connection: TCP (`node:net`, as the server uses) or TLS
 * (`node:tls`), bounded by a connect timeout, retried with backoff and
 * jitter when asked. Every failure is one {@linkcode LineClientError} that
 * names the address and the reason.
 *
 * @module
 */
import net from "node:net";
import tls from "node:tls";
import { formatAddr } from "./transport.ts";
import { pause } from "./deadline.ts";
import { connectError, LineClientError } from "./client_error.ts";

/** How to speak TLS to the server. */
export interface ClientTlsOptions {
  /**
   * Certificate authorities to trust (PEM), instead of the system's: the
   * server's own certificate when it is self-signed.
   */
  readonly ca?: string | readonly string[];
  /**
   * Skip verifying the server's certificate (for test certificates only:
   * anyone on the path could then read and change the traffic).
   */
  readonly insecure?: boolean;
  /** The name the certificate must carry. Default: the host name, unless it is an IP address. */
  readonly serverName?: string;
}

/**
 * Retrying a failed connect: attempt n (from 1) waits a random time between
 * half and all of `min(maxDelayMs, initialDelayMs * 2^(n-1))` before
 * attempt n+1, so that clients refused together do not all come back at
 * the same moment.
 */
export interface RetryOptions {
  /** Connect attempts in all, the first included (at least 1). */
  readonly attempts: number;
  /** Wait after the first failure, before jitter. Default 100. */
  readonly initialDelayMs?: number;
  /** The longest wait between two attempts, before jitter. Default 10000. */
  readonly maxDelayMs?: number;
}

/** Where and how to connect. */
export interface SocketOptions {
  readonly hostname: string;
  readonly port: number;
  /** Speak TLS, with these settings. */
  readonly tls?: ClientTlsOptions;
  /** Connecting (TCP and the TLS handshake) fails after this long. */
  readonly connectTimeoutMs: number;
  /** TCP keep-alive: probe an idle connection after this long; 0 = off. */
  readonly keepAliveMs: number;
}

/**
 * Connects once. Resolves with the socket connected (and its TLS handshake
 * done), paused, with Nagle's algorithm off: a request line leaves at once.
 */
function openSocket(options: SocketOptions): Promise<net.Socket> {
  const where = formatAddr(options);
  const secure = options.tls;
  return new Promise((resolve, reject) => {
    let handshaking = false;
    const socket = secure === undefined
      ? net.connect({ host: options.hostname, port: options.port })
      : tls.connect({
        host: options.hostname,
        port: options.port,
        ca: secure.ca === undefined ? undefined : [secure.ca].flat(),
        rejectUnauthorized: !secure.insecure,
        servername: secure.serverName ??
          (net.isIP(options.hostname) ? undefined : options.hostname),
      });
    const settle = () => {
      clearTimeout(timer);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
    const fail = (error: LineClientError) => {
      settle();
      // A late error of the destroyed socket must not go unhandled.
      socket.on("error", () => {});
      socket.destroy();
      reject(error);
    };
    const onError = (error: Error) =>
      fail(connectError(error, where, handshaking));
    const onClose = () =>
      fail(
        new LineClientError(
          handshaking ? "tls" : "reset",
          `Cannot connect to ${where}: closed during the ${
            handshaking ? "TLS handshake" : "connect"
          }`,
        ),
      );
    const connected = () => {
      settle();
      socket.setNoDelay(true);
      if (options.keepAliveMs > 0) {
        socket.setKeepAlive(true, options.keepAliveMs);
      }
      socket.pause();
      resolve(socket);
    };
    const timer = setTimeout(
      () =>
        fail(
          new LineClientError(
            "connect-timeout",
            `Cannot connect to ${where}: no answer in ${
              options.connectTimeoutMs / 1000
            } s`,
          ),
        ),
      options.connectTimeoutMs,
    );
    socket.once("error", onError);
    socket.once("close", onClose);
    if (secure === undefined) socket.once("connect", connected);
    else {
      socket.once("connect", () => handshaking = true);
      socket.once("secureConnect", connected);
    }
  });
}

/**
 * The wait after failed attempt `attempt` (from 1), with jitter drawn from
 * `random` (a function returning [0, 1)).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { backoffDelay } from "./client_connect.ts";
 *
 * const retry = { attempts: 10, initialDelayMs: 100, maxDelayMs: 1000 };
 * assert.equal(backoffDelay(1, retry, () => 0), 50);
 * assert.equal(backoffDelay(3, retry, () => 0.999999), 400);
 * assert.equal(backoffDelay(9, retry, () => 0), 500); // capped at 1000, halved by jitter
 * ```
 */
export function backoffDelay(
  attempt: number,
  retry: RetryOptions,
  random: () => number = Math.random,
): number {
  const initial = retry.initialDelayMs ?? 100;
  const max = retry.maxDelayMs ?? 10_000;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt - 1, 52));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/**
 * Connects, retrying as `retry` says when nothing answers (refused,
 * unreachable, timed out, reset while connecting); a TLS failure is final.
 * Rejects with the last attempt's error.
 */
export async function connectSocket(
  options: SocketOptions,
  retry: RetryOptions = { attempts: 1 },
): Promise<net.Socket> {
  if (!Number.isSafeInteger(retry.attempts) || retry.attempts < 1) {
    throw new RangeError(
      `Cannot retry: expected at least 1 attempt, received ${retry.attempts}`,
    );
  }
  for (let attempt = 1;; attempt++) {
    try {
      return await openSocket(options);
    } catch (error) {
      const final = attempt >= retry.attempts ||
        (error instanceof LineClientError && error.code === "tls");
      if (final) throw error;
    }
    await pause(backoffDelay(attempt, retry));
  }
}

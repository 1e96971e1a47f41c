/**
 * The options of a client connection and of one read, checked before
 * anything connects.
 *
 * @module
 */
import type { FramingOptions } from "./framing.ts";
import { FrameDecoder } from "./frame_decoder.ts";
import { checkDuration } from "./deadline.ts";
import type { ClientTlsOptions, RetryOptions } from "./client_connect.ts";

/** Options of {@linkcode LineClient.connect}. */
export interface LineClientOptions extends FramingOptions {
  /** The server's host name or address. Default `127.0.0.1`. */
  readonly hostname?: string;
  /** The server's port. */
  readonly port: number;
  /** Speak TLS, with these settings (`{}`: trust the system's authorities). */
  readonly tls?: ClientTlsOptions;
  /** Connecting (TCP and the TLS handshake) fails after this long. Default 10000. */
  readonly connectTimeoutMs?: number;
  /**
   * The read deadline: while a read waits, the server may stay silent this
   * long at most (counted from the latest of the last bytes received, the
   * last bytes sent and the start of the wait). Past it every waiting read
   * fails with code `timeout` and the connection is closed: a server that
   * stopped without closing is noticed. 0 (the default) waits forever.
   */
  readonly readTimeoutMs?: number;
  /** TCP keep-alive: probe a connection idle this long; 0 turns it off. Default 30000. */
  readonly keepAliveMs?: number;
  /**
   * Read one line as soon as the connection is open (a server that speaks
   * first, like the calculator) and keep it as {@linkcode LineClient.greeting}.
   */
  readonly greeting?: boolean;
  /** Retry a failed connect with backoff and jitter. Default: one attempt. */
  readonly retry?: RetryOptions;
}

/** Options of one read. */
export interface ReadOptions {
  /**
   * Give up after this long, with code `timeout`; the connection stays
   * usable. A timed-out `readLine` gives up its place (the next line goes
   * to the next reader); a timed-out `request` or `readBytes` keeps its
   * place and its frame is dropped when it arrives, so later replies still
   * reach the requests they answer.
   */
  readonly timeoutMs?: number;
}

/** Every connection setting resolved to its value. */
export interface ClientSettings {
  hostname: string;
  port: number;
  /** The connection's framer (made here, which checks the framing before connecting). */
  decoder: FrameDecoder;
  connectTimeoutMs: number;
  readTimeoutMs: number;
  keepAliveMs: number;
}

/**
 * Checks every option and fills in the defaults; throws a `RangeError` for
 * a bad one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { settleClientOptions } from "./client_options.ts";
 *
 * assert.equal(settleClientOptions({ port: 8080 }).connectTimeoutMs, 10_000);
 * assert.throws(() => settleClientOptions({ port: 0 }), RangeError);
 * assert.throws(() => settleClientOptions({ port: 1, terminator: "" }), RangeError);
 * ```
 */
export function settleClientOptions(
  options: LineClientOptions,
): ClientSettings {
  const port = options.port;
  if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`Cannot connect to port ${port}: expected 1 to 65535`);
  }
  return {
    hostname: options.hostname ?? "127.0.0.1",
    port,
    decoder: new FrameDecoder(options),
    connectTimeoutMs: checkDuration(
      "connectTimeoutMs",
      options.connectTimeoutMs ?? 10_000,
    ),
    readTimeoutMs: checkDuration("readTimeoutMs", options.readTimeoutMs ?? 0),
    keepAliveMs: checkDuration("keepAliveMs", options.keepAliveMs ?? 30_000),
  };
}

/**
 * The accept loop as an async iterator that only ends when the listener is
 * closed. A failed accept that concerns one connection only (its client
 * reset it before we took it) costs nothing: the loop goes straight on. Any
 * other failure (e.g. out of file descriptors) is logged once per burst and
 * retried after a growing back-off, never ending the server and never
 * spinning.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { LineConn, LineListener } from "./transport.ts";
import type { AcceptErrorKind } from "./metrics.ts";
import { pause } from "./deadline.ts";

/** First and largest pause after a failed accept. */
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 1000;

/**
 * Yields accepted connections until `signal` aborts or the listener closes.
 *
 * @example
 * ```ts ignore
 * for await (const conn of acceptConnections(listener, { signal, logger })) {
 *   handOff(conn);
 * }
 * ```
 */
export async function* acceptConnections<C extends LineConn>(
  listener: LineListener<C>,
  options: {
    signal: AbortSignal;
    logger: Logger;
    onError?: (kind: AcceptErrorKind) => void;
  },
): AsyncGenerator<C, void, void> {
  const { signal, logger, onError } = options;
  let failures = 0;
  let backoffMs = 0;
  while (!signal.aborted) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (signal.aborted || error instanceof Deno.errors.BadResource) return;
      const kind = classifyAcceptError(error);
      onError?.(kind);
      // Backing off here would let any client stall the server: connect,
      // reset, repeat. The next connection in the queue is unaffected.
      if (kind === "peer_reset") continue;
      failures++;
      if (failures === 1) {
        logger.warn("accept failed, backing off: {error}", {
          error: String(error),
        });
      }
      backoffMs = Math.min(
        BACKOFF_MAX_MS,
        backoffMs === 0 ? BACKOFF_MIN_MS : backoffMs * 2,
      );
      await pause(backoffMs, signal);
      continue;
    }
    if (failures > 0) {
      logger.warn("accept recovered after {failures} failed attempts", {
        failures,
      });
      failures = 0;
      backoffMs = 0;
    }
    yield conn;
  }
}

/**
 * Why an accept failed: `peer_reset` concerns one connection only (the
 * client reset it while it waited in the queue: `ECONNABORTED`,
 * `ECONNRESET`, or `ENOTCONN` when the socket's address is read);
 * `exhausted` is the process or system running out of descriptors or
 * memory; anything else is `other`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { classifyAcceptError } from "./accept.ts";
 * assert.equal(classifyAcceptError(new Deno.errors.NotConnected("x")), "peer_reset");
 * assert.equal(classifyAcceptError(new Error("Too many open files (os error 24)")), "exhausted");
 * ```
 */
export function classifyAcceptError(error: unknown): AcceptErrorKind {
  if (
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.NotConnected
  ) {
    return "peer_reset";
  }
  const message = String(error);
  if (
    /os error (23|24|105|12)\b|EMFILE|ENFILE|ENOBUFS|ENOMEM/.test(message)
  ) {
    return "exhausted";
  }
  return "other";
}

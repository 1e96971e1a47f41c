/**
 * The accept loop as an async iterator that only ends when the listener is
 * closed: a failed accept (e.g. out of file descriptors) is logged once per
 * burst and retried after a growing back-off, never ending the server and
 * never spinning.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { LineConn, LineListener } from "./transport.ts";
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
  options: { signal: AbortSignal; logger: Logger },
): AsyncGenerator<C, void, void> {
  const { signal, logger } = options;
  let failures = 0;
  let backoffMs = 0;
  while (!signal.aborted) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (signal.aborted || error instanceof Deno.errors.BadResource) return;
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

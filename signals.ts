/**
 * Signal wiring: SIGINT and SIGTERM start a graceful shutdown; a second one
 * (either) stops at once. Nothing else in the server knows about signals, so
 * embedders and tests drive shutdown through `LineServer.shutdown()`.
 *
 * @module
 */

/** The signals that stop the server. */
export const SHUTDOWN_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** What to do on the first and on any later shutdown signal. */
export interface ShutdownHandlers {
  /** The first signal: drain gracefully. */
  graceful(signal: Deno.Signal): void;
  /** A second signal during the drain: close everything now. */
  immediate(signal: Deno.Signal): void;
}

/**
 * Listens for SIGINT and SIGTERM until disposed.
 *
 * @example
 * ```ts ignore
 * using _signals = onShutdownSignals({
 *   graceful: () => server.shutdown(),
 *   immediate: () => server.abort(),
 * });
 * await server.finished;
 * ```
 */
export function onShutdownSignals(handlers: ShutdownHandlers): Disposable {
  let received = 0;
  const listeners = SHUTDOWN_SIGNALS.map((signal) => {
    const listener = () => {
      received++;
      if (received === 1) handlers.graceful(signal);
      else handlers.immediate(signal);
    };
    Deno.addSignalListener(signal, listener);
    return { signal, listener };
  });
  return {
    [Symbol.dispose]() {
      for (const { signal, listener } of listeners) {
        Deno.removeSignalListener(signal, listener);
      }
    },
  };
}

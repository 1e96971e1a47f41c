/**
 * Signal wiring: SIGINT and SIGTERM start a graceful shutdown; a second
 * request (either signal) stops at once. Nothing else in the server knows
 * about signals, so embedders and tests drive shutdown through
 * `LineServer.shutdown()`.
 *
 * One request can arrive as two deliveries: Ctrl-C in a terminal sends SIGINT
 * to every process of the foreground process group, and a parent in that
 * group that passes signals on to its child (`deno task`, a shell script that
 * forwards, a supervisor stopping a whole control group with SIGTERM) sends
 * the server the same signal once more, a fraction of a millisecond later.
 * Such a repeat is not a second request; see {@linkcode SAME_REQUEST_WINDOW_MS}.
 * The forwarded copy can also come after the drain has finished, on its way
 * to the exit: once the drain is over, a shutdown signal has nothing left to
 * stop, and it must not be the one that ends the process (see
 * {@linkcode ShutdownSignals.drained}).
 *
 * @module
 */

/** The signals that stop the server. */
const SHUTDOWN_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/**
 * A repeat of the first shutdown signal that arrives within this many
 * milliseconds of it is the same request delivered twice, not a second one.
 *
 * Measured with `deno task start` in its own process group and
 * `kill -INT -PGID` (what a terminal does on Ctrl-C), on a 2-core machine,
 * idle and with both cores busy, 60 runs: the server's listener saw the
 * forwarded copy 0.7 to 7 ms after the first (the first listener starts the
 * drain before the next delivery is handled; in a bare script the gap is
 * under 0.2 ms); in about half of the runs the kernel merged the two into
 * one delivery. 100 ms leaves a margin of more than ten times that for a
 * parent process scheduled late on a loaded machine, and is still shorter
 * than a deliberate second key press: whoever wants to force the exit
 * presses again after seeing that the first press did not end the server at
 * once. A different signal, or the
 * same one later than this, is a second request.
 */
export const SAME_REQUEST_WINDOW_MS = 100;

/** What one delivery of a shutdown signal asks for. */
export type SignalMeaning =
  /** The first request: drain gracefully. */
  | "graceful"
  /** The first signal again within the window: the same request, delivered twice. */
  | "repeat"
  /** A second request: close everything now. */
  | "immediate"
  /** Any signal once the drain has finished: nothing left to stop. */
  | "after";

/**
 * Tells the first shutdown request, its repeated deliveries and a real second
 * request apart. Pure: the caller passes the time of each delivery.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ShutdownRequests } from "./signals.ts";
 *
 * const requests = new ShutdownRequests({ windowMs: 100 });
 * assert.equal(requests.classify("SIGINT", 1000), "graceful");
 * assert.equal(requests.classify("SIGINT", 1000.2), "repeat");
 * assert.equal(requests.classify("SIGINT", 1500), "immediate");
 * requests.finish();
 * assert.equal(requests.classify("SIGTERM", 1600), "after");
 * ```
 */
export class ShutdownRequests {
  readonly #windowMs: number;
  #first: { signal: Deno.Signal; atMs: number } | undefined;
  #finished = false;

  /** `windowMs` defaults to {@linkcode SAME_REQUEST_WINDOW_MS}. */
  constructor(options: { windowMs?: number } = {}) {
    this.#windowMs = options.windowMs ?? SAME_REQUEST_WINDOW_MS;
  }

  /**
   * Milliseconds between the first signal and `atMs`, or undefined before
   * the first signal.
   */
  sinceFirst(atMs: number): number | undefined {
    return this.#first === undefined ? undefined : atMs - this.#first.atMs;
  }

  /**
   * What `signal`, delivered at `atMs` (a monotonic clock in milliseconds),
   * asks for. The window counts from the first delivery, so a stream of
   * repeats cannot stretch it.
   */
  classify(signal: Deno.Signal, atMs: number): SignalMeaning {
    if (this.#finished) return "after";
    if (this.#first === undefined) {
      this.#first = { signal, atMs };
      return "graceful";
    }
    const sameRequest = signal === this.#first.signal &&
      atMs - this.#first.atMs <= this.#windowMs;
    return sameRequest ? "repeat" : "immediate";
  }

  /** The drain has finished: every later signal is `"after"`. */
  finish(): void {
    this.#finished = true;
  }
}

/** What to do on the first and on any later shutdown request. */
export interface ShutdownHandlers {
  /** The first signal: drain gracefully. */
  graceful(signal: Deno.Signal): void;
  /** A second request during the drain: close everything now. */
  immediate(signal: Deno.Signal): void;
  /**
   * The first signal delivered again within {@linkcode SAME_REQUEST_WINDOW_MS}
   * (`gapMs` after it): nothing to do but perhaps log it.
   */
  repeated?(signal: Deno.Signal, gapMs: number): void;
}

/** The listeners of {@linkcode onShutdownSignals}. */
export interface ShutdownSignals extends Disposable {
  /**
   * The drain has finished: from now on SIGINT and SIGTERM do nothing. A
   * process that is about to exit calls this instead of disposing: without
   * a listener, a late copy of the stop signal (`deno task` forwards Ctrl-C
   * a moment after the terminal delivered it) would kill the process on its
   * way out, and exit 0 would become 130 (143 for SIGTERM). The listeners do
   * not keep the process alive.
   */
  drained(): void;
}

/**
 * Listens for SIGINT and SIGTERM until disposed.
 *
 * @example
 * ```ts ignore
 * const signals = onShutdownSignals({
 *   graceful: () => server.shutdown(),
 *   immediate: () => server.abort(),
 * });
 * await server.finished;
 * signals.drained();
 * Deno.exit(0);
 * ```
 */
export function onShutdownSignals(
  handlers: ShutdownHandlers,
  options: { windowMs?: number } = {},
): ShutdownSignals {
  const requests = new ShutdownRequests(options);
  const listeners = SHUTDOWN_SIGNALS.map((signal) => {
    const listener = () => {
      const now = performance.now();
      switch (requests.classify(signal, now)) {
        case "graceful":
          return handlers.graceful(signal);
        case "repeat":
          return handlers.repeated?.(signal, requests.sinceFirst(now) ?? 0);
        case "immediate":
          return handlers.immediate(signal);
        case "after":
          return;
      }
    };
    Deno.addSignalListener(signal, listener);
    return { signal, listener };
  });
  return {
    drained() {
      requests.finish();
    },
    [Symbol.dispose]() {
      for (const { signal, listener } of listeners) {
        Deno.removeSignalListener(signal, listener);
      }
    },
  };
}

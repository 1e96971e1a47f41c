/**
 * Gives memory back to the system once the server goes quiet after a load.
 *
 * Two things keep resident memory high after a load in Deno 2.9 even though
 * the program holds nothing: the V8 heap, which collects garbage only when
 * it allocates (an idle process does not), so buffers the load left stay
 * alive; and glibc's allocator, which keeps freed memory in its arenas
 * instead of returning it. Neither can be set from the command line without
 * asking every user for flags, but a program can do both to itself: V8
 * exposes `gc` to a new context once `--expose-gc` is set at run time, and
 * the runtime calls `malloc_trim(0)` whenever a Web Worker ends. So when a
 * server has been busy and then quiet for a moment, and the process has
 * grown, this collects the garbage and then starts and ends a Worker that
 * does nothing. It never runs while clients are being served.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";
import { settleWithin } from "./deadline.ts";

/** Quiet this long after activity before reclaiming. */
const QUIET_MS = 2000;
/** How often activity is looked at (a timer that does not keep the process alive). */
const CHECK_MS = 1000;
/** The longest wait for the trimming Worker to start and answer. */
const WORKER_WAIT_MS = 5000;
/** Reclaim only when the process has grown at least this much since the last time. */
const GROWTH_BYTES = 8 * 1024 * 1024;

/** What a server reports: a number that changes whenever it does anything. */
export type ActivityProbe = () => number;

let gcFunction: (() => void) | null | undefined;

/** V8's `gc`, made available to this program at run time (null if it cannot be). */
function getGc(): (() => void) | null {
  if (gcFunction !== undefined) return gcFunction;
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("typeof gc === 'function' ? gc : null");
    gcFunction = typeof gc === "function" ? gc as () => void : null;
  } catch {
    gcFunction = null;
  }
  return gcFunction;
}

/** Starts and ends a Worker that does nothing: the runtime trims its allocator after. */
async function trimAllocator(): Promise<void> {
  try {
    const worker = new Worker(
      "data:application/javascript,postMessage(0)",
      { type: "module" },
    );
    const ended = new Promise<void>((resolve) => {
      worker.onmessage = () => resolve();
      worker.onerror = (event) => {
        event.preventDefault();
        resolve();
      };
    });
    // A runtime that never starts it (an embedding, a compiled binary that
    // loads no data: module) must not hold a start or a shutdown.
    await settleWithin(ended, WORKER_WAIT_MS);
    worker.terminate();
  } catch {
    // No Worker here (an embedding without them): only the collection runs.
  }
}

/**
 * The process's reclaimer: one for all servers of the process, running while
 * at least one is.
 */
class MemoryReclaimer {
  readonly #probes = new Set<ActivityProbe>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastActivity = 0;
  #lastChange = 0;
  #busy = false;
  /** The reclaim in progress, if any. */
  #reclaiming: Promise<void> | undefined;
  /** Resident memory after the last reclaim (or at the start). */
  #baseline = 0;

  add(probe: ActivityProbe): void {
    this.#probes.add(probe);
    if (this.#timer !== undefined) return;
    this.#baseline = Deno.memoryUsage().rss;
    this.#lastActivity = this.#activity();
    this.#timer = setInterval(() => this.#check(), CHECK_MS);
    Deno.unrefTimer(this.#timer);
  }

  delete(probe: ActivityProbe): void {
    this.#probes.delete(probe);
    if (this.#probes.size > 0 || this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #activity(): number {
    let sum = 0;
    for (const probe of this.#probes) sum += probe();
    return sum;
  }

  #check() {
    const now = Date.now();
    const activity = this.#activity();
    if (activity !== this.#lastActivity) {
      this.#lastActivity = activity;
      this.#lastChange = now;
      this.#busy = true;
      return;
    }
    if (
      !this.#busy || this.#reclaiming !== undefined ||
      now - this.#lastChange < QUIET_MS
    ) {
      return;
    }
    this.#busy = false;
    if (Deno.memoryUsage().rss < this.#baseline + GROWTH_BYTES) return;
    getGc()?.();
    this.#reclaiming = trimAllocator().finally(() => {
      this.#reclaiming = undefined;
      this.#baseline = Deno.memoryUsage().rss;
    });
  }

  /** Resolves once no reclaim is in progress (a stopping server waits for it). */
  settled(): Promise<void> {
    return this.#reclaiming ?? Promise.resolve();
  }
}

const reclaimer = new MemoryReclaimer();

let prepared: Promise<void> | undefined;

/**
 * Runs the reclaimer's machinery once before the server listens, so that
 * what it costs once in a process's life is part of the level before any
 * load. The first Worker a process starts pages in about 9 MiB of the
 * runtime's executable (code that creates an isolate, never run before);
 * those pages stay resident. Started on the first reclaim instead, they
 * would show as 9 MiB that a load left behind (measured with
 * bench/rest_after_load.ts: 1,000 busy connections, then 30 s of rest).
 */
export function prepareReclaimer(): Promise<void> {
  prepared ??= trimAllocator();
  return prepared;
}

/**
 * Has the process give memory back once every registered server has been
 * quiet for a moment after a load; returns the function that unregisters.
 */
export function reclaimMemoryWhenQuiet(
  probe: ActivityProbe,
): () => Promise<void> {
  reclaimer.add(probe);
  return () => {
    reclaimer.delete(probe);
    return reclaimer.settled();
  };
}

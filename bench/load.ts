/**
 * Generating load, the orchestrator's side: starts the generator Workers
 * (`load_worker.ts`, each owning a share of the connections), steers them
 * through connect, warm-up, the measuring window and the drain, and adds up
 * what they measured. Every answer from a worker is awaited with a bound, so
 * a stuck worker fails its scenario instead of hanging the run. The messages
 * below are the one contract both sides are compiled against.
 *
 * @module
 */
import {
  addProblems,
  type Exchange,
  type LatencyHistogram,
  merge,
  newHistogram,
  noProblems,
  type Problems,
} from "./traffic.ts";
import { WorkerInbox } from "./worker_inbox.ts";

/** Sent by the orchestrator to a generator worker. */
export type ToWorker =
  | {
    type: "init";
    host: string;
    port: number;
    /** PEM certificate to trust for a TLS server, or null for plain TCP. */
    tlsCa: string | null;
    /** Connections this worker opens. */
    connections: number;
    /** Lines kept in flight per connection; 0 = connect, read the welcome, stay idle. */
    depth: number;
    pool: Exchange[];
    /** Expected first line on each connection, or null (echo). */
    welcome: string | null;
    /** Index of this worker's first connection (spreads the pool offsets). */
    firstConnection: number;
    connectTimeoutMs: number;
    connectConcurrency: number;
  }
  /** Start sending (the warm-up). */
  | { type: "run" }
  /** Zero the counters: the measuring window starts. */
  | { type: "measure" }
  /** Freeze the counters, stop sending, drain, close, answer `result`. */
  | { type: "stop"; drainMs: number }
  /** Close idle connections, answer `closed`. */
  | { type: "close" };

/** Sent back by a generator worker. */
export type FromWorker =
  | { type: "ready"; connected: number; connectMs: number } & Problems
  | { type: "result" } & WindowCounts & Problems
  | { type: "closed" } & Problems
  | { type: "fatal"; message: string };

/** What a worker counted between `measure` and `stop`. */
export interface WindowCounts {
  /** Replies received. */
  lines: number;
  bytesIn: number;
  bytesOut: number;
  /** Latency from writing a request to the end of its reply line. */
  histogram: LatencyHistogram;
  /** Replies received on each of the worker's connections. */
  perConnection: number[];
  /**
   * How late a 10 ms timer in the worker fired (its own event-loop delay):
   * large values mean latency was added on the client side.
   */
  loopLag: LatencyHistogram;
  /**
   * Age at the window's end of the oldest request still unanswered then: a
   * starved connection's reply may never arrive inside the window, and its
   * wait so far is a lower bound on that reply's latency (0 if none).
   */
  oldestUnansweredMs: number;
  /** Connections that still had replies outstanding after the drain time. */
  stalled: number;
}

/** One generator Worker with a typed, time-bounded inbox. */
export class LoadWorker extends WorkerInbox<ToWorker, FromWorker> {
  constructor() {
    super("Load worker", new URL("./load_worker.ts", import.meta.url));
  }
}

/** Splits `connections` over at most `workers` generator workers. */
function shares(connections: number, workers: number): number[] {
  const count = Math.min(workers, connections);
  return Array.from(
    { length: count },
    (_, i) =>
      Math.floor(connections / count) + (i < connections % count ? 1 : 0),
  );
}

/** Where to connect and what to send. */
export interface LoadPlan {
  host: string;
  port: number;
  tlsCa: string | null;
  connections: number;
  depth: number;
  pool: Exchange[];
  welcome: string | null;
  /** Generator workers sharing the connections. */
  workers: number;
}

/**
 * Starts the generator workers and opens every connection (each has read its
 * welcome line when this returns). The workers are pushed to `into` at once,
 * so that the caller ends them even when this throws.
 */
export async function openConnections(
  plan: LoadPlan,
  into: LoadWorker[],
): Promise<{ connected: number; problems: Problems }> {
  const problems = noProblems();
  let first = 0;
  const started: LoadWorker[] = [];
  for (const share of shares(plan.connections, plan.workers)) {
    const generator = new LoadWorker();
    into.push(generator);
    started.push(generator);
    generator.post({
      type: "init",
      host: plan.host,
      port: plan.port,
      tlsCa: plan.tlsCa,
      connections: share,
      depth: plan.depth,
      pool: plan.pool,
      welcome: plan.welcome,
      firstConnection: first,
      connectTimeoutMs: 10_000,
      connectConcurrency: 64,
    });
    first += share;
  }
  let connected = 0;
  const budget = 20_000 + plan.connections * 10;
  for (const generator of started) {
    const ready = await generator.expect("ready", budget);
    connected += ready.connected;
    addProblems(problems, ready);
  }
  return { connected, problems };
}

/** Every worker's window counts added up. */
export type Totals = WindowCounts & Problems;

/**
 * Waits for every worker's `result` (after the caller posted `stop`) and adds
 * them up, with the problems already in `earlier` (those of connecting).
 */
export async function collectResults(
  generators: LoadWorker[],
  drainMs: number,
  earlier: Problems,
): Promise<Totals> {
  const totals: Totals = {
    lines: 0,
    bytesIn: 0,
    bytesOut: 0,
    histogram: newHistogram(),
    perConnection: [],
    loopLag: newHistogram(),
    oldestUnansweredMs: 0,
    stalled: 0,
    ...noProblems(),
  };
  addProblems(totals, earlier);
  for (const g of generators) {
    const r = await g.expect("result", drainMs + 10_000);
    totals.lines += r.lines;
    totals.bytesIn += r.bytesIn;
    totals.bytesOut += r.bytesOut;
    merge(totals.histogram, r.histogram);
    merge(totals.loopLag, r.loopLag);
    totals.perConnection.push(...r.perConnection);
    totals.stalled += r.stalled;
    totals.oldestUnansweredMs = Math.max(
      totals.oldestUnansweredMs,
      r.oldestUnansweredMs,
    );
    addProblems(totals, r);
  }
  return totals;
}

/** Closes every worker's idle connections and adds up their problems. */
export async function closeIdle(
  generators: LoadWorker[],
  into: Problems,
): Promise<void> {
  for (const g of generators) g.post({ type: "close" });
  for (const g of generators) {
    addProblems(into, await g.expect("closed", 10_000));
  }
}

/**
 * Least-served connection over the median one: the fewest replies any
 * connection got in the window divided by the median count (1.0 = every
 * connection served alike; 0 = some connection got nothing, or the median
 * one did).
 */
export function leastServedOverMedian(perConnection: number[]): number {
  if (perConnection.length === 0) return NaN;
  const sorted = [...perConnection].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  // A median connection that got nothing: half the connections starved.
  return median > 0 ? sorted[0] / median : 0;
}

/**
 * The messages between the orchestrator (`bench/generators.ts`) and a load
 * worker (`bench/load_worker.ts`): the one contract both sides are compiled
 * against, so a field renamed on one side fails `deno check` on the other.
 *
 * @module
 */
import type { LatencyHistogram } from "./histogram.ts";

/** Sent by the orchestrator. */
export type ToWorker =
  | {
    type: "init";
    host: string;
    port: number;
    /** Number of connections this worker opens. */
    connections: number;
    /** Lines kept in flight per connection; 0 = connect, read welcome, then stay idle. */
    depth: number;
    requests: string[];
    replies: string[];
    /** Expected first line on each connection, or null (echo). */
    welcome: string | null;
    /** Index of this worker's first connection (spreads the pool offsets). */
    firstConnection: number;
    /** Replies slower than this count as `slow` (fairness target). */
    slowMs: number;
    connectTimeoutMs: number;
    connectConcurrency: number;
  }
  | { type: "run" }
  | { type: "measure" }
  | { type: "stop"; drainMs: number }
  | { type: "close" };

/** Sent back to the orchestrator. */
export type FromWorker =
  | { type: "ready"; connected: number; connectMs: number } & Problems
  | {
    type: "result";
    /** Replies received between `measure` and `stop`. */
    lines: number;
    bytesIn: number;
    bytesOut: number;
    histogram: LatencyHistogram;
    slow: number;
    /**
     * How late a 10 ms timer in this worker fired (the generator's own event
     * loop delay): large values mean latency was added on the client side.
     */
    loopLag: LatencyHistogram;
    /** Connections that still had replies outstanding after the drain time. */
    stalled: number;
  } & Problems
  | { type: "closed" } & Problems
  | { type: "fatal"; message: string };

/** Error and mismatch counts with a few examples, over the whole worker life. */
export interface Problems {
  errors: number;
  errorSamples: string[];
  mismatches: number;
  mismatchSamples: string[];
}

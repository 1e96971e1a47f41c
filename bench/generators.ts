/**
 * The orchestrator's side of the load generators: Deno Worker threads
 * running `bench/load_worker.ts`, each owning a share of the connections.
 * Every reply from a worker is awaited with a bound, so a stuck worker fails
 * its scenario instead of hanging the run.
 *
 * @module
 */
import type { FromWorker, Problems, ToWorker } from "./load_messages.ts";
import { live } from "./live.ts";
import type { Options } from "./options.ts";
import type { ServerChild } from "./proc.ts";
import { withTimeout } from "./timing.ts";
import { CALC_WELCOME, type Exchange, type Target } from "./traffic.ts";

const SLOW_MS = 100;

/** One load-generator Worker with a typed, time-bounded inbox. */
export class LoadWorker {
  readonly worker: Worker;
  #inbox: FromWorker[] = [];
  #wake: (() => void) | undefined;

  constructor() {
    this.worker = new Worker(new URL("./load_worker.ts", import.meta.url), {
      type: "module",
    });
    live.workers.add(this.worker);
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      this.#inbox.push(event.data);
      this.#wake?.();
    };
    this.worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#inbox.push({ type: "fatal", message: event.message });
      this.#wake?.();
    };
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  /** The next message, which must be of `type`; rejects on a worker failure or timeout. */
  async expect<T extends FromWorker["type"]>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<FromWorker, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Load worker sent no "${type}" in time`);
      await withTimeout(
        new Promise<void>((resolve) => this.#wake = resolve),
        left,
        `load worker "${type}"`,
      ).catch(() => {});
      this.#wake = undefined;
    }
    const message = this.#inbox.shift()!;
    if (message.type === "fatal") {
      throw new Error(`Load worker failed: ${message.message}`);
    }
    if (message.type !== type) {
      throw new Error(`Load worker sent "${message.type}", not "${type}"`);
    }
    return message as Extract<FromWorker, { type: T }>;
  }

  terminate(): void {
    this.worker.terminate();
    live.workers.delete(this.worker);
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

function emptyProblems(): Problems {
  return { errors: 0, errorSamples: [], mismatches: 0, mismatchSamples: [] };
}

/** Adds `from` into `into`, keeping at most five samples of each kind. */
export function addProblems(into: Problems, from: Problems): void {
  into.errors += from.errors;
  into.mismatches += from.mismatches;
  into.errorSamples.push(...from.errorSamples);
  into.mismatchSamples.push(...from.mismatchSamples);
  into.errorSamples.splice(5);
  into.mismatchSamples.splice(5);
}

/** Starts the generator workers and opens every connection (welcome read). */
export async function connectGenerators(
  server: ServerChild,
  target: Target,
  connections: number,
  depth: number,
  pool: Exchange[],
  options: Options,
): Promise<
  { generators: LoadWorker[]; connected: number; problems: Problems }
> {
  const generators: LoadWorker[] = [];
  const problems = emptyProblems();
  let first = 0;
  for (const share of shares(connections, options.clientWorkers)) {
    const generator = new LoadWorker();
    generators.push(generator);
    generator.post({
      type: "init",
      host: server.host,
      port: server.port,
      connections: share,
      depth,
      requests: pool.map((e) => e.request),
      replies: pool.map((e) => e.reply),
      welcome: target === "calc" ? CALC_WELCOME : null,
      firstConnection: first,
      slowMs: SLOW_MS,
      connectTimeoutMs: 10_000,
      connectConcurrency: 64,
    });
    first += share;
  }
  let connected = 0;
  const budget = 20_000 + connections * 5;
  for (const generator of generators) {
    const ready = await generator.expect("ready", budget);
    connected += ready.connected;
    addProblems(problems, ready);
  }
  return { generators, connected, problems };
}

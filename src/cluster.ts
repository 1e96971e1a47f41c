/**
 * `--workers N`: N listeners share one port (Linux `SO_REUSEPORT`), each in
 * its own Deno Worker with its own event loop, so the kernel spreads
 * connections over all cores. The main thread only supervises: it starts the
 * workers, relays shutdown and abort, and adds up their summaries and metrics.
 *
 * @module
 */
import type { ServerOptions, ShutdownSummary } from "./line_server.ts";
import { type MetricsSnapshot, ServerMetrics } from "./metrics.ts";
import { logDropCounter, type LogFormat, writeStderrLine } from "./logging.ts";
import type { LogLevel } from "@logtape/logtape";
import type { ProtocolName } from "./protocol_names.ts";
import type { SharedChatSettings } from "./served_protocol.ts";

/** What `server.ts` and each worker pass to `startServer`, but the protocol. */
export type WorkerServerOptions = Omit<
  ServerOptions,
  "protocol" | "logger" | "metrics"
>;

/** What the main thread tells a worker. */
export type ToWorker =
  | {
    type: "start";
    /** Looked up in `builtinProtocols` by the worker. */
    protocol: ProtocolName;
    /** The shared chat room (each worker is an instance of it). */
    chat: SharedChatSettings | undefined;
    options: WorkerServerOptions;
    logLevel: LogLevel;
    logFormat: LogFormat;
    /** The main thread's count of dropped log lines, shared: one count for the process. */
    logDropCounter: SharedArrayBuffer;
  }
  | { type: "shutdown" }
  | { type: "abort" }
  | { type: "metrics"; id: number };

/** What a worker tells the main thread. */
export type FromWorker =
  | { type: "listening"; addr: Deno.NetAddr }
  | {
    type: "failed";
    error: string;
    addrInUse: boolean;
    /** The shared chat room could not be joined. */
    chatUnreachable?: boolean;
  }
  | { type: "finished"; summary: ShutdownSummary }
  | { type: "metrics"; id: number; snapshot: MetricsSnapshot };

/** Options of {@linkcode WorkerPool.start}. */
export interface WorkerPoolOptions {
  count: number;
  protocol: ProtocolName;
  /** With `--chat-redis`: every worker joins this room as an instance of it. */
  chat?: SharedChatSettings;
  /**
   * Passed to every worker's `startServer`, except that `maxConnections` is
   * split between the workers (each counts only its own connections) and
   * `reusePort` is set. `maxConnectionsPerIp` is not split: connections from
   * one address spread over the workers unevenly, so each worker applies
   * the whole limit to its own.
   */
  server: Omit<WorkerServerOptions, "reusePort">;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

/**
 * Thrown when a worker cannot start: it cannot bind (`addrInUse` tells the
 * usual reason), or cannot join the shared chat room (`chatUnreachable`).
 */
export class WorkerStartError extends Error {
  constructor(
    message: string,
    readonly addrInUse: boolean,
    readonly chatUnreachable = false,
  ) {
    super(message);
  }
}

/** One worker thread and the messages it sends. */
class WorkerHandle {
  readonly worker: Worker;
  readonly #waiters = new Map<string, (message: FromWorker) => void>();

  constructor() {
    this.worker = new Worker(
      new URL("./cluster_worker.ts", import.meta.url).href,
      {
        type: "module",
      },
    );
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      const key = message.type === "metrics"
        ? `metrics:${message.id}`
        : message.type;
      const waiter = this.#waiters.get(key) ??
        (message.type === "failed"
          ? this.#waiters.get("listening")
          : undefined);
      this.#waiters.delete(key);
      waiter?.(message);
    };
    // A worker that dies must not leave the supervisor waiting forever.
    this.worker.onerror = (event) => {
      event.preventDefault();
      writeStderrLine(`lineserver: worker failed: ${event.message}`);
      const failed = this.#waiters.get("listening");
      failed?.({ type: "failed", error: event.message, addrInUse: false });
      const finished = this.#waiters.get("finished");
      finished?.({
        type: "finished",
        summary: { served: 0, closedGracefully: 0, closedByForce: 0 },
      });
      this.#waiters.clear();
    };
  }

  /** Waits for the next message of `type` (a failed start also answers "listening"). */
  next(key: string): Promise<FromWorker> {
    return new Promise((resolve) => this.#waiters.set(key, resolve));
  }

  send(message: ToWorker) {
    this.worker.postMessage(message);
  }
}

/** N workers serving one port; the same surface as a LineServer for server.ts. */
export class WorkerPool {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<ShutdownSummary>;
  readonly #workers: WorkerHandle[];
  #stopping: Promise<ShutdownSummary> | undefined;
  #nextMetricsId = 0;
  /** The latest sum of the workers' metrics. */
  #lastTotal = new ServerMetrics();
  /** True once every worker has finished and been terminated. */
  #terminated = false;

  private constructor(addr: Deno.NetAddr, workers: WorkerHandle[]) {
    this.addr = addr;
    this.#workers = workers;
    const summaries = workers.map((w) => w.next("finished"));
    this.finished = Promise.all(summaries).then((messages) => {
      this.#terminated = true;
      for (const w of workers) w.worker.terminate();
      const total: ShutdownSummary = {
        served: 0,
        closedGracefully: 0,
        closedByForce: 0,
      };
      for (const m of messages) {
        if (m.type !== "finished") continue;
        total.served += m.summary.served;
        total.closedGracefully += m.summary.closedGracefully;
        total.closedByForce += m.summary.closedByForce;
      }
      return total;
    });
  }

  /**
   * Starts the workers. The first binds the requested port (0 picks one);
   * the others join it on that port, so port 0 works here too.
   */
  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const workers: WorkerHandle[] = [];
    // Each worker counts only its own connections: split the limit evenly.
    const maxConnections = Math.ceil(
      (options.server.maxConnections ?? 10000) / options.count,
    );
    let addr: Deno.NetAddr | undefined;
    try {
      for (let i = 0; i < options.count; i++) {
        const handle = new WorkerHandle();
        workers.push(handle);
        const ready = handle.next("listening");
        handle.send({
          type: "start",
          protocol: options.protocol,
          chat: options.chat,
          options: {
            ...options.server,
            port: addr?.port ?? options.server.port,
            maxConnections,
            reusePort: true,
          },
          logLevel: options.logLevel,
          logFormat: options.logFormat,
          logDropCounter: logDropCounter(),
        });
        const message = await ready;
        if (message.type === "failed") {
          throw new WorkerStartError(
            message.error,
            message.addrInUse,
            message.chatUnreachable,
          );
        }
        if (message.type === "listening") addr ??= message.addr;
      }
    } catch (error) {
      for (const w of workers) w.worker.terminate();
      throw error;
    }
    return new WorkerPool(addr!, workers);
  }

  /** True from the start of a shutdown on. */
  get draining(): boolean {
    return this.#stopping !== undefined;
  }

  /** Graceful shutdown of every worker (each drains as a LineServer does). */
  shutdown(): Promise<ShutdownSummary> {
    if (this.#stopping === undefined) {
      for (const w of this.#workers) w.send({ type: "shutdown" });
      this.#stopping = this.finished;
    }
    return this.#stopping;
  }

  /** Closes everything in every worker at once. */
  abort(): Promise<ShutdownSummary> {
    this.#stopping ??= this.finished;
    for (const w of this.#workers) w.send({ type: "abort" });
    return this.#stopping;
  }

  /** The sum of every worker's metrics. */
  async metrics(): Promise<ServerMetrics> {
    // Once the workers are gone the last sum stands: a scrape must never hang.
    if (!this.#terminated) {
      const id = this.#nextMetricsId++;
      const ended = this.finished.then(() => undefined);
      const replies = await Promise.all(this.#workers.map((w) => {
        const reply = w.next(`metrics:${id}`);
        w.send({ type: "metrics", id });
        return Promise.race([reply, ended]);
      }));
      if (!replies.includes(undefined)) {
        const sum = new ServerMetrics();
        for (const r of replies) if (r?.type === "metrics") sum.add(r.snapshot);
        this.#lastTotal = sum;
      }
    }
    const total = new ServerMetrics();
    total.add(this.#lastTotal.snapshot());
    total.draining = this.draining ? 1 : 0;
    return total;
  }
}

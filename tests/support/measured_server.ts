/**
 * A `server.ts` subprocess whose resident memory a test measures, with the
 * calculator clients the test connects to it. It logs warnings only, so
 * that its own log lines cost it nothing that would show in the figures.
 * Linux only (`/proc`).
 *
 * @module
 */
import { WELCOME } from "./calc_replies.ts";
import {
  connectGreeted,
  MiB,
  peakRssBytes,
  resetPeakRss,
  rssBytes,
} from "./hardening.ts";
import type { LineClient } from "./line_client.ts";
import { ServerProcess } from "./server_process.ts";

/**
 * The server process and its clients; disposing it closes the clients and
 * then stops the process.
 */
export class MeasuredServer {
  readonly process: ServerProcess;
  /** Every client {@linkcode MeasuredServer.connect} opened, in order. */
  readonly clients: LineClient[] = [];

  private constructor(process: ServerProcess) {
    this.process = process;
  }

  /**
   * Starts `server.ts --port 0 --log-level warning` (and `options`, say
   * `--tls-cert`, with `denoFlags` such as `--allow-read=DIR`) and waits
   * for its listening line.
   */
  static async start(
    options: string[] = [],
    denoFlags?: string[],
  ): Promise<MeasuredServer> {
    return new MeasuredServer(
      await ServerProcess.start([
        "--port",
        "0",
        "--log-level",
        "warning",
        ...options,
      ], { denoFlags }),
    );
  }

  /** The process ID, whose `/proc` entries hold the measurements. */
  get pid(): number {
    return this.process.child.pid;
  }

  get port(): number {
    return this.process.port;
  }

  /** Adds a client connected elsewhere (over TLS) to those closed at the end. */
  adopt(client: LineClient): LineClient {
    this.clients.push(client);
    return client;
  }

  /** Connects a client and checks that its first line is `greeting`. */
  async connect(greeting = WELCOME): Promise<LineClient> {
    const client = await connectGreeted(this.port, greeting);
    this.clients.push(client);
    return client;
  }

  /**
   * How much the server's peak resident memory grew (bytes) while `work`
   * ran, from its level before; logged as `what`.
   */
  async peakGrowthDuring<T>(
    what: string,
    work: () => Promise<T>,
  ): Promise<{ growth: number; result: T }> {
    const baseline = await this.rss();
    await resetPeakRss(this.pid);
    const result = await work();
    const growth = (await peakRssBytes(this.pid)) - baseline;
    console.log(
      `memory: ${what}: peak RSS ${(baseline / MiB).toFixed(0)} MiB + ${
        (growth / MiB).toFixed(1)
      } MiB`,
    );
    return { growth, result };
  }

  /** The server's resident memory now, in bytes (VmRSS). */
  rss(): Promise<number> {
    return rssBytes(this.pid);
  }

  /** Closes every client (each once; closing again does nothing). */
  closeClients(): void {
    for (const client of this.clients) client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.closeClients();
    await this.process.stop();
  }
}

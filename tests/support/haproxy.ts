/**
 * Runs the system's HAProxy (Debian package `haproxy`) with
 * `deploy/haproxy.cfg` on free loopback ports, and reads its server states
 * from the stats page.
 *
 * @module
 */
import { withTimeout } from "./deadline.ts";
import { httpGet } from "./admin_client.ts";
import { ProcessOutput } from "./process_output.ts";
import { freePort, toolMissingReason } from "./tools.ts";

/** Absolute path of the project's HAProxy configuration. */
export const HAPROXY_CONFIG =
  new URL("../../deploy/haproxy.cfg", import.meta.url).pathname;

/** Why HAProxy tests cannot run here, or `undefined` if they can. */
export function haproxyMissingReason(): Promise<string | undefined> {
  return toolMissingReason("haproxy", ["-v"], "haproxy");
}

/** `n` distinct ports that were free a moment ago. */
export function distinctFreePorts(n: number): number[] {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(freePort());
  return [...ports];
}

/** A running `haproxy -db` child process. */
export class HaproxyProcess {
  readonly child: Deno.ChildProcess;
  /** Port of the stats page (`/stats;csv`). */
  readonly statsPort: number;
  /** What HAProxy writes, and its exit. */
  readonly #output: ProcessOutput;

  private constructor(child: Deno.ChildProcess, statsPort: number) {
    this.child = child;
    this.statsPort = statsPort;
    this.#output = new ProcessOutput(child, "haproxy");
  }

  /**
   * Starts HAProxy in the foreground with `config` (default
   * `deploy/haproxy.cfg`) and the given environment (the `${NAME-default}`
   * variables the file documents), and waits until its stats page answers.
   */
  static async start(
    env: Record<string, string>,
    statsPort: number,
    timeoutMs = 10000,
    config = HAPROXY_CONFIG,
  ): Promise<HaproxyProcess> {
    const child = new Deno.Command("haproxy", {
      args: ["-db", "-f", config],
      env: { ...env, LINESERVER_HAPROXY_STATS: `127.0.0.1:${statsPort}` },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const haproxy = new HaproxyProcess(child, statsPort);
    try {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        if (haproxy.#output.exited) throw new Error("haproxy exited at start");
        try {
          await haproxy.serverStatuses();
          return haproxy;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } catch (error) {
      await haproxy.stop();
      throw new Error(`${(error as Error).message}\n${haproxy.output}`);
    }
  }

  /** Everything HAProxy wrote: its stdout (its log), then its stderr. */
  get output(): string {
    return this.#output.stdout + this.#output.stderr;
  }

  /** `backend/server` → status (`UP`, `DOWN`, `UP 1/2`, ...) from `/stats;csv`. */
  async serverStatuses(): Promise<Map<string, string>> {
    const { status, body } = await httpGet(this.statsPort, "/stats;csv", {
      timeoutMs: 2000,
    });
    if (status !== 200) throw new Error(`/stats;csv answered ${status}`);
    const [header, ...rows] = body.trim().split("\n");
    const columns = header.replace(/^# /, "").split(",");
    const [px, sv, st] = ["pxname", "svname", "status"].map((name) =>
      columns.indexOf(name)
    );
    const statuses = new Map<string, string>();
    for (const row of rows) {
      const cells = row.split(",");
      statuses.set(`${cells[px]}/${cells[sv]}`, cells[st]);
    }
    return statuses;
  }

  /** Polls the stats page until `server` (`backend/server`) has `status`. */
  async waitForStatus(
    server: string,
    status: string,
    timeoutMs = 10000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: string | undefined;
    while (Date.now() < deadline) {
      last = (await this.serverStatuses()).get(server);
      if (last === status) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(
      `Timed out after ${timeoutMs} ms waiting for HAProxy to see ${server} ${status} (last: ${last})\n${this.output}`,
    );
  }

  /** Stops HAProxy (SIGTERM, then SIGKILL) by its PID and reaps it. */
  async stop(): Promise<void> {
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (this.#output.exited) break;
      try {
        this.child.kill(signal);
      } catch {
        // It exited between the check and the kill.
      }
      try {
        await withTimeout(this.#output.ended, 3000, "haproxy exit");
      } catch {
        // Escalate.
      }
    }
    await withTimeout(this.#output.ended, 3000, "haproxy exit");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

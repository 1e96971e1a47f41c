/**
 * Runs the system's `redis-server` (Debian package `redis-server`) on a
 * free loopback port, without persistence, for tests of the shared chat
 * room; stops it by its PID, and starts it again on the same port.
 *
 * @module
 */
import { pollUntil, withTimeout } from "./deadline.ts";
import { freePort } from "./tools.ts";
import { ProcessOutput } from "./process_output.ts";
import { toolMissingReason } from "./tools.ts";

/** Why Redis tests cannot run here, or `undefined` if they can. */
export function redisMissingReason(): Promise<string | undefined> {
  return toolMissingReason("redis-server", ["--version"], "redis-server");
}

/** A `redis-server` child process on 127.0.0.1. */
export class RedisProcess {
  readonly port: number;
  /** The running child, and what it writes. */
  #running: { child: Deno.ChildProcess; output: ProcessOutput } | undefined;

  private constructor(port: number) {
    this.port = port;
  }

  /** Starts Redis on a free port and waits until it answers. */
  static async start(): Promise<RedisProcess> {
    const redis = new RedisProcess(freePort());
    await redis.restart();
    return redis;
  }

  /** `redis://127.0.0.1:PORT`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts Redis (again) on its port, empty, and waits until it answers PING. */
  async restart(timeoutMs = 10000): Promise<void> {
    if (this.#running !== undefined) throw new Error("Redis is running");
    const child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = new ProcessOutput(child, "redis-server");
    this.#running = { child, output };
    try {
      await pollUntil("PING", () => this.ping(), (pong) => pong, timeoutMs);
    } catch {
      await this.stop();
      throw new Error(
        `redis-server did not answer:\n${output.stdout}${output.stderr}`,
      );
    }
  }

  /** True if Redis answers PING now. */
  async ping(): Promise<boolean> {
    try {
      return (await this.command("PING")) === "+PONG";
    } catch {
      return false;
    }
  }

  /** Sends one inline command and returns the first line of its reply. */
  async command(inline: string): Promise<string> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      await conn.write(new TextEncoder().encode(`${inline}\r\n`));
      const buffer = new Uint8Array(4096);
      let text = "";
      while (!text.includes("\r\n")) {
        const n = await withTimeout(conn.read(buffer), 2000, "Redis reply");
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
      }
      return text.split("\r\n")[0];
    } finally {
      conn.close();
    }
  }

  /** Stops Redis by its PID (SIGKILL: no goodbye to its clients) and reaps it. */
  async stop(): Promise<void> {
    if (this.#running === undefined) return;
    const { child, output } = this.#running;
    try {
      child.kill("SIGKILL");
    } catch {
      // It has exited already.
    }
    await withTimeout(output.ended, 5000, "redis-server exit");
    this.#running = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Runs `server.ts` as a real subprocess, the way a user runs it, and reads its
 * stderr: the `listening on HOST:PORT` line gives the port to connect to.
 *
 * @module
 */
import { withTimeout } from "./deadline.ts";

/** Absolute path of the project's `server.ts`. */
export const SERVER_ENTRY =
  new URL("../../server.ts", import.meta.url).pathname;

/** Matches the server's own listening line, not `admin listening on`. */
const LISTENING = /(?<!admin )listening on (\[[^\]]+\]|[^\s:"]+):(\d+)\D/;

export interface StartOptions {
  /** Extra `deno run` flags before the script, e.g. `--allow-read=cert.pem`. */
  denoFlags?: string[];
  /** How long to wait for the listening line. Default 15 s (first run type-checks). */
  startTimeoutMs?: number;
  /** Wrap the command, e.g. `["prlimit", "--nofile=64", "--"]`. */
  wrapper?: string[];
}

/** A running `server.ts` child process. */
export class ServerProcess {
  readonly child: Deno.ChildProcess;
  /** The host from the listening line. */
  host = "";
  /** The real port from the listening line. */
  port = 0;
  #stderr = "";
  #stdout = "";
  #stderrDone: Promise<void>;
  #stdoutDone: Promise<void>;
  #statusPromise: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#stderrDone = this.#collect(child.stderr, (t) => this.#stderr += t);
    this.#stdoutDone = this.#collect(child.stdout, (t) => this.#stdout += t);
    this.#statusPromise = child.status.then((status) => this.#exited = status);
  }

  /** Starts `deno run --allow-net server.ts ...args`. It does not wait for listening. */
  static spawn(args: string[], options: StartOptions = {}): ServerProcess {
    const deno = [
      "deno",
      "run",
      "--allow-net",
      ...(options.denoFlags ?? []),
      SERVER_ENTRY,
      ...args,
    ];
    const argv = [...(options.wrapper ?? []), ...deno];
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ServerProcess(child);
  }

  /** Starts the server and waits for its `listening on` line. */
  static async start(
    args: string[],
    options: StartOptions = {},
  ): Promise<ServerProcess> {
    const server = ServerProcess.spawn(args, options);
    try {
      const match = await server.waitForStderr(
        LISTENING,
        options.startTimeoutMs ?? 15000,
      );
      server.host = match[1];
      server.port = Number(match[2]);
      return server;
    } catch (error) {
      await server.stop();
      throw new Error(`${(error as Error).message}\nstderr:\n${server.stderr}`);
    }
  }

  async #collect(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
  ) {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
    }
  }

  /** Everything the server wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Everything the server wrote to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  /** The exit status once the process has ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /** Waits until stderr matches `pattern`; fails if the process exits first or on timeout. */
  async waitForStderr(
    pattern: RegExp,
    timeoutMs = 5000,
  ): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const match = this.#stderr.match(pattern);
      if (match) return match;
      if (this.#exited) {
        await this.#stderrDone;
        const late = this.#stderr.match(pattern);
        if (late) return late;
        throw new Error(
          `Server exited (code ${this.#exited.code}) before stderr matched ${pattern}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for stderr to match ${pattern}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Sends a signal to the process (only this process, by its PID). */
  signal(signal: Deno.Signal): void {
    if (!this.#exited) this.child.kill(signal);
  }

  /** Waits for the process to exit and for its output to be read. */
  async waitForExit(timeoutMs = 10000): Promise<Deno.CommandStatus> {
    const status = await withTimeout(
      this.#statusPromise,
      timeoutMs,
      "server exit",
    );
    await withTimeout(
      Promise.all([this.#stderrDone, this.#stdoutDone]),
      2000,
      "server output",
    );
    return status;
  }

  /** Kills the process if it still runs (SIGKILL) and reaps it. Always safe to call. */
  async stop(): Promise<void> {
    if (!this.#exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // It exited between the check and the kill.
      }
    }
    await this.waitForExit();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Runs `server.ts` with `args` to completion (for options that exit at once). */
export async function runServerToExit(
  args: string[],
  timeoutMs = 15000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const server = ServerProcess.spawn(args);
  try {
    const status = await server.waitForExit(timeoutMs);
    return { code: status.code, stdout: server.stdout, stderr: server.stderr };
  } finally {
    await server.stop();
  }
}

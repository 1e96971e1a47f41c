/**
 * Runs a script (`client.ts`, an example) as a real subprocess, the way a
 * user runs it: its stdin is a pipe the test writes to (and ends), its
 * stdout and stderr are collected as they arrive.
 *
 * @module
 */
import { settleWithin } from "../../src/deadline.ts";
import { withTimeout } from "./deadline.ts";

/** Absolute path of the project's `client.ts`. */
export const CLIENT_ENTRY =
  new URL("../../client.ts", import.meta.url).pathname;

const encoder = new TextEncoder();

/** A running script. */
export class ScriptProcess {
  readonly child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  readonly #waiters = new Set<() => void>();
  readonly #input: WritableStreamDefaultWriter<Uint8Array>;
  readonly #outputDone: Promise<void>;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;
  /** When the process was started (ms since the epoch). */
  readonly startedAt = Date.now();

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#input = child.stdin.getWriter();
    // A script that exits first closes the pipe: later writes fail, harmlessly.
    this.#input.closed.catch(() => {});
    this.#outputDone = Promise.all([
      this.#collect(child.stdout, (t) => this.#stdout += t),
      this.#collect(child.stderr, (t) => this.#stderr += t),
    ]).then(() => {});
    this.#status = child.status.then((status) => {
      this.#exited = status;
      this.#wake();
      return status;
    });
  }

  /** Starts `deno run --allow-net --allow-read client.ts ...args`. */
  static client(args: string[]): ScriptProcess {
    return ScriptProcess.spawn(CLIENT_ENTRY, args);
  }

  /** Starts `deno run --allow-net --allow-read ENTRY ...args`. */
  static spawn(entry: string, args: string[]): ScriptProcess {
    const child = new Deno.Command("deno", {
      args: ["run", "--allow-net", "--allow-read", entry, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ScriptProcess(child);
  }

  async #collect(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
  ) {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      this.#wake();
    }
  }

  #wake() {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The exit status once the process has ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /** Writes `text` to the script's stdin. */
  async write(text: string): Promise<void> {
    await this.#input.write(encoder.encode(text));
  }

  /** Ends the script's stdin (as Ctrl-D does). */
  async endInput(): Promise<void> {
    await this.#input.close();
  }

  /** Waits until `check(stdout)` holds; fails if the process exits first or on timeout. */
  async waitForStdout(
    what: string,
    check: (stdout: string) => boolean,
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.#stdout)) {
      if (this.#exited) {
        throw new Error(
          `script exited (${this.#exited.code}) before ${what}; stdout ${
            JSON.stringify(this.#stdout)
          }, stderr ${JSON.stringify(this.#stderr)}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for ${what}; stdout ${
            JSON.stringify(this.#stdout)
          }`,
        );
      }
      await settleWithin(
        new Promise<void>((resolve) => this.#waiters.add(resolve)),
        left,
      );
    }
  }

  /** Waits for the process to exit and its output to be read. */
  async waitForExit(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    const status = await withTimeout(
      this.#status,
      timeoutMs,
      "the script to exit",
    );
    await withTimeout(this.#outputDone, 2000, "the script's output");
    return status;
  }

  /** Sends a signal to the process. */
  signal(signal: Deno.Signal): void {
    if (!this.#exited) this.child.kill(signal);
  }

  /** Kills the process if it still runs and reaps it. Always safe to call. */
  async stop(): Promise<void> {
    if (!this.#exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // It exited between the check and the kill.
      }
    }
    await this.#input.close().catch(() => {});
    await this.waitForExit();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * CPU time (user + system, in seconds) the process `pid` has used so far,
 * from `/proc/PID/stat` (Linux; clock ticks are 1/100 s). Read through
 * `sh`: Deno lets only a program with every permission read `/proc`.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  const { code, stdout } = await new Deno.Command("sh", {
    args: ["-c", 'cat "/proc/$0/stat"', String(pid)],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (code !== 0) throw new Error(`Cannot read /proc/${pid}/stat`);
  const stat = new TextDecoder().decode(stdout);
  // The command name (field 2) may contain spaces: count after its ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / 100;
}

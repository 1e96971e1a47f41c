/**
 * Runs a script (`client.ts`, an example) as a real subprocess, the way a
 * user runs it: its stdin is a pipe the test writes to (and ends), its
 * stdout and stderr are collected as they arrive.
 *
 * @module
 */
import { ProcessOutput } from "./process_output.ts";

/** Absolute path of the project's `client.ts`. */
const CLIENT_ENTRY = new URL("../../client.ts", import.meta.url).pathname;

const encoder = new TextEncoder();

/** A running script. */
export class ScriptProcess {
  readonly child: Deno.ChildProcess;
  /** What the script writes, and its exit. */
  readonly #output: ProcessOutput;
  readonly #input: WritableStreamDefaultWriter<Uint8Array>;
  /** When the process was started (ms since the epoch). */
  readonly startedAt = Date.now();

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#input = child.stdin.getWriter();
    // A script that exits first closes the pipe: later writes fail, harmlessly.
    this.#input.closed.catch(() => {});
    this.#output = new ProcessOutput(child, "script");
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

  get stdout(): string {
    return this.#output.stdout;
  }

  get stderr(): string {
    return this.#output.stderr;
  }

  /** The exit status once the process has ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#output.exited;
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
    try {
      await this.#output.waitFor(
        what,
        () => check(this.stdout) || undefined,
        timeoutMs,
      );
    } catch (error) {
      throw new Error(
        `${(error as Error).message}; stdout ${
          JSON.stringify(this.stdout)
        }, stderr ${JSON.stringify(this.stderr)}`,
      );
    }
  }

  /** Waits for the process to exit and its output to be read. */
  waitForExit(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    return this.#output.waitForExit(timeoutMs);
  }

  /** Sends a signal to the process. */
  signal(signal: Deno.Signal): void {
    if (!this.exited) this.child.kill(signal);
  }

  /** Kills the process if it still runs and reaps it. Always safe to call. */
  async stop(): Promise<void> {
    if (!this.exited) {
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

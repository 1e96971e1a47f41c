/**
 * What a child process writes to stdout and stderr, collected as text as it
 * arrives, and waits on it that look again each time it grows or the
 * process exits, so a test acts on a line the moment it is written. The
 * part `ServerProcess` and `ScriptProcess` share.
 *
 * @module
 */
import { settleWithin } from "../../src/deadline.ts";
import { withTimeout } from "./deadline.ts";

/** The output and the exit of one spawned child (stdout and stderr piped). */
export class ProcessOutput {
  /** What the process is, in messages: `server`, `script`. */
  readonly #name: string;
  #stdout = "";
  #stderr = "";
  /** Woken when either stream grows or the process exits. */
  readonly #waiters = new Set<() => void>();
  /** Both streams read to their end. */
  readonly #done: Promise<void>;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;

  /** Starts reading `child`'s stdout and stderr; `name` says what it is in messages. */
  constructor(child: Deno.ChildProcess, name: string) {
    this.#name = name;
    this.#done = Promise.all([
      this.#collect(child.stdout, (t) => this.#stdout += t),
      this.#collect(child.stderr, (t) => this.#stderr += t),
    ]).then(() => {});
    this.#status = child.status.then((status) => {
      this.#exited = status;
      this.#wake();
      return status;
    });
  }

  async #collect(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
  ): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      this.#wake();
    }
  }

  #wake(): void {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  /** Everything the process wrote to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  /** Everything the process wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** The exit status once the process has ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /**
   * Waits until `find()` returns a value (not undefined), looking again each
   * time the output grows. Fails if the process exits first (after a last
   * look once its output is read to the end) or after `timeoutMs`; `what`
   * names the awaited output in those errors.
   */
  async waitFor<T>(
    what: string,
    find: () => T | undefined,
    timeoutMs: number,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = find();
      if (found !== undefined) return found;
      if (this.#exited) {
        await settleWithin(this.#done, Math.max(0, deadline - Date.now()));
        const late = find();
        if (late !== undefined) return late;
        throw new Error(
          `The ${this.#name} exited (code ${this.#exited.code}) while waiting for ${what}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
      }
      await settleWithin(
        new Promise<void>((resolve) => this.#waiters.add(resolve)),
        left,
      );
    }
  }

  /**
   * Settles once the process has exited and its output is read to the end,
   * with no bound of its own: for a caller that bounds the two as one.
   */
  get ended(): Promise<Deno.CommandStatus> {
    return Promise.all([this.#status, this.#done]).then(([status]) => status);
  }

  /** Waits for the process to exit and for its output to be read to the end. */
  async waitForExit(timeoutMs: number): Promise<Deno.CommandStatus> {
    const status = await withTimeout(
      this.#status,
      timeoutMs,
      `the ${this.#name} to exit`,
    );
    await withTimeout(this.#done, 2000, `the ${this.#name}'s output`);
    return status;
  }
}

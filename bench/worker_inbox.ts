/**
 * A bench Worker and its inbox: messages are posted to the worker, and its
 * answers are awaited one by one, each with a bound, so a stuck worker fails
 * its scenario instead of hanging the run. An error the worker throws
 * arrives as a `fatal` message. The load generators (`load.ts`) and the
 * heavy client (`heavy_clients.ts`) are such workers.
 *
 * @module
 */
import { settleWithin } from "../src/deadline.ts";

/** What every worker may answer: its failure, whatever else it says. */
export interface Fatal {
  type: "fatal";
  message: string;
}

/**
 * A Worker running `script` that receives `To` and answers `From`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WorkerInbox } from "./worker_inbox.ts";
 *
 * const script = `data:text/javascript,onmessage = (e) => postMessage({ type: "echo", n: e.data.n });`;
 * const worker = new WorkerInbox<{ n: number }, { type: "echo"; n: number }>(
 *   "Echo worker",
 *   new URL(script),
 * );
 * try {
 *   worker.post({ n: 7 });
 *   assert.equal((await worker.expect("echo", 5000)).n, 7);
 * } finally {
 *   worker.terminate();
 * }
 * ```
 */
export class WorkerInbox<To, From extends { type: string }> {
  readonly #name: string;
  readonly #worker: Worker;
  #inbox: (From | Fatal)[] = [];
  #wake: (() => void) | undefined;

  /** Starts `script` as a module Worker; `name` begins every error message. */
  constructor(name: string, script: URL) {
    this.#name = name;
    this.#worker = new Worker(script, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<From>) => {
      this.#receive(event.data);
    };
    this.#worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#receive({ type: "fatal", message: event.message });
    };
  }

  #receive(message: From | Fatal): void {
    this.#inbox.push(message);
    this.#wake?.();
  }

  post(message: To): void {
    this.#worker.postMessage(message);
  }

  /** The next message, which must be of `type`; rejects on a worker failure or timeout. */
  async expect<T extends From["type"]>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<From, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.#name} sent no "${type}" in time`);
      await settleWithin(
        new Promise<void>((resolve) => this.#wake = resolve),
        left,
      );
      this.#wake = undefined;
    }
    const message = this.#inbox.shift()!;
    if (message.type === "fatal") {
      throw new Error(`${this.#name} failed: ${(message as Fatal).message}`);
    }
    if (message.type !== type) {
      throw new Error(`${this.#name} sent "${message.type}", not "${type}"`);
    }
    return message as Extract<From, { type: T }>;
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

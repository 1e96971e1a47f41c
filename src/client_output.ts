/**
 * The sending half of a client connection: what is sent in one turn goes
 * out in one write, and a sender waits while the socket's buffer is full
 * (the server is not reading).
 *
 * @module
 */
import type net from "node:net";
import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import type { LineClientError } from "./client_error.ts";

const utf8 = new TextEncoder();

/** What the output asks of the connection that owns it. */
export interface OutputOwner {
  /** Reads waiting for a reply: more than one means requests are in flight. */
  waitingReads(): number;
  /** Called at every write (the read deadline counts from it). */
  onWrite(): void;
}

/**
 * Batches writes to one socket and holds back senders while its buffer is
 * full. Once {@linkcode error} is set, every send fails with it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import net from "node:net";
 * import { echoProtocol, startServer } from "../mod.ts";
 * import { ClientOutput } from "./client_output.ts";
 * import { LineClientError } from "./client_error.ts";
 *
 * await using server = await startServer({ port: 0, protocol: echoProtocol });
 * const socket = net.connect(server.addr.port, "127.0.0.1");
 * const echoed = new Promise((resolve) => socket.once("data", resolve));
 * const output = new ClientOutput(socket, {
 *   waitingReads: () => 0,
 *   onWrite: () => {},
 * });
 * // Two sends in one turn, one write.
 * await Promise.all([output.write("a\n"), output.write("b\n")]);
 * assert.equal(String(await echoed), "a\r\nb\r\n");
 * await output.end(new LineClientError("aborted", "ended here"));
 * await assert.rejects(output.write("c\n"), /ended here/);
 * socket.destroy();
 * await new Promise((resolve) => socket.once("close", resolve));
 * ```
 */
export class ClientOutput {
  /** Why sending is no longer possible, once it is not. */
  error: LineClientError | undefined;
  readonly #socket: net.Socket;
  readonly #owner: OutputOwner;
  /** Output of this turn, written together at its end. */
  #parts: (string | Uint8Array)[] = [];
  #batch: PromiseWithResolvers<void> | undefined;
  /** Batches written while the buffer was full: settled at `drain`. */
  #waiting: PromiseWithResolvers<void>[] = [];
  readonly #flushLater = () => this.flush();

  constructor(socket: net.Socket, owner: OutputOwner) {
    this.#socket = socket;
    this.#owner = owner;
    socket.on("drain", () => {
      for (const waiter of this.#waiting.splice(0)) waiter.resolve();
    });
  }

  /**
   * Queues `data` for this turn's write. Resolves once the socket took it:
   * at once, or when the server has read enough of a full buffer.
   */
  write(data: string | Uint8Array): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error);
    this.#parts.push(data);
    if (this.#batch === undefined) {
      this.#batch = Promise.withResolvers<void>();
      // Alone, a request leaves at the end of this task. With others in
      // flight, their replies are arriving and each one's caller may send
      // the next request: waiting for the end of the event-loop turn lets
      // all of those go out in one write (one system call, not one each).
      if (this.#owner.waitingReads() > 1) setImmediate(this.#flushLater);
      else queueMicrotask(this.#flushLater);
    }
    return this.#batch.promise;
  }

  /** Writes this turn's output now. */
  flush(): void {
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#batch = undefined;
    const parts = this.#parts;
    this.#parts = [];
    if (this.error !== undefined) return batch.reject(this.error);
    this.#owner.onWrite();
    if (this.#socket.write(joinParts(parts))) batch.resolve();
    else this.#waiting.push(batch);
  }

  /**
   * Half-closes after what was sent so far; sending fails with `error`
   * from now on. Resolves once the end is written (or the socket closed).
   */
  end(error: LineClientError): Promise<void> {
    if (this.error !== undefined) return Promise.resolve();
    this.flush();
    this.error = error;
    return new Promise((resolve) => {
      this.#socket.once("finish", resolve);
      this.#socket.once("close", resolve);
      this.#socket.end();
    });
  }

  /** Sending is over (the first reason given stays): waiting senders fail. */
  fail(error: LineClientError): void {
    this.error ??= error;
    const waiting = this.#waiting.splice(0);
    if (this.#batch !== undefined) waiting.push(this.#batch);
    this.#batch = undefined;
    this.#parts = [];
    for (const waiter of waiting) waiter.reject(this.error);
  }
}

/** One write's bytes: one encoding call when the turn sent only lines. */
function joinParts(parts: (string | Uint8Array)[]): Uint8Array {
  if (parts.every((part) => typeof part === "string")) {
    return utf8.encode(parts.join(""));
  }
  return Buffer.concat(
    parts.map((part) => typeof part === "string" ? utf8.encode(part) : part),
  );
}

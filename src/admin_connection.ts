/**
 * One connection to the admin port, from accept to close: it reads one
 * request head against a deadline, sends the answer followed by its FIN,
 * and lingers briefly so that the client reads the answer before the
 * socket goes. Every phase is bounded in time and memory, whatever the
 * client does.
 *
 * @module
 */
import type net from "node:net";
import {
  type HeadParse,
  MAX_REQUEST_HEAD_BYTES,
  parseRequestHead,
} from "./http_request.ts";

/** A request head that has been read to its end, or found broken. */
export type ReceivedHead = Exclude<HeadParse, { kind: "incomplete" }>;

/** What an {@linkcode AdminConnection} needs from its server. */
export interface AdminConnectionOptions {
  /** Milliseconds from accept until the request head must be complete. */
  requestTimeoutMs: number;
  /** The bytes of the response to `head`. */
  answer: (head: ReceivedHead) => Promise<Uint8Array>;
}

/**
 * How long the client has, after our answer and FIN, to close its side.
 * Until then whatever it still sends is read and dropped: closing a socket
 * with unread bytes would send a reset, which can destroy the answer on
 * its way. A client closes at once after reading an answer that says
 * `Connection: close`.
 */
const LINGER_MS = 1000;

type Phase = "reading" | "answering" | "lingering";

/**
 * Serves one admin request on `socket` (as the listener handed it over,
 * paused) and closes it. `closed` settles once the socket has closed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import net from "node:net";
 * import { AdminConnection } from "./admin_connection.ts";
 *
 * const served: Promise<void>[] = [];
 * const server = net.createServer((socket) => {
 *   const connection = new AdminConnection(socket, {
 *     requestTimeoutMs: 5000,
 *     answer: (head) =>
 *       Promise.resolve(new TextEncoder().encode(`${head.kind}\n`)),
 *   });
 *   served.push(connection.closed);
 * });
 * await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
 * const { port } = server.address() as net.AddressInfo;
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
 * assert.equal(new TextDecoder().decode(await new Response(conn.readable).bytes()), "complete\n");
 * await Promise.all(served);
 * await new Promise((resolve) => server.close(resolve));
 * ```
 */
export class AdminConnection {
  /** Settles once the socket has closed, however that happened. */
  readonly closed: Promise<void>;
  readonly #socket: net.Socket;
  readonly #options: AdminConnectionOptions;
  /** The request head received so far; a head that does not fit is a bad request. */
  readonly #head = new Uint8Array(MAX_REQUEST_HEAD_BYTES);
  #filled = 0;
  #phase: Phase = "reading";
  #stopping = false;
  /** The request deadline while reading, then the linger bound. */
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: net.Socket, options: AdminConnectionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        clearTimeout(this.#timer);
        resolve();
      })
    );
    // A reset or any other socket error ends the exchange: no one to answer.
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk: Uint8Array) => this.#receive(chunk));
    socket.on("end", () => this.#peerEnded());
    this.#timer = setTimeout(() => socket.destroy(), options.requestTimeoutMs);
    socket.resume();
  }

  /**
   * For shutdown: closes the connection at once if its request is still
   * arriving, or as soon as its answer has been handed to the system.
   */
  stop(): void {
    this.#stopping = true;
    if (this.#phase === "reading") this.#socket.destroy();
    if (this.#phase === "lingering") this.#destroyWhenFlushed();
  }

  #receive(chunk: Uint8Array) {
    // After the head: a body or a second request, neither of which is read.
    if (this.#phase !== "reading") return;
    const taken = Math.min(chunk.length, this.#head.length - this.#filled);
    this.#head.set(chunk.subarray(0, taken), this.#filled);
    this.#filled += taken;
    const parsed = parseRequestHead(this.#head.subarray(0, this.#filled));
    if (parsed.kind === "incomplete") return;
    clearTimeout(this.#timer);
    this.#phase = "answering";
    this.#respond(parsed).catch(() => this.#socket.destroy());
  }

  async #respond(head: ReceivedHead) {
    const bytes = await this.#options.answer(head);
    if (this.#socket.destroyed) return;
    this.#socket.end(bytes);
    this.#phase = "lingering";
    this.#timer = setTimeout(() => this.#socket.destroy(), LINGER_MS);
    if (this.#stopping) this.#destroyWhenFlushed();
  }

  #peerEnded() {
    // A client that gives up before its head is complete gets no answer.
    if (this.#phase === "reading") this.#socket.destroy();
    if (this.#phase === "lingering") this.#destroyWhenFlushed();
  }

  #destroyWhenFlushed() {
    if (this.#socket.writableFinished) this.#socket.destroy();
    else this.#socket.once("finish", () => this.#socket.destroy());
  }
}

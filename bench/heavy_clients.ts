/**
 * The two clients of the heavy-lines scenario (`heavy_lines.ts`) and what
 * they send: a heavy client that pipelines the heaviest lines the limits
 * allow, and a bystander that sends one short line every 50 ms and times its
 * replies. The heavy client runs in a Worker of its own
 * (`heavy_worker.ts`), the bystander in the caller's event loop, and
 * every reply of both is checked byte for byte. The loads:
 *
 * - `product`: 65,503-byte `product` lines (2,047 numbers of 31 digits),
 *   milliseconds of arithmetic each;
 * - `ones`: 65,533-byte sum lines (32,767 one-digit numbers), cheap per
 *   line but long;
 * - `echo`: 65,536-byte lines to the echo protocol, nearly free to answer;
 * - `stream`: {@linkcode STREAMERS} clients, each streaming 64 KiB chunks
 *   without a newline as fast as the server reads them (one line-too-long
 *   error each, then nothing to answer): the runtime reads such sockets
 *   back to back, and the bystander's line waits unless the server makes
 *   the runtime look at the other sockets.
 *
 * @module
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import { settleWithin } from "../src/deadline.ts";
import {
  addProblems,
  CALC_WELCOME,
  countOver,
  expectedFrom,
  fairnessPool,
  LineClient,
  newHistogram,
  noProblems,
  prng,
  type Problems,
  quantile,
  record,
  type ReplySink,
  type Speaks,
  type WirePool,
  wirePool,
} from "./traffic.ts";
import { WorkerInbox } from "./worker_inbox.ts";

/** What the heavy client sends. */
export type HeavyLoad = "product" | "ones" | "echo" | "stream";

/** How many heavy clients a load has: one, or several streamers. */
export const STREAMERS = 8;
export function heavyClientCount(load: HeavyLoad): number {
  return load === "stream" ? STREAMERS : 1;
}

/** The bystander's pace, and lineserver's bound on its every reply. */
export const BYSTANDER_INTERVAL_MS = 50;
export const BYSTANDER_TARGET_MS = 50;
/** Room for unanswered bystander lines: 7 minutes of a server that answers none. */
const BYSTANDER_MAX_UNANSWERED = 8192;
/** Lines the heavy client keeps unanswered: 2 MiB, more than a socket buffers. */
export const HEAVY_IN_FLIGHT = 32;
const CONNECT_TIMEOUT_MS = 10_000;

/** The heavy client's wire: setup line, the prelude it answers, the line and its reply. */
export interface HeavyTraffic {
  setup: string;
  prelude: string;
  line: string;
  reply: string;
}

const cache = new Map<HeavyLoad, HeavyTraffic>();

/** The heavy load's lines and replies (deterministic; built once). */
export function heavyTraffic(load: HeavyLoad): HeavyTraffic {
  const known = cache.get(load);
  if (known) return known;
  const random = prng(18);
  const digit = () => String(Math.floor(random() * 10));
  let made: HeavyTraffic;
  if (load === "product") {
    const numbers = Array.from({ length: 2047 }, () => {
      let n = String(1 + Math.floor(random() * 9));
      for (let d = 1; d < 31; d++) n += digit();
      return BigInt(n);
    });
    made = {
      setup: "product\n",
      prelude: `${CALC_WELCOME}<switching to product mode>\r\n`,
      line: numbers.join(",") + "\n",
      reply: `Product of input integers: '${productOf(numbers)}'\r\n`,
    };
  } else if (load === "ones") {
    const digits = Array.from({ length: 32767 }, digit);
    const sum = digits.reduce((total, d) => total + Number(d), 0);
    made = {
      setup: "",
      prelude: CALC_WELCOME,
      line: digits.join(",") + "\n",
      reply: `Sum of input integers: '${sum}'\r\n`,
    };
  } else if (load === "stream") {
    made = {
      setup: "",
      prelude: CALC_WELCOME,
      line: "x".repeat(65536),
      reply: "ERROR. Line too long (max 65536 bytes)\r\n",
    };
  } else {
    const letters = "abcdefghijklmnopqrstuvwxyz";
    const text = Array.from(
      { length: 65536 },
      () => letters[Math.floor(random() * letters.length)],
    ).join("");
    made = { setup: "", prelude: "", line: text + "\n", reply: text + "\r\n" };
  }
  cache.set(load, made);
  return made;
}

/** A balanced product: the bench's own answer must not take seconds. */
function productOf(numbers: bigint[]): bigint {
  if (numbers.length === 1) return numbers[0];
  const half = numbers.length >> 1;
  return productOf(numbers.slice(0, half)) * productOf(numbers.slice(half));
}

// ---------------------------------------------------------------------------
// The heavy client's Worker

/** Sent to the heavy client (`heavy_worker.ts`). */
export type ToHeavyClient =
  | {
    type: "start";
    host: string;
    port: number;
    setup: Uint8Array;
    prelude: Uint8Array;
    line: Uint8Array;
    reply: Uint8Array;
    inFlight: number;
    /** Writes whenever the socket takes more, whatever is unanswered. */
    stream: boolean;
    /** Shared with the caller: replies received so far, kept current. */
    answered: Int32Array;
  }
  | { type: "run" }
  | { type: "measure" }
  | { type: "stop" };

/** Sent back by the heavy client. */
export type FromHeavyClient =
  | { type: "ready" }
  | { type: "result"; lines: number; bytesIn: number; bytesOut: number }
    & Problems
  | { type: "fatal"; message: string };

/** The heavy client's Worker with a time-bounded inbox. */
export class HeavyClient extends WorkerInbox<ToHeavyClient, FromHeavyClient> {
  readonly #answered = new Int32Array(new SharedArrayBuffer(4));

  /** Connects to `host:port` and sends `load`'s setup; await `ready` next. */
  constructor(host: string, port: number, load: HeavyLoad) {
    super("Heavy client", new URL("./heavy_worker.ts", import.meta.url));
    const traffic = heavyTraffic(load);
    const bytes = (text: string) => new Uint8Array(Buffer.from(text, "latin1"));
    this.post({
      type: "start",
      host,
      port,
      setup: bytes(traffic.setup),
      prelude: bytes(traffic.prelude),
      line: bytes(traffic.line),
      reply: bytes(traffic.reply),
      inFlight: HEAVY_IN_FLIGHT,
      stream: load === "stream",
      answered: this.#answered,
    });
  }

  /** Replies the heavy client has received so far (read at any moment). */
  get answered(): number {
    return Atomics.load(this.#answered, 0);
  }
}

/** What the heavy clients of a load did in the window, all together. */
export type HeavyCounts = Omit<
  Extract<FromHeavyClient, { type: "result" }>,
  "type"
>;

/** The heavy clients of one load ({@linkcode heavyClientCount} of them), driven as one. */
export class HeavyClients {
  readonly #clients: HeavyClient[];

  /** Connects each to `host:port`; await {@linkcode HeavyClients.ready} next. */
  constructor(host: string, port: number, load: HeavyLoad) {
    this.#clients = Array.from(
      { length: heavyClientCount(load) },
      () => new HeavyClient(host, port, load),
    );
  }

  /** Resolves when every client has its prelude (rejects after `timeoutMs`). */
  async ready(timeoutMs: number): Promise<void> {
    await Promise.all(this.#clients.map((c) => c.expect("ready", timeoutMs)));
  }

  /** `run` starts the load, `measure` zeroes the counters. */
  post(message: { type: "run" } | { type: "measure" }): void {
    for (const client of this.#clients) client.post(message);
  }

  /** Replies the heavy clients have received so far (read at any moment). */
  get answered(): number {
    return this.#clients.reduce((total, c) => total + c.answered, 0);
  }

  /** Stops the load; the window's counts of every client, added up. */
  async stop(timeoutMs: number): Promise<HeavyCounts> {
    for (const client of this.#clients) client.post({ type: "stop" });
    const results = await Promise.all(
      this.#clients.map((c) => c.expect("result", timeoutMs)),
    );
    const total: HeavyCounts = {
      lines: 0,
      bytesIn: 0,
      bytesOut: 0,
      ...noProblems(),
    };
    for (const r of results) {
      total.lines += r.lines;
      total.bytesIn += r.bytesIn;
      total.bytesOut += r.bytesOut;
      addProblems(total, r);
    }
    return total;
  }

  /** Ends every client's Worker. */
  terminate(): void {
    for (const client of this.#clients) client.terminate();
  }
}

// ---------------------------------------------------------------------------
// The bystander

/** What the bystander saw in the window. */
export interface BystanderFigures {
  /** Replies received in the window. */
  replies: number;
  /** Requests still unanswered at the window's end. */
  unanswered: number;
  p50Ms: number;
  p99Ms: number;
  /** The slowest reply, or the age of a request unanswered at the end if older. */
  maxMs: number;
  /** Replies slower than the target. */
  overTarget: number;
  /** How late its own 50 ms timer fired at worst (delay on the client side). */
  timerLagMaxMs: number;
  /**
   * The most heavy lines answered while one bystander line waited for its
   * reply: how the server took turns, whatever else took the CPUs.
   */
  heavyLinesPerWaitMax: number;
}

/**
 * A client that sends `1,2,3,4,5,6,7,8` every 50 ms whatever is still
 * unanswered (a person typing does not wait for a stalled server), and
 * times each reply from its write.
 */
export class Bystander {
  readonly #client: LineClient;
  readonly #sink: ReplySink;
  #histogram = newHistogram();
  #measuring = false;
  #replies = 0;
  /** Lines sent since {@linkcode Bystander.start}. */
  sent = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lagMaxMs = 0;
  readonly #heavyAnswered: () => number;
  /** The heavy client's count when each unanswered line was sent, oldest first. */
  #heavyAtSend: number[] = [];
  #heavyPerWaitMax = 0;

  private constructor(
    socket: net.Socket,
    pool: WirePool,
    heavyAnswered: () => number,
  ) {
    this.#heavyAnswered = heavyAnswered;
    this.#sink = {
      problems: noProblems(),
      reply: (_client, ms) => {
        const during = heavyAnswered() - this.#heavyAtSend.shift()!;
        if (!this.#measuring) return;
        record(this.#histogram, ms * 1000);
        this.#replies++;
        this.#heavyPerWaitMax = Math.max(this.#heavyPerWaitMax, during);
      },
    };
    this.#client = new LineClient(socket, pool, this.#sink, {
      maxInFlight: BYSTANDER_MAX_UNANSWERED,
      firstRequest: 0,
    });
  }

  /**
   * Connects and waits for the welcome line, if the server sends one.
   * `heavyAnswered` reads the heavy client's reply count (see
   * {@linkcode HeavyClient.answered}).
   */
  static async connect(
    host: string,
    port: number,
    speaks: Speaks,
    heavyAnswered: () => number,
  ): Promise<Bystander> {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    const pool = wirePool(
      expectedFrom(speaks, fairnessPool()),
      speaks === "calc" ? CALC_WELCOME : null,
    );
    const bystander = new Bystander(socket, pool, heavyAnswered);
    const failed = new Promise<never>((_, reject) =>
      socket.once("error", reject)
    );
    const welcomed = Promise.race([bystander.#client.welcomed, failed]);
    if (!await settleWithin(welcomed, CONNECT_TIMEOUT_MS)) {
      socket.destroy();
      throw new Error("Bystander got no welcome in time");
    }
    await welcomed;
    return bystander;
  }

  /** The client's errors and mismatches. */
  get problems(): Problems {
    return this.#sink.problems;
  }

  /** Starts sending a line every 50 ms. */
  start(): void {
    let due = performance.now() + BYSTANDER_INTERVAL_MS;
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#lagMaxMs = Math.max(this.#lagMaxMs, now - due);
      due = now + BYSTANDER_INTERVAL_MS;
      this.sent++;
      this.#heavyAtSend.push(this.#heavyAnswered());
      this.#client.send(1);
    }, BYSTANDER_INTERVAL_MS);
  }

  /** The window starts. */
  measure(): void {
    this.#measuring = true;
    this.#lagMaxMs = 0;
  }

  /** The window ends: stops sending; the figures of the window. */
  stop(): BystanderFigures {
    this.#measuring = false;
    clearInterval(this.#timer);
    const oldest = this.#client.oldestSentAt;
    const unansweredMs = oldest === undefined ? 0 : performance.now() - oldest;
    const h = this.#histogram;
    const unanswered = this.#client.inflight;
    const oldestDuring = unanswered > 0
      ? this.#heavyAnswered() - this.#heavyAtSend[0]
      : 0;
    return {
      replies: this.#replies,
      unanswered,
      p50Ms: quantile(h, 0.5) / 1000,
      p99Ms: quantile(h, 0.99) / 1000,
      maxMs: Math.max(h.maxUs / 1000, unansweredMs),
      overTarget: countOver(h, BYSTANDER_TARGET_MS * 1000),
      timerLagMaxMs: this.#lagMaxMs,
      heavyLinesPerWaitMax: Math.max(this.#heavyPerWaitMax, oldestDuring),
    };
  }

  /** Closes the connection and resolves once it is closed (idempotent). */
  close(): Promise<void> {
    clearInterval(this.#timer);
    const socket = this.#client.socket;
    if (socket.closed) return Promise.resolve();
    const closed = new Promise<void>((resolve) =>
      socket.once("close", resolve)
    );
    socket.destroy();
    return closed;
  }
}

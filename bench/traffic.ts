/**
 * The client's half of the wire: the request lines the bench sends, the exact
 * reply each must get, a latency histogram, and {@linkcode LineClient}, one
 * `node:net` connection that sends requests and checks and times every reply.
 * The load generator (`load_worker.ts`) and `offered_load.ts` both drive
 * their connections through it.
 *
 * Replies are read as whole lines: a read may end inside a line or hold many
 * lines, so bytes are split at each LF and the unterminated rest waits for
 * the next read.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/** Greeting the calculator sends first on every connection. */
export const CALC_WELCOME = "<welcome: starting in sum mode>\r\n";

/** One request line (with its line end) and the reply line it must get. */
export interface Exchange {
  request: string;
  reply: string;
}

/**
 * What a server speaks: the calculator (welcome, then sums), raw byte echo,
 * or the echo line protocol (each line back with CRLF, no welcome).
 */
export type Speaks = "calc" | "echo" | "line-echo";

/**
 * mulberry32: a tiny deterministic PRNG, so every run sends the same lines
 * (the hostile-input test uses it too, so a printed seed replays a failure).
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Builds `size` sum-mode lines: 1 to 8 integers, mostly small, some negative,
 * some with spaces after the comma, one in 16 with a 20-digit integer (exact
 * arithmetic). Lines are `\r\n` terminated.
 */
export function calculatorPool(size = 256, seed = 5): Exchange[] {
  const random = prng(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const pool: Exchange[] = [];
  for (let i = 0; i < size; i++) {
    const count = 1 + pick(8);
    const items: string[] = [];
    let sum = 0n;
    for (let k = 0; k < count; k++) {
      let digits: string;
      if (i % 16 === 15 && k === 0) {
        digits = String(1 + pick(9));
        for (let d = 0; d < 19; d++) digits += String(pick(10));
      } else {
        digits = String(pick(k % 2 === 0 ? 100 : 100000));
      }
      const negative = pick(6) === 0;
      const value = BigInt(digits) * (negative ? -1n : 1n);
      sum += value;
      const spaced = i % 8 === 3 && k > 0 ? " " : "";
      items.push(spaced + (negative ? "-" : "") + digits);
    }
    pool.push({
      request: items.join(",") + "\r\n",
      reply: `Sum of input integers: '${sum}'\r\n`,
    });
  }
  return pool;
}

/** {@linkcode calculatorPool}'s lines and replies without their `\r\n`, as a client library sends and reads them. */
export function calculatorLines(): { line: string; reply: string }[] {
  return calculatorPool().map(({ request, reply }) => ({
    line: request.slice(0, -2),
    reply: reply.slice(0, -2),
  }));
}

/**
 * The fairness traffic: every connection sends this one line, again and
 * again. A pool of two copies, because a pool must be longer than the
 * number of lines kept in flight.
 */
export function fairnessPool(): Exchange[] {
  const line = {
    request: "1,2,3,4,5,6,7,8\n",
    reply: "Sum of input integers: '36'\r\n",
  };
  return [line, line];
}

/** The replies a server that speaks `speaks` gives to `pool`'s requests. */
export function expectedFrom(speaks: Speaks, pool: Exchange[]): Exchange[] {
  if (speaks === "calc") return pool;
  return pool.map(({ request }) => ({
    request,
    reply: speaks === "echo" ? request : request.replace(/\r?\n$/, "\r\n"),
  }));
}

// ---------------------------------------------------------------------------
// Latency histogram

/** Number of buckets: enough for values up to 2^31 µs (about 35 minutes). */
export const BUCKETS = 128 + 24 * 64;

/**
 * Bucket index for a latency of `us` microseconds. Values below 128 µs have
 * their own bucket; above, each power of two is split into 64 buckets, so a
 * reported percentile is within 1.6 % of the true value.
 */
export function bucketOf(us: number): number {
  const v = us <= 0 ? 0 : Math.min(Math.floor(us), 0x7fffffff);
  if (v < 128) return v;
  const msb = 31 - Math.clz32(v);
  const shift = msb - 6;
  return 128 + (shift - 1) * 64 + ((v >>> shift) - 64);
}

/** Middle of the value range that bucket `index` stands for, in microseconds. */
export function bucketValue(index: number): number {
  if (index < 128) return index + 0.5;
  const shift = Math.floor((index - 128) / 64) + 1;
  const mantissa = ((index - 128) % 64) + 64;
  return (mantissa + 0.5) * 2 ** shift;
}

/**
 * Latency counts plus the exact maximum; plain data, so generators can post
 * it to the orchestrator, which merges histograms by adding counts.
 */
export interface LatencyHistogram {
  counts: Float64Array;
  total: number;
  maxUs: number;
}

/** An empty histogram. */
export function newHistogram(): LatencyHistogram {
  return { counts: new Float64Array(BUCKETS), total: 0, maxUs: 0 };
}

/** Records one latency. */
export function record(h: LatencyHistogram, us: number): void {
  h.counts[bucketOf(us)]++;
  h.total++;
  if (us > h.maxUs) h.maxUs = us;
}

/** Adds `from` into `into`. */
export function merge(into: LatencyHistogram, from: LatencyHistogram): void {
  for (let i = 0; i < BUCKETS; i++) into.counts[i] += from.counts[i];
  into.total += from.total;
  if (from.maxUs > into.maxUs) into.maxUs = from.maxUs;
}

/** The `q` quantile (0..1) in microseconds, or NaN when nothing was recorded. */
export function quantile(h: LatencyHistogram, q: number): number {
  if (h.total === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * h.total));
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += h.counts[i];
    if (seen >= rank) return Math.min(bucketValue(i), h.maxUs);
  }
  return h.maxUs;
}

/**
 * How many recorded latencies exceed `us` (to the histogram's resolution:
 * values in the bucket of `us` itself are not counted).
 */
export function countOver(h: LatencyHistogram, us: number): number {
  let count = 0;
  for (let i = bucketOf(us) + 1; i < BUCKETS; i++) count += h.counts[i];
  return count;
}

// ---------------------------------------------------------------------------
// Errors and mismatches

/** Error and mismatch counts with a few examples of each. */
export interface Problems {
  errors: number;
  errorSamples: string[];
  mismatches: number;
  mismatchSamples: string[];
}

const SAMPLES = 5;

/** No problems yet. */
export function noProblems(): Problems {
  return { errors: 0, errorSamples: [], mismatches: 0, mismatchSamples: [] };
}

/** Counts an error, keeping its message if fewer than five are kept. */
export function addError(problems: Problems, message: string): void {
  problems.errors++;
  if (problems.errorSamples.length < SAMPLES) {
    problems.errorSamples.push(message);
  }
}

/** Adds `from` into `into`, keeping at most five samples of each kind. */
export function addProblems(into: Problems, from: Problems): void {
  into.errors += from.errors;
  into.mismatches += from.mismatches;
  into.errorSamples.push(...from.errorSamples);
  into.mismatchSamples.push(...from.mismatchSamples);
  into.errorSamples.splice(SAMPLES);
  into.mismatchSamples.splice(SAMPLES);
}

// ---------------------------------------------------------------------------
// One checked connection

/**
 * A pool in wire form. Every request back to back, twice, so that any run of
 * up to `size` consecutive requests is one contiguous slice (a send is one
 * subarray, no copying); `offsets[i]` is where request `i` starts.
 */
export interface WirePool {
  size: number;
  stream: Buffer;
  offsets: Int32Array;
  replies: Buffer[];
  welcome: Buffer | null;
}

/** Encodes `pool` (and the welcome line, or null for none) for {@linkcode LineClient}. */
export function wirePool(pool: Exchange[], welcome: string | null): WirePool {
  const twice = [...pool, ...pool].map((e) => Buffer.from(e.request));
  const offsets = new Int32Array(twice.length + 1);
  for (let i = 0; i < twice.length; i++) {
    offsets[i + 1] = offsets[i] + twice[i].length;
  }
  return {
    size: pool.length,
    stream: Buffer.concat(twice),
    offsets,
    replies: pool.map((e) => Buffer.from(e.reply)),
    welcome: welcome === null ? null : Buffer.from(welcome),
  };
}

/** What a {@linkcode LineClient} reports to whoever owns it. */
export interface ReplySink {
  /** A correct or wrong reply arrived `ms` after its request was written. */
  reply(client: LineClient, ms: number): void;
  problems: Problems;
}

const LF = 10;
const MAX_REPLY_BYTES = 65536;

/**
 * One connection: writes requests from a {@linkcode WirePool}, matches each
 * reply line to the oldest request in flight, checks it byte for byte and
 * reports its latency. With `keepInFlight > 0` it sends again as soon as
 * replies arrive (a closed loop `keepInFlight` deep); with 0 the owner sends.
 */
export class LineClient {
  readonly socket: Socket;
  /** Resolves when the welcome line has arrived (at once when none is expected). */
  readonly welcomed: Promise<void>;
  /** Lines kept in flight by sending after each read; 0 = the owner sends. */
  keepInFlight = 0;
  /** Replies counted by the owner (the sink), e.g. those inside a window. */
  replies = 0;
  bytesIn = 0;
  bytesOut = 0;
  #pool: WirePool;
  #sink: ReplySink;
  #rest: Buffer | null = null;
  #waitingForWelcome: boolean;
  #onWelcome: () => void = () => {};
  #onAllAnswered: (() => void) | undefined;
  /** Ring of requests in flight: pool index and time written (ms). */
  #index: Int32Array;
  #sentAt: Float64Array;
  #head = 0;
  #inflight = 0;
  #next: number;

  constructor(
    socket: Socket,
    pool: WirePool,
    sink: ReplySink,
    options: { maxInFlight: number; firstRequest: number },
  ) {
    this.socket = socket;
    this.#pool = pool;
    this.#sink = sink;
    const slots = Math.max(1, options.maxInFlight);
    this.#index = new Int32Array(slots);
    this.#sentAt = new Float64Array(slots);
    this.#next = options.firstRequest % pool.size;
    this.#waitingForWelcome = pool.welcome !== null;
    this.welcomed = this.#waitingForWelcome
      ? new Promise((resolve) => this.#onWelcome = resolve)
      : Promise.resolve();
    socket.on("data", (chunk: Buffer) => this.#read(chunk));
  }

  /** Requests written and not yet answered. */
  get inflight(): number {
    return this.#inflight;
  }

  /** When the oldest unanswered request was written (`performance.now()`), or undefined. */
  get oldestSentAt(): number | undefined {
    return this.#inflight > 0 ? this.#sentAt[this.#head] : undefined;
  }

  /** Sends one request and resolves once every request in flight is answered. */
  probe(): Promise<void> {
    return new Promise((resolve) => {
      this.#onAllAnswered = resolve;
      this.send(1);
    });
  }

  /** Writes the next `count` requests of the pool in one write (count < pool size). */
  send(count: number): void {
    const slots = this.#index.length;
    if (count > slots - this.#inflight) {
      throw new RangeError(`Cannot have more than ${slots} requests in flight`);
    }
    const first = this.#next;
    const now = performance.now();
    for (let i = 0; i < count; i++) {
      const slot = (this.#head + this.#inflight) % slots;
      this.#index[slot] = (first + i) % this.#pool.size;
      this.#sentAt[slot] = now;
      this.#inflight++;
    }
    this.#next = (first + count) % this.#pool.size;
    const { stream, offsets } = this.#pool;
    const bytes = stream.subarray(offsets[first], offsets[first + count]);
    this.bytesOut += bytes.length;
    this.socket.write(bytes);
  }

  #mismatch(expected: Buffer, got: Buffer): void {
    const problems = this.#sink.problems;
    problems.mismatches++;
    if (problems.mismatchSamples.length < SAMPLES) {
      problems.mismatchSamples.push(
        `expected ${JSON.stringify(expected.toString("latin1"))}, got ${
          JSON.stringify(got.toString("latin1"))
        }`,
      );
    }
  }

  #read(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    const now = performance.now();
    let bytes = chunk;
    if (this.#rest !== null) {
      bytes = Buffer.concat([this.#rest, chunk]);
      this.#rest = null;
    }
    let at = 0;
    while (true) {
      const lf = bytes.indexOf(LF, at);
      if (lf < 0) break;
      const end = lf + 1;
      if (this.#waitingForWelcome) {
        const welcome = this.#pool.welcome!;
        if (welcome.compare(bytes, at, end) !== 0) {
          this.#mismatch(welcome, bytes.subarray(at, end));
        }
        this.#waitingForWelcome = false;
        this.#onWelcome();
      } else if (this.#inflight === 0) {
        this.#mismatch(Buffer.alloc(0), bytes.subarray(at, end));
      } else {
        const expected = this.#pool.replies[this.#index[this.#head]];
        if (expected.compare(bytes, at, end) !== 0) {
          this.#mismatch(expected, bytes.subarray(at, end));
        }
        const sentAt = this.#sentAt[this.#head];
        this.#head = (this.#head + 1) % this.#index.length;
        this.#inflight--;
        this.#sink.reply(this, now - sentAt);
      }
      at = end;
    }
    if (at < bytes.length) {
      if (bytes.length - at > MAX_REPLY_BYTES) {
        addError(this.#sink.problems, "Reply line longer than 64 KiB");
        this.socket.destroy();
        return;
      }
      // Copied, so a large chunk is not kept alive for a few bytes.
      this.#rest = Buffer.from(bytes.subarray(at));
    }
    if (this.#inflight === 0 && this.#onAllAnswered) {
      this.#onAllAnswered();
      this.#onAllAnswered = undefined;
    }
    const room = this.keepInFlight - this.#inflight;
    if (room > 0 && !this.#waitingForWelcome) this.send(room);
  }
}

/**
 * One load-generator worker (a Deno Worker thread started by `bench/run.ts`).
 * It owns a share of the client connections and drives each one in its own
 * async loop: keep `depth` request lines in flight (depth 1 is strict
 * request/response), check every reply byte for byte against the expected
 * reply, and time each reply from the moment its request was written.
 *
 * The orchestrator steers it with messages: `init` (connect, read the welcome
 * line on each connection, answer `ready`), `run` (start sending; warm-up),
 * `measure` (zero the counters), `stop` (freeze the counters, stop sending,
 * let in-flight replies drain, close, answer `result`) and, for idle
 * connections, `close` (answer `closed`). Nothing here waits without a bound:
 * connects and welcome reads have timeouts, and `stop` closes connections that
 * have not drained in time, which ends their pending reads.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { newHistogram, record } from "./histogram.ts";
import type { FromWorker, Problems, ToWorker } from "./load_messages.ts";
import { withTimeout } from "./timing.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const LF = 10;
const READ_BUFFER_BYTES = 16384;
const SAMPLES = 5;

let config: Extract<ToWorker, { type: "init" }>;
/**
 * Every request of the pool back to back, twice, so that any run of up to
 * `pool size` consecutive requests is one contiguous slice: a send is one
 * subarray, no copying. `requestOffset[i]` is where request `i` starts
 * (i < 2 * pool size; one extra entry marks the end).
 */
let requestStream = new Uint8Array(0);
let requestOffset = new Int32Array(0);
let poolSize = 0;
let replyBytes: Uint8Array[] = [];
let welcomeBytes: Uint8Array | null = null;

const problems: Problems = {
  errors: 0,
  errorSamples: [],
  mismatches: 0,
  mismatchSamples: [],
};
let sending = false;
let measuring = false;
let lines = 0;
let bytesIn = 0;
let bytesOut = 0;
let slow = 0;
let histogram = newHistogram();
let loopLag = newHistogram();
let lagTimer: ReturnType<typeof setInterval> | undefined;
const LAG_INTERVAL_MS = 10;
const clients: Client[] = [];
const loops: Promise<void>[] = [];

function error(message: string): void {
  problems.errors++;
  if (problems.errorSamples.length < SAMPLES) {
    problems.errorSamples.push(message);
  }
}

function mismatch(expected: Uint8Array, got: Uint8Array): void {
  problems.mismatches++;
  if (problems.mismatchSamples.length < SAMPLES) {
    problems.mismatchSamples.push(
      `expected ${JSON.stringify(decoder.decode(expected))}, got ${
        JSON.stringify(decoder.decode(got))
      }`,
    );
  }
}

/** Whether `buffer[at..at + expected.length)` equals `expected`. */
function matchesAt(
  buffer: Uint8Array,
  at: number,
  expected: Uint8Array,
): boolean {
  for (let i = 0; i < expected.length; i++) {
    if (buffer[at + i] !== expected[i]) return false;
  }
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One client connection and its in-flight window. */
class Client {
  readonly conn: Deno.TcpConn;
  /** Received bytes not yet consumed: `buffer[start..end)`. */
  readonly buffer = new Uint8Array(READ_BUFFER_BYTES);
  start = 0;
  end = 0;
  /** Ring of in-flight requests: pool index and send time (ms). */
  readonly inflightIndex: Int32Array;
  readonly inflightSentAt: Float64Array;
  head = 0;
  inflight = 0;
  /** Pool index of the next request to send. */
  next: number;
  closed = false;

  constructor(conn: Deno.TcpConn, depth: number, offset: number) {
    this.conn = conn;
    const slots = Math.max(1, depth);
    this.inflightIndex = new Int32Array(slots);
    this.inflightSentAt = new Float64Array(slots);
    this.next = offset % poolSize;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by a failed operation.
    }
  }

  async writeAll(bytes: Uint8Array): Promise<void> {
    let written = 0;
    while (written < bytes.length) {
      written += await this.conn.write(bytes.subarray(written));
    }
    bytesOut += bytes.length;
  }

  /** Reads exactly the welcome line's length and checks it. */
  async readWelcome(expected: Uint8Array, timeoutMs: number): Promise<void> {
    while (this.end < expected.length) {
      const n = await withTimeout(
        this.conn.read(this.buffer.subarray(this.end)),
        timeoutMs,
        "welcome line",
      );
      if (n === null) throw new Error("Server closed before the welcome line");
      this.end += n;
    }
    const got = this.buffer.subarray(0, expected.length);
    if (!sameBytes(got, expected)) mismatch(expected, got.slice());
    this.buffer.copyWithin(0, expected.length, this.end);
    this.end -= expected.length;
  }

  /** Sends the next `count` requests (count <= depth < pool size) in one write. */
  async send(count: number): Promise<void> {
    const depth = this.inflightIndex.length;
    const first = this.next;
    const now = performance.now();
    for (let i = 0; i < count; i++) {
      const slot = (this.head + this.inflight) % depth;
      this.inflightIndex[slot] = (first + i) % poolSize;
      this.inflightSentAt[slot] = now;
      this.inflight++;
    }
    this.next = (first + count) % poolSize;
    await this.writeAll(
      requestStream.subarray(
        requestOffset[first],
        requestOffset[first + count],
      ),
    );
  }

  /** Consumes every complete reply line in the buffer. */
  consume(now: number): void {
    const depth = this.inflightIndex.length;
    while (true) {
      const lf = this.buffer.indexOf(LF, this.start);
      if (lf < 0 || lf >= this.end) break;
      const at = this.start;
      this.start = lf + 1;
      if (this.inflight === 0) {
        mismatch(new Uint8Array(0), this.buffer.slice(at, lf + 1));
        continue;
      }
      const index = this.inflightIndex[this.head];
      const sentAt = this.inflightSentAt[this.head];
      this.head = (this.head + 1) % depth;
      this.inflight--;
      // Compared in place: no per-line allocation on the hot path.
      const expected = replyBytes[index];
      if (
        lf + 1 - at !== expected.length ||
        !matchesAt(this.buffer, at, expected)
      ) {
        mismatch(expected, this.buffer.slice(at, lf + 1));
      }
      if (measuring) {
        const ms = now - sentAt;
        record(histogram, ms * 1000);
        lines++;
        if (ms > config.slowMs) slow++;
      }
    }
    if (this.start === this.end) {
      this.start = this.end = 0;
    } else if (this.end > this.buffer.length / 2) {
      this.buffer.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
      if (this.end === this.buffer.length) {
        error("Reply line longer than the read buffer");
        this.start = this.end = 0;
      }
    }
  }

  /** The traffic loop: runs until sending stops and the window has drained. */
  async drive(): Promise<void> {
    const depth = this.inflightIndex.length;
    try {
      if (this.end > 0) this.consume(performance.now());
      await this.send(depth);
      while (sending || this.inflight > 0) {
        const n = await this.conn.read(this.buffer.subarray(this.end));
        if (n === null) {
          error("Server closed the connection during the run");
          break;
        }
        bytesIn += n;
        this.end += n;
        this.consume(performance.now());
        const room = depth - this.inflight;
        if (sending && room > 0) await this.send(room);
      }
    } catch (e) {
      if (!this.closed) error(`Connection failed: ${(e as Error).message}`);
    }
  }
}

async function connectAll(): Promise<void> {
  const started = performance.now();
  let nextConnection = 0;
  const connectOne = async (ordinal: number) => {
    let conn: Deno.TcpConn | undefined;
    const connecting = Deno.connect({
      hostname: config.host,
      port: config.port,
    });
    try {
      conn = await withTimeout(
        connecting,
        config.connectTimeoutMs,
        "connect",
      );
      conn.setNoDelay(true);
      const client = new Client(
        conn,
        config.depth,
        (config.firstConnection + ordinal) * 7,
      );
      if (welcomeBytes) {
        await client.readWelcome(welcomeBytes, config.connectTimeoutMs);
      }
      clients.push(client);
    } catch (e) {
      error(`Connect/welcome failed: ${(e as Error).message}`);
      if (conn) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      } else {
        connecting.then((late) => late.close(), () => {});
      }
    }
  };
  const lanes = Array.from(
    { length: Math.min(config.connectConcurrency, config.connections) },
    async () => {
      while (nextConnection < config.connections) {
        await connectOne(nextConnection++);
      }
    },
  );
  await Promise.all(lanes);
  post({
    type: "ready",
    connected: clients.length,
    connectMs: performance.now() - started,
    ...problems,
  });
}

async function stop(drainMs: number): Promise<void> {
  const snapshot = { lines, bytesIn, bytesOut, histogram, slow, loopLag };
  measuring = false;
  clearInterval(lagTimer);
  sending = false;
  const drained = Promise.all(loops);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    drained,
    new Promise((resolve) => timer = setTimeout(resolve, drainMs)),
  ]);
  clearTimeout(timer);
  const stalled = clients.filter((c) => c.inflight > 0).length;
  if (stalled > 0) {
    error(
      `${stalled} connection(s) still had replies outstanding after ${drainMs} ms`,
    );
  }
  for (const client of clients) client.close();
  await drained;
  post({ type: "result", ...snapshot, stalled, ...problems });
}

function watchLoopLag(): void {
  let expected = performance.now() + LAG_INTERVAL_MS;
  lagTimer = setInterval(() => {
    const now = performance.now();
    record(loopLag, Math.max(0, now - expected) * 1000);
    expected = now + LAG_INTERVAL_MS;
  }, LAG_INTERVAL_MS);
}

function buildRequestStream(requests: Uint8Array[]): void {
  poolSize = requests.length;
  const twice = [...requests, ...requests];
  requestOffset = new Int32Array(twice.length + 1);
  for (let i = 0; i < twice.length; i++) {
    requestOffset[i + 1] = requestOffset[i] + twice[i].length;
  }
  requestStream = new Uint8Array(requestOffset[twice.length]);
  twice.forEach((r, i) => requestStream.set(r, requestOffset[i]));
}

function post(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  const fail = (e: unknown) =>
    post({ type: "fatal", message: (e as Error)?.stack ?? String(e) });
  switch (message.type) {
    case "init":
      config = message;
      buildRequestStream(message.requests.map((r) => encoder.encode(r)));
      replyBytes = message.replies.map((r) => encoder.encode(r));
      if (message.depth >= poolSize) {
        post({ type: "fatal", message: "Pipeline depth must be < pool size" });
        break;
      }
      welcomeBytes = message.welcome === null
        ? null
        : encoder.encode(message.welcome);
      connectAll().catch(fail);
      break;
    case "run":
      sending = true;
      for (const client of clients) loops.push(client.drive());
      break;
    case "measure":
      lines =
        bytesIn =
        bytesOut =
        slow =
          0;
      histogram = newHistogram();
      loopLag = newHistogram();
      measuring = true;
      watchLoopLag();
      break;
    case "stop":
      stop(message.drainMs).catch(fail);
      break;
    case "close":
      for (const client of clients) client.close();
      post({ type: "closed", ...problems });
      break;
  }
};

/**
 * The heavy client of the heavy-lines scenario (started by
 * `heavy_clients.ts`), in a Worker of its own: one connection that sends the
 * same long line back to back, keeping a fixed number of lines in flight
 * (or, streaming, as many as the socket takes), and checks every reply byte
 * for byte as it streams in.
 *
 * It runs in its own event loop on purpose. In one Deno event loop a socket
 * that always has data ready is served many times before a quiet socket's
 * readiness is even polled, so a bystander sharing the heavy client's loop
 * would measure the client's own scheduling, not the server's.
 *
 * Messages: `start` connects, sends the setup (say `product`), checks the
 * prelude (the welcome, the mode switch) and answers `ready`; `run` starts
 * pipelining; `measure` zeroes the counters; `stop` freezes them, answers
 * `result` and closes the connection.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import net from "node:net";
import { Buffer } from "node:buffer";
import type { FromHeavyClient, ToHeavyClient } from "./heavy_clients.ts";
import { addError, noProblems } from "./traffic.ts";

let socket: net.Socket | undefined;
let traffic: Extract<ToHeavyClient, { type: "start" }>;
const problems = noProblems();
let running = false;
let stopped = false;
let ready = false;
let waitingForDrain = false;
/** Lines written and replies received since the connection opened. */
let sent = 0;
let answered = 0;
/** Counters at the start of the window. */
let answeredAtMeasure = 0;
let bytesInAtMeasure = 0;
let bytesIn = 0;
let sentAtMeasure = 0;
/** Where the next reply byte is expected: in the prelude or in a reply. */
let inPrelude = true;
let at = 0;

function post(message: FromHeavyClient): void {
  self.postMessage(message);
}

/** Writes lines until `inFlight` are unanswered or the socket is full. */
function fill(): void {
  const s = socket!;
  while (
    running && !waitingForDrain &&
    (traffic.stream || sent - answered < traffic.inFlight)
  ) {
    sent++;
    if (!s.write(traffic.line)) {
      waitingForDrain = true;
      s.once("drain", () => {
        waitingForDrain = false;
        fill();
      });
    }
  }
}

function mismatch(expected: Uint8Array, got: Uint8Array): void {
  problems.mismatches++;
  problems.mismatchSamples.push(
    `reply ${answered + 1}, byte ${at}: expected ${
      JSON.stringify(Buffer.from(expected).toString("latin1").slice(0, 40))
    }, got ${JSON.stringify(Buffer.from(got).toString("latin1").slice(0, 40))}`,
  );
  running = false;
  socket?.destroy();
}

/** Matches a chunk of reply bytes against what must come, without copying. */
function read(chunk: Uint8Array): void {
  bytesIn += chunk.length;
  let i = 0;
  while (i < chunk.length) {
    const expected = inPrelude ? traffic.prelude : traffic.reply;
    const n = Math.min(expected.length - at, chunk.length - i);
    const got = chunk.subarray(i, i + n);
    const want = expected.subarray(at, at + n);
    if (Buffer.compare(got, want) !== 0) return mismatch(want, got);
    i += n;
    at += n;
    if (at < expected.length) continue;
    at = 0;
    if (inPrelude) {
      inPrelude = false;
      announceReady();
    } else {
      answered++;
      Atomics.add(traffic.answered, 0, 1);
    }
  }
  fill();
}

function announceReady(): void {
  ready = true;
  post({ type: "ready" });
}

function start(message: Extract<ToHeavyClient, { type: "start" }>): void {
  traffic = message;
  inPrelude = message.prelude.length > 0;
  const s = net.connect({ host: message.host, port: message.port });
  socket = s;
  s.setNoDelay(true);
  s.on("data", read);
  s.on("error", (error) => {
    if (stopped) return;
    if (!ready) post({ type: "fatal", message: error.message });
    else addError(problems, `heavy client: ${error.message}`);
  });
  s.on("connect", () => {
    if (message.setup.length > 0) s.write(message.setup);
    if (!inPrelude) announceReady();
  });
}

self.onmessage = (event: MessageEvent<ToHeavyClient>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      return start(message);
    case "run":
      running = true;
      return fill();
    case "measure":
      answeredAtMeasure = answered;
      bytesInAtMeasure = bytesIn;
      sentAtMeasure = sent;
      return;
    case "stop":
      running = false;
      stopped = true;
      post({
        type: "result",
        lines: answered - answeredAtMeasure,
        bytesIn: bytesIn - bytesInAtMeasure,
        bytesOut: (sent - sentAtMeasure) * traffic.line.length,
        ...problems,
      });
      socket?.destroy();
      return;
  }
};

/**
 * Latency under a fixed offered load, below saturation: N connections each
 * send one calculator line every INTERVAL ms (staggered, whether or not the
 * previous reply has arrived) and time each reply. `deno task bench` drives
 * connections as fast as they answer, which keeps both sides at 100% CPU;
 * this shows the tail when the server has headroom.
 *
 * It uses the bench's traffic and client code (`traffic.ts`): `node:net`
 * connections that read whole reply lines, check every one against the
 * calculator's answer and record its latency in the bench's histogram.
 *
 * Usage (against a running server, e.g. `taskset -c 0 deno task start --port 9000`):
 * `taskset -c 1 deno run --allow-net=127.0.0.1 bench/offered_load.ts PORT [CONNECTIONS] [INTERVAL_MS] [SECONDS]`
 *
 * @module
 */
import net from "node:net";
import { pause, settleWithin } from "../src/deadline.ts";
import {
  CALC_WELCOME,
  calculatorPool,
  countOver,
  LineClient,
  newHistogram,
  noProblems,
  quantile,
  record,
  type ReplySink,
  wirePool,
} from "./traffic.ts";

/** Requests one connection may have unanswered before its sends are skipped. */
const MAX_IN_FLIGHT = 64;
const CONNECT_TIMEOUT_MS = 10_000;
const DRAIN_MS = 2000;

const [port, connections = 1000, intervalMs = 40, seconds = 5] = Deno.args.map(
  Number,
);
if (
  !(port > 0) || !(connections >= 1 && connections <= 20000) ||
  !(intervalMs >= 1) || !(seconds > 0 && seconds <= 600)
) {
  console.error(
    "usage: offered_load.ts PORT [CONNECTIONS<=20000] [INTERVAL_MS>=1] [SECONDS<=600]",
  );
  Deno.exit(2);
}

const pool = wirePool(calculatorPool(), CALC_WELCOME);
const histogram = newHistogram();
let measuring = true;
const sink: ReplySink = {
  problems: noProblems(),
  reply(_client, ms) {
    if (measuring) record(histogram, ms * 1000);
  },
};
let skipped = 0;

async function connect(index: number): Promise<LineClient | undefined> {
  const socket = net.connect({ host: "127.0.0.1", port });
  socket.setNoDelay(true);
  socket.on("error", (e) => {
    sink.problems.errors++;
    if (sink.problems.errorSamples.length < 5) {
      sink.problems.errorSamples.push(e.message);
    }
  });
  const client = new LineClient(socket, pool, sink, {
    maxInFlight: MAX_IN_FLIGHT,
    firstRequest: index * 7,
  });
  if (await settleWithin(client.welcomed, CONNECT_TIMEOUT_MS)) return client;
  socket.destroy();
  return undefined;
}

/** Sends one line every `intervalMs` until `end`, starting at its stagger offset. */
async function drive(client: LineClient, index: number, end: number) {
  await pause((index * intervalMs) / connections);
  let next = performance.now();
  while (performance.now() < end && !client.socket.destroyed) {
    if (client.inflight < MAX_IN_FLIGHT) client.send(1);
    else skipped++;
    next += intervalMs;
    await pause(Math.max(0, next - performance.now()));
  }
}

const clients = (await Promise.all(
  Array.from({ length: connections }, (_, i) => connect(i)),
)).filter((c) => c !== undefined);
const end = performance.now() + seconds * 1000;
await Promise.all(clients.map((c, i) => drive(c, i, end)));
measuring = false;
const deadline = Date.now() + DRAIN_MS;
while (clients.some((c) => c.inflight > 0) && Date.now() < deadline) {
  await pause(10);
}
const unanswered = clients.reduce((sum, c) => sum + c.inflight, 0);
for (const client of clients) client.socket.destroy();

const ms = (us: number) => (us / 1000).toFixed(2);
const over100 = countOver(histogram, 100_000);
const { problems } = sink;
console.log(
  `${clients.length}/${connections} connections, one line each every ${intervalMs} ms ` +
    `(${Math.round((connections * 1000) / intervalMs)} lines/s offered): ` +
    `${histogram.total} replies, p50 ${ms(quantile(histogram, 0.5))} ms, ` +
    `p99 ${ms(quantile(histogram, 0.99))} ms, max ${ms(histogram.maxUs)} ms, ` +
    `${over100} over 100 ms, ${skipped} sends skipped (${MAX_IN_FLIGHT} unanswered), ` +
    `${unanswered} unanswered at the end, ${problems.mismatches} mismatches, ${problems.errors} errors`,
);
for (const sample of [...problems.mismatchSamples, ...problems.errorSamples]) {
  console.log(`  ${sample}`);
}
if (
  problems.mismatches > 0 || problems.errors > 0 ||
  clients.length < connections
) {
  Deno.exit(1);
}
Deno.exit(0);

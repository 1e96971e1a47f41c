/**
 * The client library under load, one connection: what `LineClient` costs
 * against a running server. `bench/client_load.mjs` runs the same loops on
 * Node's `net` for comparison; `client_scenario.ts` runs both.
 *
 * Modes (`--mode`):
 * - `rr`: request/response, one request in flight (`await request(line)`);
 * - `pipelined`: `--window` requests in flight (default 32), the next sent
 *   as each reply arrives;
 * - `bulk`: the bulk-push example's exchange, repeated on fresh
 *   connections: `start`, three 3 MiB messages each checked and
 *   acknowledged.
 *
 * Every reply is checked (the calculator's exact sums, or the message's
 * bytes). After `--warmup` seconds the window of `--duration` seconds is
 * measured; prints one JSON object: requests (or bytes) per second and the
 * client's CPU time per request (or per MiB).
 *
 * Usage: `deno run --allow-net=127.0.0.1 bench/client_load.ts --mode rr --port P`
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { LineClient } from "../mod.ts";
import { calculatorLines } from "./traffic.ts";
import {
  acknowledgement,
  message,
  MESSAGE_BYTES,
  MESSAGES,
  START,
  TERMINATOR,
} from "../examples/bulk_push/messages.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mode: { type: "string", default: "rr" },
    port: { type: "string" },
    window: { type: "string", default: "32" },
    warmup: { type: "string", default: "1" },
    duration: { type: "string", default: "5" },
  },
});
const port = Number(values.port);
const warmupMs = Number(values.warmup) * 1000;
const durationMs = Number(values.duration) * 1000;

const pool = calculatorLines();

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Counts what `step` does after the warm-up, for the window. */
async function measure(
  step: () => Promise<number>,
): Promise<{ units: number; seconds: number; cpuMs: number }> {
  const warmEnd = performance.now() + warmupMs;
  while (performance.now() < warmEnd) await step();
  const start = performance.now();
  const cpuStart = cpuMs();
  let units = 0;
  while (performance.now() - start < durationMs) units += await step();
  return {
    units,
    seconds: (performance.now() - start) / 1000,
    cpuMs: cpuMs() - cpuStart,
  };
}

function check(got: string, want: string) {
  if (got !== want) {
    throw new Error(
      `Wrong reply: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`,
    );
  }
}

async function requestResponse(window: number) {
  await using client = await LineClient.connect({ port, greeting: true });
  let next = 0;
  const one = async () => {
    const { line, reply } = pool[next++ % pool.length];
    check(await client.request(line), reply);
  };
  if (window === 1) {
    return await measure(async () => {
      await one();
      return 1;
    });
  }
  // A window of requests in flight; each step waits for the oldest reply
  // and sends one more, so the window stays full.
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < window; i++) inFlight.push(one());
  const result = await measure(async () => {
    await inFlight.shift();
    inFlight.push(one());
    return 1;
  });
  await Promise.all(inFlight);
  return result;
}

async function bulk() {
  const expected = Array.from({ length: MESSAGES }, (_, i) => message(i + 1));
  return await measure(async () => {
    await using client = await LineClient.connect({
      port,
      terminator: TERMINATOR,
      maxFrameBytes: MESSAGE_BYTES,
    });
    await client.send(START);
    for (let n = 1; n <= MESSAGES; n++) {
      const received = await client.readLine();
      if (received !== expected[n - 1]) throw new Error(`Message ${n} differs`);
      await client.send(acknowledgement(n));
    }
    return MESSAGES * MESSAGE_BYTES;
  });
}

const mode = values.mode;
const result = mode === "bulk"
  ? await bulk()
  : await requestResponse(mode === "pipelined" ? Number(values.window) : 1);
const perSecond = result.units / result.seconds;
console.log(JSON.stringify({
  client: "LineClient",
  mode,
  perSecond: mode === "bulk" ? perSecond / 1e6 : perSecond,
  unit: mode === "bulk" ? "MB/s" : "requests/s",
  seconds: result.seconds,
  cpuShare: result.cpuMs / 1000 / result.seconds,
}));

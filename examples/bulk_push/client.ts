/**
 * The bulk-push clients: each connects, sends `start`, checks each of the
 * three 3 MiB messages byte for byte and acknowledges it, then waits for
 * more with a read deadline. When the server stops without closing (a
 * paused or killed process), every client notices within its timeout, and
 * the process reports the CPU it used while they waited. Written only
 * against `mod.ts`.
 *
 * Run: `deno run --allow-net examples/bulk_push/client.ts [--port 9000]
 * [--clients 3] [--timeout 3]`. Exit code 0 when every client received and
 * acknowledged every message and then noticed the server's silence.
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { LineClient, LineClientError } from "../../mod.ts";
import {
  acknowledgement,
  message,
  MESSAGE_BYTES,
  MESSAGES,
  START,
  TERMINATOR,
} from "./messages.ts";
import { log } from "./log.ts";

const utf8 = new TextEncoder();
const expected = Array.from(
  { length: MESSAGES },
  (_, i) => utf8.encode(message(i + 1)),
);

/** Where `received` first differs from message `n`, or -1 when it is the same bytes. */
function firstDifference(received: string, n: number): number {
  const bytes = utf8.encode(received);
  const want = expected[n - 1];
  const common = Math.min(bytes.length, want.length);
  for (let i = 0; i < common; i++) if (bytes[i] !== want[i]) return i;
  return bytes.length === want.length ? -1 : common;
}

interface Options {
  hostname: string;
  port: number;
  timeoutMs: number;
  clients: number;
}

/** When each client began waiting, and when it noticed the silence. */
const waits: { began: number; noticed?: number }[] = [];
/**
 * The CPU clock and the time when the last client began to wait: from then
 * until the last one noticed, every client only waits.
 */
let allWaiting: { cpuMs: number; at: number } | undefined;

async function runClient(id: number, options: Options): Promise<boolean> {
  await using client = await LineClient.connect({
    hostname: options.hostname,
    port: options.port,
    terminator: TERMINATOR,
    maxFrameBytes: MESSAGE_BYTES,
    readTimeoutMs: options.timeoutMs,
  });
  log(`client ${id}: connected to ${client.address}, sending ${START}`);
  await client.send(START);
  for (let n = 1; n <= MESSAGES; n++) {
    const received = await client.readLine();
    const at = firstDifference(received, n);
    if (at >= 0) {
      log(
        `client ${id}: message ${n} differs from the expected one at byte ${at}`,
      );
      return false;
    }
    await client.send(acknowledgement(n));
    log(
      `client ${id}: message ${n}: ${MESSAGE_BYTES} bytes, ${
        received.slice(0, 4)
      }…${received.slice(-4)}, checked byte for byte; sent ${
        acknowledgement(n)
      }`,
    );
  }
  const wait: { began: number; noticed?: number } = {
    began: performance.now(),
  };
  waits.push(wait);
  if (waits.length === options.clients) {
    allWaiting = { cpuMs: cpuMs(), at: performance.now() };
  }
  log(`client ${id}: all ${MESSAGES} messages acknowledged; waiting for more`);
  try {
    const extra = await client.readLine();
    log(`client ${id}: unexpected frame of ${extra.length} characters`);
    return false;
  } catch (error) {
    if (!(error instanceof LineClientError) || error.code !== "timeout") {
      log(`client ${id}: ${String(error)}`);
      return false;
    }
    wait.noticed = performance.now();
    log(`client ${id}: ${error.message}: the server is gone`);
    return true;
  }
}

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "9000" },
      clients: { type: "string", default: "3" },
      timeout: { type: "string", default: "3" },
    },
  });
  const options: Options = {
    hostname: values.host,
    port: Number(values.port),
    timeoutMs: Number(values.timeout) * 1000,
    clients: Number(values.clients),
  };
  const results = Array.from({ length: options.clients }, async (_, i) => {
    // Staggered: connections come while others are mid-transfer.
    await new Promise((resolve) => setTimeout(resolve, i * 50));
    const ok = await runClient(i + 1, options).catch((error) => {
      log(`client ${i + 1}: ${String(error)}`);
      return false;
    });
    return ok;
  });
  const outcomes = await Promise.all(results);
  const allOk = outcomes.every((ok) => ok);
  if (allOk && allWaiting !== undefined) {
    const cpuUsed = cpuMs() - allWaiting.cpuMs;
    const waitedMs = Math.max(...waits.map((w) => w.noticed!)) - allWaiting.at;
    log(
      `all ${options.clients} clients noticed the silence; while they all waited (${
        (waitedMs / 1000).toFixed(2)
      } s) the process used ${cpuUsed.toFixed(1)} ms of CPU`,
    );
  }
  Deno.exit(allOk ? 0 : 1);
}

/**
 * Latency under a fixed offered load, below saturation: N connections each
 * send one calculator line every INTERVAL ms (staggered) and time the reply.
 * `deno task bench` drives connections as fast as they answer, which keeps
 * both sides at 100% CPU; this shows the tail when the server has headroom.
 *
 * Usage (against a running server, e.g. `taskset -c 0 deno task start --port 9000`):
 * `taskset -c 1 deno run --allow-net=127.0.0.1 bench/offered_load.ts PORT [CONNECTIONS] [INTERVAL_MS] [SECONDS]`
 *
 * @module
 */

const [port, connections = 1000, intervalMs = 40, seconds = 5] = Deno.args.map(
  Number,
);
if (!(port > 0)) {
  console.error(
    "usage: offered_load.ts PORT [CONNECTIONS] [INTERVAL_MS] [SECONDS]",
  );
  Deno.exit(2);
}

const request = new TextEncoder().encode("1,2\n");
const expected = "Sum of input integers: '3'\r\n";
const latencies: number[] = [];
let mismatches = 0;
const end = Date.now() + seconds * 1000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function client(index: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const buffer = new Uint8Array(256);
  const decoder = new TextDecoder();
  try {
    await conn.read(buffer); // the welcome line
    await sleep((index * intervalMs) / connections);
    while (Date.now() < end) {
      const started = performance.now();
      await conn.write(request);
      const n = await conn.read(buffer);
      latencies.push(performance.now() - started);
      if (n === null || decoder.decode(buffer.subarray(0, n)) !== expected) {
        mismatches++;
      }
      const wait = intervalMs - (performance.now() - started);
      if (wait > 0) await sleep(wait);
    }
  } finally {
    conn.close();
  }
}

await Promise.all(Array.from({ length: connections }, (_, i) => client(i)));
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
console.log(
  `${connections} connections, one line each every ${intervalMs} ms ` +
    `(${Math.round((connections * 1000) / intervalMs)} lines/s offered): ` +
    `${latencies.length} replies, p50 ${at(0.5).toFixed(2)} ms, p99 ${
      at(0.99).toFixed(2)
    } ms, ` +
    `max ${latencies.at(-1)!.toFixed(1)} ms, ${
      latencies.filter((l) => l > 100).length
    } over 100 ms, ` +
    `${mismatches} mismatches`,
);
if (mismatches > 0) Deno.exit(1);

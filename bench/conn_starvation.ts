/**
 * A stand-alone reproduction of connection starvation with `Deno.Conn`
 * (`Deno.listen`/`Deno.connect` with `read`/`write`), small enough to report
 * upstream: it imports nothing from this repository.
 *
 * With many busy connections on one event loop, a few `Deno.Conn`
 * connections wait far longer than the rest: the slowest reply is many times
 * the median one and some connections get far fewer replies than the
 * median. The same loop over `node:net` sockets in the same Deno serves every
 * connection alike. Both ends show it: a `Deno.listen` echo server under a
 * fair client, and a `Deno.connect` client against a fair server.
 *
 * This file is the client: N connections in a closed loop (send one line,
 * read until its whole echo is back, send again), on `Deno.connect` or on
 * `node:net`. All connections are open, each with one echo answered, before
 * the warm-up starts. The server is `bench/raw_echo_server.ts`, which can echo on
 * either layer. Each process gets its own CPU, as in the bench:
 *
 * ```sh
 * # The Deno.Conn echo server, with a node:net client: unfair
 * taskset -c 0 deno run --allow-net=127.0.0.1 bench/raw_echo_server.ts --port 9100 --api deno &
 * taskset -c 1 deno run --allow-net=127.0.0.1 bench/conn_starvation.ts --port 9100 --client node
 * kill %1
 * # The same server on node:net in Deno: fair
 * taskset -c 0 deno run --allow-net=127.0.0.1 bench/raw_echo_server.ts --port 9100 --api node &
 * taskset -c 1 deno run --allow-net=127.0.0.1 bench/conn_starvation.ts --port 9100 --client node
 * kill %1
 * # A Deno.connect client against the fair server: unfair again
 * taskset -c 0 deno run --allow-net=127.0.0.1 bench/raw_echo_server.ts --port 9100 --api node &
 * taskset -c 1 deno run --allow-net=127.0.0.1 bench/conn_starvation.ts --port 9100 --client deno
 * kill %1
 * ```
 *
 * Options: `--port P` (required), `--connections N` (default 1000),
 * `--client deno|node` (default deno), `--warmup S` (2), `--seconds S` (8).
 * It prints one line: replies/s, p50, p99 and max latency, max/median and
 * least-served/median (the fewest replies any connection got over the
 * median count). It stops by itself after warm-up + window.
 *
 * @module
 */
import net from "node:net";

const LINE = new TextEncoder().encode("1,2,3,4,5,6,7,8\n");
const LF = 10;

function option(name: string, fallback?: string): string {
  const at = Deno.args.indexOf(name);
  const value = at >= 0 ? Deno.args[at + 1] : fallback;
  if (value === undefined) {
    console.error(
      "usage: conn_starvation.ts --port P [--connections N] [--client deno|node] [--warmup S] [--seconds S]",
    );
    Deno.exit(2);
  }
  return value;
}

const port = Number(option("--port"));
const connections = Number(option("--connections", "1000"));
const client = option("--client", "deno");
const warmupMs = Number(option("--warmup", "2")) * 1000;
const windowMs = Number(option("--seconds", "8")) * 1000;

let measuring = false;
const latencies: number[] = [];
const replies = new Array<number>(connections).fill(0);

/** Sends the line and resolves once its whole echo is back. */
type RoundTrip = () => Promise<void>;

/** A connection on Deno.Conn: write, then read until the echo's LF. */
async function denoConnection(): Promise<RoundTrip> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const buffer = new Uint8Array(256);
  return async () => {
    await conn.write(LINE);
    let received = 0;
    while (received < LINE.length || buffer[received - 1] !== LF) {
      const n = await conn.read(buffer.subarray(received));
      if (n === null) throw new Error("Server closed the connection");
      received += n;
    }
  };
}

/** A connection on node:net: write, then wait for `data` up to the LF. */
function nodeConnection(): Promise<RoundTrip> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setNoDelay(true);
    let received = 0;
    let answered = () => {};
    socket.on("error", reject);
    socket.on("data", (chunk: Uint8Array) => {
      received += chunk.length;
      if (received < LINE.length || chunk[chunk.length - 1] !== LF) return;
      received = 0;
      answered();
    });
    socket.on("connect", () =>
      resolve(() =>
        new Promise((done) => {
          answered = done;
          socket.write(LINE);
        })
      ));
  });
}

// Connect first, at most 64 at a time, each with one round trip, so that
// every connection has been accepted by the server before the clock starts
// (a burst of connects can overflow the listen queue, and a dropped
// handshake waits for a retransmission).
const open = client === "node" ? nodeConnection : denoConnection;
const roundTrips: RoundTrip[] = [];
let next = 0;
await Promise.all(Array.from({ length: 64 }, async () => {
  while (next < connections) {
    next++;
    const roundTrip = await open();
    await roundTrip();
    roundTrips.push(roundTrip);
  }
}));

// The closed loop on every connection; the process exits at the window's
// end, which also ends loops still waiting for a starved reply.
roundTrips.forEach(async (roundTrip, index) => {
  try {
    while (true) {
      const sentAt = performance.now();
      await roundTrip();
      if (measuring) {
        latencies.push(performance.now() - sentAt);
        replies[index]++;
      }
    }
  } catch (e) {
    console.error(`connection ${index}: ${(e as Error).message}`);
    Deno.exit(1);
  }
});
setTimeout(() => measuring = true, warmupMs);
await new Promise((resolve) => setTimeout(resolve, warmupMs + windowMs));
measuring = false;

latencies.sort((a, b) => a - b);
const sorted = [...replies].sort((a, b) => a - b);
const at = (q: number) => latencies[Math.floor((latencies.length - 1) * q)];
const median = at(0.5);
console.log(
  `${client} client, ${connections} conns: ${
    Math.round(latencies.length / (windowMs / 1000))
  } replies/s, p50 ${median.toFixed(2)} ms, p99 ${
    at(0.99).toFixed(2)
  } ms, max ${latencies.at(-1)!.toFixed(1)} ms, max/median ${
    (latencies.at(-1)! / median).toFixed(1)
  }, ` +
    `least-served/median ${
      (sorted[0] / sorted[sorted.length >> 1]).toFixed(2)
    }`,
);
Deno.exit(0);

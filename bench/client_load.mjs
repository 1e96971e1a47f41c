/**
 * The yardstick for `client_load.ts`: the same loops written the
 * straightforward way on Node's `net`, run by `node`. One `data` handler
 * splits the bytes into lines (or messages at the bulk-push terminator),
 * checks each against the reply it must be, and sends the next request.
 *
 * Usage: `node bench/client_load.mjs --mode rr|pipelined|bulk --port P
 * [--window 32] [--warmup 1] [--duration 5]`; prints one JSON object like
 * `client_load.ts`. The request lines and their replies arrive on stdin (JSON,
 * written by the orchestrator), so both clients send the same lines.
 *
 * @module
 */
import net from "node:net";
import { readFileSync } from "node:fs";

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const mode = option("--mode", "rr");
const port = Number(option("--port"));
const window = mode === "pipelined" ? Number(option("--window", "32")) : 1;
const warmupMs = Number(option("--warmup", "1")) * 1000;
const durationMs = Number(option("--duration", "5")) * 1000;
const WELCOME = "<welcome: starting in sum mode>";
const TERMINATOR = Buffer.from("\r<--EOM-->\r");
const MESSAGE_BYTES = 3 * 1024 * 1024;

function cpuMs() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Starts the measuring window after the warm-up; returns the report. */
function clock() {
  const began = performance.now();
  let start = -1;
  let cpuStart = 0;
  let units = 0;
  return {
    /** Counts `n` units; true once the window is over. */
    count(n) {
      const now = performance.now();
      if (start < 0) {
        if (now - began < warmupMs) return false;
        start = now;
        cpuStart = cpuMs();
        return false;
      }
      units += n;
      return now - start >= durationMs;
    },
    report(unit, scale = 1) {
      const seconds = (performance.now() - start) / 1000;
      return {
        client: "node:net",
        mode,
        perSecond: units / seconds / scale,
        unit,
        seconds,
        cpuShare: (cpuMs() - cpuStart) / 1000 / seconds,
      };
    },
  };
}

function requests() {
  const pool = JSON.parse(readFileSync(0, "utf8"));
  const socket = net.connect({ port, host: "127.0.0.1", noDelay: true });
  const timing = clock();
  let sent = 0;
  let answered = -1; // the welcome comes first
  let rest = "";
  let done = false;
  const send = () => socket.write(pool[sent++ % pool.length].line + "\n");
  socket.on("connect", () => {
    for (let i = 0; i < window; i++) send();
  });
  socket.on("data", (chunk) => {
    const lines = (rest + chunk.toString("utf8")).split("\r\n");
    rest = lines.pop();
    for (const line of lines) {
      const want = answered < 0 ? WELCOME : pool[answered % pool.length].reply;
      if (line !== want) {
        throw new Error(`Wrong reply: ${line}, expected ${want}`);
      }
      if (answered++ < 0) continue;
      if (done) continue;
      if (timing.count(1)) {
        done = true;
        console.log(JSON.stringify(timing.report("requests/s")));
        socket.destroy();
        return;
      }
      send();
    }
  });
}

/** Message `n`, as `examples/bulk_push/messages.ts` makes it. */
function message(n) {
  const bytes = Buffer.alloc(MESSAGE_BYTES);
  let state = Math.imul(n, 2654435761) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    bytes[i] = 0x61 + (state >>> 16) % 26;
  }
  bytes.write("head", 0);
  bytes.write("tail", MESSAGE_BYTES - 4);
  return bytes;
}

function bulk() {
  const expected = [1, 2, 3].map(message);
  const timing = clock();
  const round = () => {
    const socket = net.connect({ port, host: "127.0.0.1", noDelay: true });
    socket.on(
      "connect",
      () => socket.write(Buffer.concat([Buffer.from("start"), TERMINATOR])),
    );
    let chunks = [];
    let received = 0;
    let n = 0;
    socket.on("data", (chunk) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < MESSAGE_BYTES + TERMINATOR.length) return;
      let data = Buffer.concat(chunks);
      let end;
      while ((end = data.indexOf(TERMINATOR)) >= 0) {
        if (!data.subarray(0, end).equals(expected[n])) {
          throw new Error(`Message ${n + 1} differs`);
        }
        n++;
        socket.write(
          Buffer.concat([Buffer.from(`已收 ${n} 条。`), TERMINATOR]),
        );
        data = data.subarray(end + TERMINATOR.length);
      }
      chunks = [data];
      received = data.length;
      if (n < 3) return;
      socket.destroy();
      if (timing.count(3 * MESSAGE_BYTES)) {
        console.log(JSON.stringify(timing.report("MB/s", 1e6)));
      } else {
        round();
      }
    });
  };
  round();
}

if (mode === "bulk") bulk();
else requests();

/**
 * Resident memory before, during and after two loads, and whether it comes
 * back to rest: lineserver's bound is max(1.25x, +16 MiB) of the level before
 * the load, within 30 s of its end, while the server idles. Each load runs
 * on a fresh server, lineserver and the Node.js peer side by side:
 *
 * - `busy`: 1000 connections in a closed loop (a line, its reply, the next
 *   line) for 10 s;
 * - `mix`: for 30 s, 50 good clients in a closed loop (in a process of their
 *   own, timing every reply), beside 20 clients streaming without a newline,
 *   50 that send empty lines and never read, 100 that send one byte a second,
 *   and one that connects and closes again and again.
 *
 * Besides VmRSS it reports the file-backed part (RssFile: pages of the
 * runtime's executable that the load ran for the first time; they stay
 * resident, and no program can give them back) and the good clients' reply
 * times.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read bench/rest_after_load.ts \
 *   [--loads busy,mix] [--servers calc,node-peer] [--rest S]
 * ```
 *
 * @module
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import { pause } from "../src/deadline.ts";
import { resetPeaks, rssKiBOfTree, SERVER_CPU } from "./machine.ts";
import { restLimitKiB, watchRest } from "./memory_scenario.ts";
import {
  cleanUp,
  type ServerChild,
  type ServerKind,
  SERVERS,
  startServer,
  stopServer,
} from "./servers.ts";
import { table } from "./table.ts";

const MiB = 1024 * 1024;
const BUSY_CONNECTIONS = 1000;
const BUSY_S = 10;
const MIX_S = 30;
const GOOD_CLIENTS = 50;
const STREAMERS = 20;
const FLOODERS = 50;
const DRIPPERS = 100;
const STOP_GRACE_MS = 10_000;

type Load = "busy" | "mix";

interface MemorySample {
  rssKiB: number;
  fileKiB: number;
  peakKiB: number;
}

/** One load on one fresh server. */
interface RestResult {
  server: string;
  load: Load;
  before: MemorySample;
  peakKiB: number;
  atEnd: MemorySample;
  afterRest: MemorySample;
  restS: number;
  boundKiB: number;
  /** Seconds into the rest when RSS was first within the bound; null: never. */
  backInS: number | null;
  replies: number;
  good?: GoodFigures;
}

async function memoryOf(pid: number): Promise<MemorySample> {
  const { now, file, peak } = await rssKiBOfTree([pid]);
  return { rssKiB: now, fileKiB: file, peakKiB: peak };
}

/**
 * A closed-loop calculator client: sends `1,2,3,N`, waits for the reply,
 * sends again, until `stopping()`; counts replies and times them.
 */
function closedLoop(
  port: number,
  n: number,
  stopping: () => boolean,
  onReply: (ms: number) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let pending = "";
    let greeted = false;
    let sentAt = 0;
    const send = () => {
      sentAt = performance.now();
      socket.write(`1,2,3,${n}\n`);
    };
    socket.setEncoding("latin1");
    socket.on("data", (text: string) => {
      pending += text;
      for (
        let at = pending.indexOf("\r\n");
        at >= 0;
        at = pending.indexOf("\r\n")
      ) {
        pending = pending.slice(at + 2);
        if (greeted) onReply(performance.now() - sentAt);
        greeted = true;
        if (stopping()) return void socket.end();
        send();
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve());
  });
}

/** A client that writes `chunk` whenever its socket takes more, never reading. */
function writer(port: number, chunk: Uint8Array, stopping: () => boolean) {
  return new Promise<void>((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.on("error", () => {});
    socket.on("close", () => resolve());
    const fill = () => {
      while (!stopping()) if (!socket.write(chunk)) return;
      socket.destroy();
    };
    socket.on("connect", () => {
      socket.pause();
      fill();
    });
    socket.on("drain", fill);
    const check = setInterval(() => {
      if (!stopping()) return;
      clearInterval(check);
      socket.destroy();
    }, 250);
    socket.on("close", () => clearInterval(check));
  });
}

/** A client that sends one byte a second (never a whole line). */
function dripper(port: number, stopping: () => boolean) {
  return new Promise<void>((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.on("error", () => {});
    socket.on("data", () => {});
    const timer = setInterval(() => {
      if (stopping()) socket.destroy();
      else socket.write("1");
    }, 1000);
    socket.on("close", () => {
      clearInterval(timer);
      resolve();
    });
  });
}

/** Connects and closes at once, again and again. */
async function churn(port: number, stopping: () => boolean) {
  while (!stopping()) {
    await new Promise<void>((resolve) => {
      const socket = net.connect({ port, host: "127.0.0.1" });
      socket.on("error", () => resolve());
      socket.on("connect", () => {
        socket.destroy();
        resolve();
      });
    });
  }
}

/** The good clients' reply times (from their own process). */
interface GoodFigures {
  replies: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Seconds into the load when the slowest reply came. */
  maxAtS: number;
}

/** `--good PORT SECONDS`: this file run as the good clients' process. */
async function runGoodClients(port: number, seconds: number) {
  const times: number[] = [];
  const start = performance.now();
  let maxAtS = 0;
  let maxMs = 0;
  let stop = false;
  const record = (ms: number) => {
    times.push(ms);
    if (ms <= maxMs) return;
    maxMs = ms;
    maxAtS = (performance.now() - start) / 1000;
  };
  const clients = Array.from(
    { length: GOOD_CLIENTS },
    (_, i) => closedLoop(port, i, () => stop, record),
  );
  await pause(seconds * 1000);
  stop = true;
  await Promise.race([Promise.all(clients), pause(STOP_GRACE_MS)]);
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.floor(q * (times.length - 1))] ?? NaN;
  const figures: GoodFigures = {
    replies: times.length,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: at(1),
    maxAtS,
  };
  console.log(JSON.stringify(figures));
}

async function busyLoad(port: number): Promise<number> {
  let replies = 0;
  let stop = false;
  const clients = Array.from(
    { length: BUSY_CONNECTIONS },
    (_, i) => closedLoop(port, i, () => stop, () => replies++),
  );
  await pause(BUSY_S * 1000);
  stop = true;
  await Promise.race([Promise.all(clients), pause(STOP_GRACE_MS)]);
  return replies;
}

async function mixLoad(port: number): Promise<GoodFigures> {
  let stop = false;
  const stopping = () => stop;
  const good = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      import.meta.filename!,
      "--good",
      String(port),
      String(MIX_S),
    ],
    stdout: "piped",
  }).output();
  const noNewline = Buffer.alloc(MiB, 0x78);
  const emptyLines = Buffer.alloc(64 * 1024, 0x0a);
  const hostile = [
    ...Array.from(
      { length: STREAMERS },
      () => writer(port, noNewline, stopping),
    ),
    ...Array.from(
      { length: FLOODERS },
      () => writer(port, emptyLines, stopping),
    ),
    ...Array.from({ length: DRIPPERS }, () => dripper(port, stopping)),
    churn(port, stopping),
  ];
  const output = await good;
  stop = true;
  await Promise.race([Promise.all(hostile), pause(STOP_GRACE_MS)]);
  return JSON.parse(new TextDecoder().decode(output.stdout)) as GoodFigures;
}

async function runOne(
  kind: ServerKind,
  load: Load,
  restS: number,
): Promise<RestResult> {
  const server: ServerChild = (await startServer(
    { kind, cpus: SERVER_CPU },
    { server: "server.ts", denoFlags: [] },
  )).child;
  try {
    await pause(1000);
    const before = await memoryOf(server.pid);
    await resetPeaks([server.pid]);
    let replies = 0;
    let good: GoodFigures | undefined;
    if (load === "busy") replies = await busyLoad(server.port);
    else good = await mixLoad(server.port);
    const atEnd = await memoryOf(server.pid);
    const boundKiB = restLimitKiB(before.rssKiB);
    const { last: afterRest, backInS } = await watchRest(
      restS,
      atEnd,
      () => memoryOf(server.pid),
      (sample) => sample.rssKiB <= boundKiB,
    );
    return {
      server: SERVERS[kind].label,
      load,
      before,
      peakKiB: atEnd.peakKiB,
      atEnd,
      afterRest,
      restS,
      boundKiB,
      backInS,
      replies: good?.replies ?? replies,
      good,
    };
  } finally {
    await stopServer(server);
  }
}

function report(results: RestResult[]): string {
  const mib = (kib: number) => (kib / 1024).toFixed(0);
  // A load that got no reply at all reports NaN, which JSON carries as null.
  const ms = (v: number | null | undefined) =>
    typeof v === "number" && Number.isFinite(v) ? v.toFixed(1) : "-";
  const rows = results.map((r) => [
    r.server,
    r.load,
    mib(r.before.rssKiB),
    mib(r.peakKiB),
    mib(r.atEnd.rssKiB),
    mib(r.afterRest.rssKiB),
    mib(r.boundKiB),
    r.backInS === null ? "never" : `${r.backInS} s`,
    `+${mib(r.afterRest.fileKiB - r.before.fileKiB)}`,
    String(r.replies),
    `${ms(r.good?.p50Ms)} / ${ms(r.good?.p99Ms)} / ${ms(r.good?.maxMs)}` +
    (r.good?.replies ? ` (at ${r.good.maxAtS.toFixed(1)} s)` : ""),
  ]);
  return [
    `resident memory in MiB before, at the peak, at the end of the load and ${
      results[0]?.restS
    } s later; bound max(1.25x, +16 MiB) of before; file: growth of RssFile (executable pages):`,
    table([
      "server",
      "load",
      "before",
      "peak",
      "at end",
      "after rest",
      "bound",
      "back in",
      "file",
      "replies",
      "good p50 / p99 / max ms",
    ], rows),
  ].join("\n");
}

if (import.meta.main) {
  const value = (name: string) => {
    const at = Deno.args.indexOf(name);
    return at >= 0 ? Deno.args[at + 1] : undefined;
  };
  if (value("--good") !== undefined) {
    const at = Deno.args.indexOf("--good");
    await runGoodClients(Number(Deno.args[at + 1]), Number(Deno.args[at + 2]));
    Deno.exit(0);
  }
  const loads = (value("--loads") ?? "busy,mix").split(",") as Load[];
  const kinds = (value("--servers") ?? "calc,node-peer").split(
    ",",
  ) as ServerKind[];
  const restS = Number(value("--rest") ?? 30);
  const results: RestResult[] = [];
  try {
    for (const load of loads) {
      for (const kind of kinds) {
        console.error(`[rest] ${load} on ${SERVERS[kind].label}`);
        const result = await runOne(kind, load, restS);
        console.error(JSON.stringify(result));
        results.push(result);
      }
    }
  } finally {
    await cleanUp();
  }
  console.log(report(results));
}

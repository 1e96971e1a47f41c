/**
 * Scenario m: memory under clients that stream without a newline, and the
 * return to rest. Two loads, each on a fresh server so that neither hides
 * behind memory the other left: 100 clients that each stream 40 MB at once,
 * then one client streaming 150 MB. Every streamer reads the welcome, gets
 * the line-too-long error while it streams, ends the line and sends `1,2`,
 * and must get its sum: the connection stays usable.
 *
 * Resident memory (VmRSS of the server's process tree) is read before the
 * load (after a settle pause), at its peak (VmHWM, reset through
 * /proc/PID/clear_refs just before the load) and every second for the rest
 * period after it (30 s by default) while the server idles. lineserver's
 * targets: growth at the peak <= 64 MiB for 100 x 40 MB and <= 32 MiB for
 * 1 x 150 MB; at the end of the rest, back within max(1.25x, +16 MiB) of
 * the level before the load. The Node.js peer runs the same loads beside it.
 *
 * @module
 */
import { pause } from "../src/deadline.ts";
import {
  processTree,
  progress,
  resetPeaks,
  rssKiBOfTree,
  SERVER_CPU,
} from "./machine.ts";
import {
  markFailed,
  type Outcome,
  outcome,
  type Settings,
} from "./scenarios.ts";
import {
  assertStillRunning,
  type ServerKind,
  startServer,
  stopServer,
  whyNot,
} from "./servers.ts";
import { addError, CALC_WELCOME, type Problems } from "./traffic.ts";
import { check, type MemoryTargetChecks, round } from "./targets.ts";
import { table } from "./table.ts";

const MiB = 1024 * 1024;
const CHUNK = new Uint8Array(MiB).fill(0x78); // "xxx...": never a newline
const MAX_LINE = 65536;
const EXPECTED = [
  CALC_WELCOME.trimEnd(),
  `ERROR. Line too long (max ${MAX_LINE} bytes)`,
  "Sum of input integers: '3'",
];
const SETTLE_MS = 1000;
const LOAD_TIMEOUT_MS = 120_000;

/** The servers scenario m runs, in order. */
export const MEMORY_SERVERS: ServerKind[] = ["calc", "node-peer"];

/** The loads, each with lineserver's bound on peak growth. */
export const MEMORY_LOADS = [
  { label: "100 x 40 MB", streamers: 100, bytes: 40e6, growthMiB: 64 },
  { label: "1 x 150 MB", streamers: 1, bytes: 150e6, growthMiB: 32 },
] as const;

/** One row of the JSON `memory` list: one load on one fresh server. */
export interface MemoryResult extends Outcome {
  load: string;
  streamers: number;
  bytesEach: number;
  loadS: number;
  rssBeforeKiB: number;
  peakRssKiB: number;
  rssAtEndKiB: number;
  /** VmRSS when the rest period ended. */
  rssAfterRestKiB: number;
  restS: number;
  /** Seconds into the rest when RSS was first within the bound; null: never. */
  backWithinBoundS: number | null;
  /** lineserver's targets, applied to every server for comparison. */
  growthLimitMiB: number;
  restLimitKiB: number;
  growthMet: boolean | null;
  restMet: boolean | null;
}

/** The level the rest must return to: max(1.25x, +16 MiB) of `beforeKiB`. */
export function restLimitKiB(beforeKiB: number): number {
  return beforeKiB + Math.max(beforeKiB * 0.25, 16 * 1024);
}

/**
 * Samples every second for `restS` seconds: the last sample (`initial` if
 * none) and the first second at which `within` held (null: never).
 */
export async function watchRest<T>(
  restS: number,
  initial: T,
  sample: () => Promise<T>,
  within: (value: T) => boolean,
): Promise<{ last: T; backInS: number | null }> {
  let last = initial;
  let backInS: number | null = null;
  const restStart = performance.now();
  for (let second = 1; second <= restS; second++) {
    await pause(restStart + second * 1000 - performance.now());
    last = await sample();
    if (within(last)) backInS ??= second;
  }
  return { last, backInS };
}

/**
 * One streamer: reads the welcome, streams `bytes` without a newline, ends
 * the line and sends `1,2`, then expects the line-too-long error and the sum.
 */
async function stream(
  host: string,
  port: number,
  bytes: number,
  problems: Problems,
): Promise<void> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: host, port });
  } catch (error) {
    addError(problems, `connect: ${(error as Error).message}`);
    return;
  }
  const lines = readLines(conn, EXPECTED.length);
  try {
    let sent = 0;
    while (sent < bytes) {
      sent += await conn.write(CHUNK.subarray(0, Math.min(MiB, bytes - sent)));
    }
    const end = new TextEncoder().encode("\n1,2\n");
    for (let at = 0; at < end.length;) at += await conn.write(end.subarray(at));
    const got = await lines;
    if (got.join("\n") !== EXPECTED.join("\n")) {
      problems.mismatches++;
      if (problems.mismatchSamples.length < 5) {
        problems.mismatchSamples.push(
          `expected ${JSON.stringify(EXPECTED)}, got ${JSON.stringify(got)}`,
        );
      }
    }
  } catch (error) {
    addError(problems, (error as Error).message);
  } finally {
    conn.close();
    await lines.catch(() => {});
  }
}

/** The first `count` lines the server sends (without line ends). */
async function readLines(conn: Deno.TcpConn, count: number): Promise<string[]> {
  const buffer = new Uint8Array(4096);
  const decoder = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), LOAD_TIMEOUT_MS);
  });
  try {
    while (text.split("\r\n").length <= count) {
      const n = await Promise.race([conn.read(buffer), late]);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } catch {
    // Closed while reading: what arrived is compared below.
  } finally {
    clearTimeout(timer);
  }
  return text.split("\r\n").slice(0, count);
}

async function runOne(
  kind: ServerKind,
  load: typeof MEMORY_LOADS[number],
  settings: Settings,
  restS: number,
): Promise<MemoryResult> {
  const result: MemoryResult = {
    ...outcome(`m-${kind}-${load.streamers}`, kind),
    load: load.label,
    streamers: load.streamers,
    bytesEach: load.bytes,
    loadS: NaN,
    rssBeforeKiB: NaN,
    peakRssKiB: NaN,
    rssAtEndKiB: NaN,
    rssAfterRestKiB: NaN,
    restS,
    backWithinBoundS: null,
    growthLimitMiB: load.growthMiB,
    restLimitKiB: NaN,
    growthMet: null,
    restMet: null,
  };
  const reason = Deno.build.os === "linux"
    ? await whyNot(kind)
    : "needs Linux (/proc/PID/clear_refs to reset the peak)";
  if (reason !== undefined) {
    result.skipped = reason;
    return result;
  }
  progress(`${result.id}: ${load.label} streamed at ${result.label}`);
  let started;
  try {
    started = await startServer({ kind, cpus: SERVER_CPU }, settings.calc);
  } catch (error) {
    result.failed = (error as Error).message;
    return result;
  }
  const server = started.child;
  try {
    await pause(SETTLE_MS);
    const tree = await processTree(server.pid);
    result.rssBeforeKiB = (await rssKiBOfTree(tree)).now;
    result.restLimitKiB = restLimitKiB(result.rssBeforeKiB);
    await resetPeaks(tree);
    const began = performance.now();
    await Promise.all(
      Array.from(
        { length: load.streamers },
        () => stream(server.host, server.port, load.bytes, result),
      ),
    );
    result.loadS = (performance.now() - began) / 1000;
    assertStillRunning(server);
    const atEnd = await rssKiBOfTree(tree);
    result.peakRssKiB = atEnd.peak;
    result.rssAtEndKiB = atEnd.now;
    const rest = await watchRest(
      restS,
      result.rssAfterRestKiB,
      async () => (await rssKiBOfTree(tree)).now,
      (now) => now <= result.restLimitKiB,
    );
    result.rssAfterRestKiB = rest.last;
    result.backWithinBoundS = rest.backInS;
    assertStillRunning(server);
    result.growthMet =
      (result.peakRssKiB - result.rssBeforeKiB) / 1024 <= load.growthMiB;
    result.restMet = result.rssAfterRestKiB <= result.restLimitKiB;
  } catch (error) {
    markFailed(result, error);
  } finally {
    result.serverExitCode = await stopServer(server);
  }
  if (!result.failed) {
    progress(
      `${result.id}: RSS ${mib(result.rssBeforeKiB)} -> peak ${
        mib(result.peakRssKiB)
      } -> ${mib(result.rssAfterRestKiB)} MiB after ${restS} s (${
        result.loadS.toFixed(1)
      } s of load, errors ${result.errors}, mismatches ${result.mismatches})`,
    );
  }
  return result;
}

/** Scenario m for every server in {@linkcode MEMORY_SERVERS}; never throws. */
export async function runMemory(
  settings: Settings,
  restS: number,
): Promise<MemoryResult[]> {
  const results: MemoryResult[] = [];
  for (const kind of MEMORY_SERVERS) {
    for (const load of MEMORY_LOADS) {
      results.push(await runOne(kind, load, settings, restS));
    }
  }
  return results;
}

/** The time scenario m may take, for the run's budget. */
export function memoryBudgetS(restS: number): number {
  return MEMORY_SERVERS.length * MEMORY_LOADS.length * (restS + 60);
}

function mib(kib: number): string {
  return Number.isFinite(kib) ? (kib / 1024).toFixed(0) : "-";
}

const verdict = (met: boolean | null) =>
  met === null ? "-" : met ? "met" : "MISSED";

/** lineserver's memory targets, for the JSON `targets`. */
export function memoryTargets(results: MemoryResult[]): MemoryTargetChecks[] {
  return results.filter((r) => r.server === "calc" && !r.failed && !r.skipped)
    .map((r) => ({
      load: r.load,
      growthMiB: {
        ...check(
          (r.peakRssKiB - r.rssBeforeKiB) / 1024,
          r.growthLimitMiB,
          false,
        ),
        met: r.growthMet,
      },
      afterRestMiB: {
        ...check(
          r.rssAfterRestKiB / 1024,
          round(r.restLimitKiB / 1024, 1) ?? 0,
          false,
        ),
        met: r.restMet,
        restS: r.restS,
      },
    }));
}

/** The memory table of the printed report. */
export function memoryText(results: MemoryResult[]): string {
  if (results.length === 0) return "";
  const header = [
    "server",
    "load",
    "before",
    "peak",
    "growth",
    "limit",
    "at end",
    `+${results[0].restS} s`,
    "bound",
    "back in",
    "growth",
    "rest",
  ];
  const rows = results.map((r) =>
    r.skipped || r.failed
      ? [
        r.label,
        r.load,
        r.skipped ? "skipped" : "FAILED",
        ...Array(9).fill(""),
      ]
      : [
        r.label,
        r.load,
        mib(r.rssBeforeKiB),
        mib(r.peakRssKiB),
        `+${mib(r.peakRssKiB - r.rssBeforeKiB)}`,
        `${r.growthLimitMiB}`,
        mib(r.rssAtEndKiB),
        mib(r.rssAfterRestKiB),
        mib(r.restLimitKiB),
        r.backWithinBoundS === null ? "never" : `${r.backWithinBoundS} s`,
        verdict(r.growthMet),
        verdict(r.restMet),
      ]
  );
  return [
    "memory (scenario m): streamers without a newline, a fresh server per load; server RSS in MiB; lineserver's targets shown for every server:",
    table(header, rows),
  ].join("\n");
}

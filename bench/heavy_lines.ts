/**
 * Scenario `h`, heavy lines: one client pipelines the heaviest lines the
 * limits allow while a bystander sends one short line every 50 ms on its own
 * connection (the clients and their loads: `heavy_clients.ts`; the
 * `stream` load is 8 clients streaming without a newline instead). The
 * bystander's reply times tell whether heavy clients hold the server;
 * lineserver's target is every bystander reply within 50 ms. Each load runs
 * against lineserver and against the Node.js peer, each row with a fresh
 * server pinned like the others, a warm-up and the speed rows' window.
 *
 * Stand-alone, without the calibration and the other scenarios (the server
 * is `server.ts` unless `--server` says otherwise):
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read --allow-env bench/heavy_lines.ts \
 *   [--rows h-product-calc,h-echo-calc-echo] [--duration S] [--warmup S] [--repeat N] \
 *   [--server FILE] [--deno-flags "FLAGS"]
 * ```
 *
 * @module
 */
import { pause } from "../src/deadline.ts";
import {
  allowedCpus,
  cpuSample,
  cpuShares,
  nproc,
  placeProcesses,
  processTree,
  progress,
  readClockTicks,
  readProcFiles,
  SERVER_CPU,
} from "./machine.ts";
import {
  markFailed,
  type Outcome,
  outcome,
  outcomeFailures,
  type Settings,
  start,
} from "./scenarios.ts";
import {
  assertStillRunning,
  cleanUp,
  type ServerKind,
  SERVERS,
  stopServer,
} from "./servers.ts";
import {
  Bystander,
  BYSTANDER_INTERVAL_MS,
  BYSTANDER_TARGET_MS,
  type BystanderFigures,
  HEAVY_IN_FLIGHT,
  HeavyClients,
  type HeavyLoad,
  heavyTraffic,
  STREAMERS,
} from "./heavy_clients.ts";
import { table } from "./table.ts";

/** One row: a load against a server. */
interface HeavyRow {
  id: string;
  load: HeavyLoad;
  server: ServerKind;
}

/** Every row of the scenario, lineserver first within each load. */
export const HEAVY_ROWS: HeavyRow[] = ([
  ["product", "calc"],
  ["product", "node-peer"],
  ["ones", "calc"],
  ["ones", "node-peer"],
  ["echo", "calc-echo"],
  ["echo", "node-peer-echo"],
  ["stream", "calc"],
  ["stream", "node-peer"],
] as const).map(([load, server]) => ({
  id: `h-${load}-${server}`,
  load,
  server,
}));

/** One row of the table and of the JSON `heavyLines` list. */
export interface HeavyLinesResult extends Outcome {
  load: HeavyLoad;
  lineBytes: number;
  measuredS: number;
  bystander: BystanderFigures | null;
  heavyLinesPerS: number;
  /** What the heavy clients sent, MB/s. */
  heavyMBps: number;
  /** CPU time over wall time in the window (1.0 = one core). */
  serverCpu: number;
  /** The same for this process: both clients. */
  clientCpu: number;
  /** CPU used by other processes in the window, in cores. */
  otherCpu: number;
  /** The machine's 1-minute load average before the window. */
  loadAverage: number;
}

/** Seconds the rows of `settings` may take, start-up and drain included. */
export function heavyLinesBudgetS(settings: Settings): number {
  return HEAVY_ROWS.length * (settings.warmupS + settings.durationS + 15);
}

async function loadAverage(): Promise<number> {
  const files = await readProcFiles(["/proc/loadavg"]);
  return Number(files.get("/proc/loadavg")?.split(" ")[0] ?? NaN);
}

/** Runs one row; a failure is recorded in the result, never thrown. */
export async function runHeavyRow(
  row: HeavyRow,
  settings: Settings,
): Promise<HeavyLinesResult> {
  const result: HeavyLinesResult = {
    ...outcome(row.id, row.server),
    load: row.load,
    lineBytes: heavyTraffic(row.load).line.replace(/\n$/, "").length,
    measuredS: 0,
    bystander: null,
    heavyLinesPerS: 0,
    heavyMBps: 0,
    serverCpu: NaN,
    clientCpu: NaN,
    otherCpu: NaN,
    loadAverage: NaN,
  };
  progress(`${row.id}: ${row.load} lines beside a bystander (${result.label})`);
  const started = await start(
    { kind: row.server, cpus: SERVER_CPU },
    result,
    settings,
  );
  if (started === undefined) return result;
  const server = started.child;
  let heavy: HeavyClients | undefined;
  let bystander: Bystander | undefined;
  try {
    const tree = await processTree(server.pid);
    progress(
      `${row.id}: server pid ${server.pid} on CPUs ${await allowedCpus(
        server.pid,
      )}`,
    );
    heavy = new HeavyClients(server.host, server.port, row.load);
    await heavy.ready(10_000);
    bystander = await Bystander.connect(
      server.host,
      server.port,
      SERVERS[row.server].speaks,
      () => heavy!.answered,
    );
    heavy.post({ type: "run" });
    bystander.start();
    await pause(settings.warmupS * 1000);
    result.loadAverage = await loadAverage();
    const start = await cpuSample(tree);
    heavy.post({ type: "measure" });
    bystander.measure();
    await pause(settings.durationS * 1000);
    const end = await cpuSample(tree);
    result.bystander = bystander.stop();
    const counts = await heavy.stop(5000);
    assertStillRunning(server);
    result.measuredS = (end.at - start.at) / 1000;
    result.heavyLinesPerS = counts.lines / result.measuredS;
    result.heavyMBps = counts.bytesOut / 1e6 / result.measuredS;
    const cpu = cpuShares(start, end, result.measuredS);
    result.serverCpu = cpu.server;
    result.clientCpu = cpu.self;
    result.otherCpu = cpu.other;
    for (const problems of [counts, bystander.problems]) {
      result.errors += problems.errors;
      result.mismatches += problems.mismatches;
      result.errorSamples.push(...problems.errorSamples);
      result.mismatchSamples.push(...problems.mismatchSamples);
    }
  } catch (error) {
    markFailed(result, error);
  } finally {
    heavy?.terminate();
    await bystander?.close();
    result.serverExitCode = await stopServer(server);
  }
  if (result.bystander && !result.failed) {
    progress(`${row.id}: ${rowLine(result)}`);
  }
  return result;
}

// ---------------------------------------------------------------------------
// Report

const ms = (v: number) =>
  !Number.isFinite(v) ? "-" : v >= 100 ? v.toFixed(0) : v.toFixed(1);

function rowLine(r: HeavyLinesResult): string {
  const b = r.bystander!;
  return `bystander ${b.replies} replies (${b.unanswered} unanswered), p50 ${
    ms(b.p50Ms)
  } ms, p99 ${ms(b.p99Ms)} ms, max ${
    ms(b.maxMs)
  } ms, ${b.overTarget} over ${BYSTANDER_TARGET_MS} ms, at most ${b.heavyLinesPerWaitMax} heavy lines per wait; heavy ${
    Math.round(r.heavyLinesPerS)
  } lines/s, ${Math.round(r.heavyMBps)} MB/s; server CPU ${
    Math.round(r.serverCpu * 100)
  }%, other ${Math.round(r.otherCpu * 100)}%, load ${r.loadAverage.toFixed(2)}`;
}

/** The errors and mismatches that make the run a failure. */
export function heavyLinesFailures(results: HeavyLinesResult[]): string[] {
  return results.flatMap(outcomeFailures);
}

/** The table and lineserver's verdicts, for the printed report. */
export function heavyLinesText(results: HeavyLinesResult[]): string {
  if (results.length === 0) return "";
  const header = [
    "scenario",
    "server",
    "line B",
    "replies",
    "unanswered",
    "p50 ms",
    "p99 ms",
    "max ms",
    `>${BYSTANDER_TARGET_MS}ms`,
    "timer lag",
    "heavy/wait",
    "heavy lines/s",
    "heavy MB/s",
    "srv CPU",
    "client CPU",
    "other",
    "load",
  ];
  const rows = results.map((r) => {
    const b = r.bystander;
    const state = r.skipped ? "skipped" : r.failed ? "FAILED" : "-";
    return [
      r.id,
      r.label,
      String(r.lineBytes),
      b ? String(b.replies) : state,
      b ? String(b.unanswered) : "-",
      ms(b?.p50Ms ?? NaN),
      ms(b?.p99Ms ?? NaN),
      ms(b?.maxMs ?? NaN),
      b ? String(b.overTarget) : "-",
      ms(b?.timerLagMaxMs ?? NaN),
      b ? String(b.heavyLinesPerWaitMax) : "-",
      b ? String(Math.round(r.heavyLinesPerS)) : "-",
      b ? String(Math.round(r.heavyMBps)) : "-",
      b ? `${Math.round(r.serverCpu * 100)}%` : "-",
      b ? `${Math.round(r.clientCpu * 100)}%` : "-",
      b ? `${Math.round(r.otherCpu * 100)}%` : "-",
      Number.isFinite(r.loadAverage) ? r.loadAverage.toFixed(2) : "-",
    ];
  });
  const out = [
    `heavy lines: one client keeps ${HEAVY_IN_FLIGHT} lines in flight (stream: ${STREAMERS} clients stream without a newline) beside a bystander sending one line every ${BYSTANDER_INTERVAL_MS} ms (bystander reply times):`,
    table(header, rows),
  ];
  for (const r of results) {
    for (const m of r.mismatchSamples) out.push(`${r.id} mismatch: ${m}`);
    for (const e of r.errorSamples) out.push(`${r.id} error: ${e}`);
  }
  for (const r of results) {
    if (!r.server.startsWith("calc") || !r.bystander) continue;
    const met = r.bystander.maxMs <= BYSTANDER_TARGET_MS;
    out.push(
      `lineserver ${r.load}: bystander max ${
        ms(r.bystander.maxMs)
      } ms [target <= ${BYSTANDER_TARGET_MS}: ${met ? "met" : "MISSED"}]`,
    );
  }
  return out.join("\n");
}

if (import.meta.main) {
  const value = (name: string) => {
    const at = Deno.args.indexOf(name);
    return at >= 0 ? Deno.args[at + 1] : undefined;
  };
  const settings: Settings = {
    warmupS: Number(value("--warmup") ?? 1),
    durationS: Number(value("--duration") ?? 6),
    fairWarmupS: 0,
    fairDurationS: 0,
    clientWorkers: 1,
    idleConnections: 0,
    calc: {
      server: value("--server") ?? "server.ts",
      denoFlags: value("--deno-flags")?.split(" ").filter((f) => f) ?? [],
    },
  };
  const ids = value("--rows")?.split(",");
  const rows = HEAVY_ROWS.filter((r) => !ids || ids.includes(r.id));
  await readClockTicks();
  await placeProcesses(await nproc());
  const results: HeavyLinesResult[] = [];
  for (let i = 0; i < Number(value("--repeat") ?? 1); i++) {
    for (const row of rows) results.push(await runHeavyRow(row, settings));
  }
  await cleanUp();
  console.log(heavyLinesText(results));
  Deno.exit(heavyLinesFailures(results).length === 0 ? 0 : 1);
}

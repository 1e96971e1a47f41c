/**
 * The results as one JSON document (printed last and kept in
 * bench/results.json): each scenario's numbers plus what they mean together:
 * calculator against echo, `--workers 2` against 1, the fairness target, and
 * every failure that makes the exit code 1.
 *
 * @module
 */
import type { IdleResult } from "./idle_scenario.ts";
import type { LoadResult } from "./load_scenarios.ts";
import { placement, SERVER_CPU } from "./machine.ts";
import type { Options } from "./options.ts";
import { cpuModel, fileLimit } from "./proc.ts";
import type { Exchange } from "./traffic.ts";

/** What the scenarios measured, in the order they ran. */
export interface Measured {
  loadResults: LoadResult[];
  workerResults: LoadResult[];
  idle: IdleResult | undefined;
}

/** The facts about the run that the JSON's `meta` records. */
export interface RunFacts {
  options: Options;
  processors: number;
  openFileLimitBefore: { soft: number; hard: number };
  /** The calculator traffic pool, described in `meta.traffic`. */
  calc: Exchange[];
  /** `performance.now()` when the run began. */
  started: number;
}

export type Summary = Awaited<ReturnType<typeof summarize>>;

/** Rounds for the JSON; a non-finite number becomes null (JSON has no NaN). */
export const round = (n: number, digits = 3) =>
  Number.isFinite(n) ? Number(n.toFixed(digits)) : null;

/** Which side ran out of CPU: a core at 95 % or more (softirq included). */
export function boundBy(r: LoadResult): string {
  if (!placement.pinned || r.serverCpus !== SERVER_CPU) return "-";
  const server = r.coreBusy[0] >= 0.95;
  const generator = r.coreBusy[1] >= 0.95;
  return server && generator
    ? "both"
    : server
    ? "server"
    : generator
    ? "client"
    : "-";
}

function ratio(
  results: LoadResult[],
  numerator: string,
  denominator: string,
  key: "linesPerS" | "linesPerServerCpuS" = "linesPerS",
): number {
  const top = results.find((r) => r.id === numerator);
  const bottom = results.find((r) => r.id === denominator);
  if (!top || !bottom || top.skipped || top.failed || bottom.failed) return NaN;
  return top[key] / bottom[key];
}

/** Everything that makes the run a failure; a skipped `--workers` row is not one. */
function failuresOf(all: LoadResult[], idle: IdleResult | undefined) {
  const failures: string[] = [];
  for (const r of all) {
    if (r.failed) failures.push(`${r.id}: ${r.failed}`);
    if (r.errors) failures.push(`${r.id}: ${r.errors} errors`);
    if (r.mismatches) failures.push(`${r.id}: ${r.mismatches} mismatches`);
    if (!r.skipped && !r.failed && r.connected < r.connections) {
      failures.push(`${r.id}: only ${r.connected}/${r.connections} connected`);
    }
  }
  if (idle?.failed) failures.push(`d-calc: ${idle.failed}`);
  if (idle?.errors) failures.push(`d-calc: ${idle.errors} errors`);
  if (idle?.mismatches) failures.push(`d-calc: ${idle.mismatches} mismatches`);
  if (idle && !idle.failed && idle.connected < idle.connections) {
    failures.push(
      `d-calc: only ${idle.connected}/${idle.connections} connected`,
    );
  }
  return failures;
}

/** The JSON document of the run; `meta.totalS` counts up to this moment. */
export async function summarize(measured: Measured, facts: RunFacts) {
  const { loadResults, workerResults, idle } = measured;
  const { options, calc } = facts;
  const all = [...loadResults, ...workerResults];
  const meanBytes = (lines: string[]) =>
    lines.reduce((sum, l) => sum + l.length, 0) / lines.length;

  const ratios = {
    aCalcOverEcho: round(ratio(loadResults, "a-calc", "a-echo")),
    bCalcOverEcho: round(ratio(loadResults, "b-calc", "b-echo")),
    bTarget: 0.8,
    /** The same per second of server CPU (fairer when echo is client-bound). */
    aPerServerCpu: round(
      ratio(loadResults, "a-calc", "a-echo", "linesPerServerCpuS"),
    ),
    bPerServerCpu: round(
      ratio(loadResults, "b-calc", "b-echo", "linesPerServerCpuS"),
    ),
    echoClientBound: loadResults.some((r) =>
      r.target === "echo" && r.scenario !== "c" && boundBy(r) === "client"
    ),
  };
  const speedUp = {
    a: round(ratio(workerResults, "wa-calc-w2", "wa-calc-w1")),
    b: round(ratio(workerResults, "wb-calc-w2", "wb-calc-w1")),
    skipped: workerResults.find((r) => r.skipped)?.skipped ?? null,
  };
  const cResult = loadResults.find((r) => r.id === "c-calc");
  const cEcho = loadResults.find((r) => r.id === "c-echo");
  const failures = failuresOf(all, idle);

  const json = {
    meta: {
      date: new Date().toISOString(),
      nproc: facts.processors,
      cpuModel: await cpuModel(),
      deno: Deno.version.deno,
      placement: placement.note,
      pinned: placement.pinned,
      clientWorkers: options.clientWorkers,
      warmupS: options.warmupS,
      durationS: options.durationS,
      openFileLimit: {
        before: facts.openFileLimitBefore,
        after: await fileLimit(Deno.pid),
      },
      traffic:
        `${calc.length} sum-mode lines, \\r\\n-terminated, mean request ${
          meanBytes(calc.map((e) => e.request)).toFixed(1)
        } B; calc reply mean ${
          meanBytes(calc.map((e) => e.reply)).toFixed(1)
        } B; echo reply = request bytes`,
      cpuShare: "CPU seconds / wall seconds in the window (1.0 = one core)",
      totalS: 0,
    },
    scenarios: all,
    idle: idle ?? null,
    ratios,
    workersSpeedUp: speedUp,
    fairness: cResult
      ? {
        maxMs: round(cResult.maxMs),
        over100Ms: cResult.slowOver100Ms,
        met: cResult.slowOver100Ms === 0 && !cResult.failed,
        rawEcho: cEcho
          ? { maxMs: round(cEcho.maxMs), over100Ms: cEcho.slowOver100Ms }
          : null,
      }
      : null,
    failures,
    ok: failures.length === 0,
  };
  json.meta.totalS = round((performance.now() - facts.started) / 1000, 1)!;
  return json;
}

/**
 * The report: the results as one JSON document (printed last and kept in
 * bench/results.json) and, before it, the tables a person reads. Besides each
 * scenario's numbers it says what they mean together: whether the generator
 * passed its calibration, lineserver against the Node.js peer and the raw
 * echoes, its targets, and every failure that makes the exit code 1.
 *
 * @module
 */
import { placement, SERVER_CPU } from "./machine.ts";
import {
  type MemoryResult,
  memoryTargets,
  memoryText,
} from "./memory_scenario.ts";
import {
  type IdleResult,
  type LoadResult,
  outcomeFailures,
} from "./scenarios.ts";
import {
  heavyLinesFailures,
  type HeavyLinesResult,
  heavyLinesText,
} from "./heavy_lines.ts";
import { type ServerKind, SERVERS } from "./servers.ts";
import { table } from "./table.ts";
import type { Exchange } from "./traffic.ts";
import {
  check,
  IDLE_TARGET_CONNECTIONS,
  round,
  tally,
  type TargetChecks,
  TARGETS,
  verdict,
} from "./targets.ts";

export { IDLE_TARGET_CONNECTIONS };

const RESULTS_FILE = new URL("./results.json", import.meta.url).pathname;

/** Row id of the calibration: the fair generator against the Node.js peer. */
export const CALIBRATION_ID = "c-node-peer";

/** What the calibration must show for the fairness figures to be trusted. */
const CALIBRATION = { maxOverMedian: 5, leastServedOverMedian: 0.9 };

/** Id of a first calibration attempt that missed and was repeated. */
export const CALIBRATION_FIRST_TRY_ID = `${CALIBRATION_ID}-first-try`;

/** Whether a calibration row shows a fair generator (false if it did not run). */
export function calibrationMet(r: LoadResult): boolean {
  return !r.skipped && !r.failed &&
    r.maxOverMedian <= CALIBRATION.maxOverMedian &&
    r.leastServedOverMedian >= CALIBRATION.leastServedOverMedian;
}

/** What the scenarios measured, in the order they ran. */
export interface Measured {
  loads: LoadResult[];
  idle: IdleResult[];
  heavy: HeavyLinesResult[];
  memory: MemoryResult[];
}

/** The facts about the run that the JSON's `meta` records. */
export interface RunFacts {
  processors: number;
  cpuModel: string;
  clientWorkers: number;
  windows: string;
  openFileLimit: {
    before: { soft: number; hard: number };
    after: { soft: number; hard: number };
  };
  /** The calculator traffic pool, described in `meta.traffic`. */
  calc: Exchange[];
  /** `performance.now()` when the run began. */
  started: number;
}

export type Summary = ReturnType<typeof summarize>;

const usable = (r: LoadResult | undefined): r is LoadResult =>
  r !== undefined && !r.skipped && !r.failed;

/** Which side ran out of CPU: a core at 95 % or more (softirq included). */
function boundBy(r: LoadResult): string {
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
  return usable(top) && usable(bottom) ? top[key] / bottom[key] : NaN;
}

/** Everything that makes the run a failure; a skipped row is not one. */
function failuresOf(
  loads: LoadResult[],
  idle: IdleResult[],
  memory: MemoryResult[],
): string[] {
  const failures = memory.flatMap(outcomeFailures);
  for (const r of [...loads, ...idle]) {
    failures.push(...outcomeFailures(r));
    if (!r.skipped && !r.failed && r.connected < r.connections) {
      failures.push(`${r.id}: only ${r.connected}/${r.connections} connected`);
    }
  }
  return failures;
}

/** The JSON document of the run; `meta.totalS` counts up to this moment. */
export function summarize(measured: Measured, facts: RunFacts) {
  const { loads, idle, heavy, memory } = measured;
  const byId = (id: string) => loads.find((r) => r.id === id);
  const meanBytes = (lines: string[]) =>
    lines.reduce((sum, l) => sum + l.length, 0) / lines.length;

  const cal = byId(CALIBRATION_ID);
  const cal5000 = byId("e-node-peer");
  const firstTry = byId(CALIBRATION_FIRST_TRY_ID);
  const calibration = usable(cal)
    ? {
      id: CALIBRATION_ID,
      connections: cal.connections,
      maxOverMedian: check(
        cal.maxOverMedian,
        CALIBRATION.maxOverMedian,
        false,
      ),
      leastServedOverMedian: check(
        cal.leastServedOverMedian,
        CALIBRATION.leastServedOverMedian,
        true,
      ),
      met: calibrationMet(cal),
      /** A first attempt that missed, was repeated, and is in the table too. */
      firstTry: usable(firstTry)
        ? {
          maxOverMedian: round(firstTry.maxOverMedian, 2),
          leastServedOverMedian: round(firstTry.leastServedOverMedian, 3),
          otherCpu: round(firstTry.otherCpu, 2),
        }
        : null,
      /** The Node peer at 5000 connections (scenario e), for information. */
      at5000: usable(cal5000)
        ? {
          maxOverMedian: round(cal5000.maxOverMedian, 2),
          leastServedOverMedian: round(cal5000.leastServedOverMedian, 3),
        }
        : null,
      skipped: null,
    }
    : {
      id: CALIBRATION_ID,
      met: null,
      skipped: byId(CALIBRATION_ID)?.skipped ?? byId(CALIBRATION_ID)?.failed ??
        "not run",
    };

  // Per server: the fairness figures at each load, peak memory, idle memory.
  const kinds = Object.keys(SERVERS) as ServerKind[];
  const fairnessOf = (r: LoadResult | undefined) =>
    usable(r)
      ? {
        linesPerS: round(r.linesPerS, 0),
        p50Ms: round(r.p50Ms),
        p99Ms: round(r.p99Ms),
        maxMs: round(r.maxMs),
        maxOverMedian: round(r.maxOverMedian, 2),
        leastServedOverMedian: round(r.leastServedOverMedian, 3),
        peakRssMiB: round(r.peakRssKiB / 1024, 1),
      }
      : null;
  const servers = kinds.map((kind) => {
    const idleRow = idle.find((r) => r.server === kind);
    return {
      server: kind,
      label: SERVERS[kind].label,
      fairness1000: fairnessOf(byId(`c-${kind}`)),
      fairness5000: fairnessOf(byId(`e-${kind}`)),
      idleKiBPerConnection: idleRow && !idleRow.failed && !idleRow.skipped
        ? round(idleRow.kibPerConnection, 2)
        : null,
      idleConnections: idleRow?.connections ?? null,
    };
  }).filter((s) =>
    s.fairness1000 || s.fairness5000 || s.idleKiBPerConnection !== null
  );

  const c = byId("c-calc");
  const e = byId("e-calc");
  const idleCalc = idle.find((r) => r.server === "calc");
  const targets: TargetChecks = {
    fairness1000: usable(c)
      ? {
        maxOverMedian: check(c.maxOverMedian, TARGETS.maxOverMedian, false),
        leastServedOverMedian: check(
          c.leastServedOverMedian,
          TARGETS.leastServedOverMedian,
          true,
        ),
      }
      : null,
    fairness5000: usable(e)
      ? {
        maxOverMedian: check(e.maxOverMedian, TARGETS.maxOverMedian, false),
        leastServedOverMedian: check(
          e.leastServedOverMedian,
          TARGETS.leastServedOverMedian,
          true,
        ),
      }
      : null,
    /** lineserver lines/s over the Node.js peer's. */
    overNodePeer: {
      requestResponse50: check(
        ratio(loads, "a-calc", "a-node-peer"),
        TARGETS.requestResponse,
        true,
      ),
      pipelined50: check(
        ratio(loads, "b-calc", "b-node-peer"),
        TARGETS.pipelined,
        true,
      ),
      closedLoop1000: check(
        ratio(loads, "c-calc", "c-node-peer"),
        TARGETS.thousandConnections,
        true,
      ),
    },
    /**
     * The same per second of server CPU: what each would do with a whole
     * core, telling when a row was limited by the generator (no target).
     */
    overNodePeerPerServerCpu: {
      requestResponse50: round(
        ratio(loads, "a-calc", "a-node-peer", "linesPerServerCpuS"),
      ),
      pipelined50: round(
        ratio(loads, "b-calc", "b-node-peer", "linesPerServerCpuS"),
      ),
      closedLoop1000: round(
        ratio(loads, "c-calc", "c-node-peer", "linesPerServerCpuS"),
      ),
    },
    idleKiBPerConnection: idleCalc && !idleCalc.failed
      ? {
        connections: idleCalc.connections,
        ...check(
          idleCalc.kibPerConnection,
          TARGETS.idleKiBPerConnection,
          false,
        ),
        ...(idleCalc.connections < IDLE_TARGET_CONNECTIONS
          ? { met: null }
          : {}),
      }
      : null,
    peakRssMiB1000: check(
      usable(c) ? c.peakRssKiB / 1024 : NaN,
      TARGETS.peakRssMiB,
      false,
    ),
    /** Scenario m: growth under streamers, and the return to rest. */
    memory: memoryTargets(memory),
  };

  const failures = [
    ...failuresOf(loads, idle, memory),
    ...heavyLinesFailures(heavy),
  ];
  if (calibration.met === false) {
    const other = usable(cal) && cal.otherCpu > 0.1
      ? `; other processes used ${
        pct(cal.otherCpu)
      } of a CPU during it: rerun on a quiet machine`
      : "";
    failures.push(
      `calibration: the generator was not fair against the Node peer (max/median <= ${CALIBRATION.maxOverMedian} and least-served/median >= ${CALIBRATION.leastServedOverMedian} needed): the fairness figures are not trustworthy${other}`,
    );
  }

  const json = {
    meta: {
      date: new Date().toISOString(),
      nproc: facts.processors,
      cpuModel: facts.cpuModel,
      deno: Deno.version.deno,
      placement: placement.note,
      pinned: placement.pinned,
      generator:
        `node:net in ${facts.clientWorkers} Deno Worker(s) of the bench process`,
      windows: facts.windows,
      openFileLimit: facts.openFileLimit,
      traffic:
        `speed rows: ${facts.calc.length} sum-mode lines, \\r\\n-terminated, mean request ${
          meanBytes(facts.calc.map((x) => x.request)).toFixed(1)
        } B, calc reply mean ${
          meanBytes(facts.calc.map((x) => x.reply)).toFixed(1)
        } B; fairness rows: "1,2,3,4,5,6,7,8\\n" on every connection; echo reply = request bytes`,
      cpuShare: "CPU seconds / wall seconds in the window (1.0 = one core)",
      totalS: 0,
    },
    calibration,
    servers,
    targets,
    /** lineserver over the raw Deno.listen echo, per wall second and per server CPU second. */
    overRawEcho: {
      requestResponse50: round(ratio(loads, "a-calc", "a-echo-deno")),
      pipelined50: round(ratio(loads, "b-calc", "b-echo-deno")),
      requestResponse50PerServerCpu: round(
        ratio(loads, "a-calc", "a-echo-deno", "linesPerServerCpuS"),
      ),
      pipelined50PerServerCpu: round(
        ratio(loads, "b-calc", "b-echo-deno", "linesPerServerCpuS"),
      ),
    },
    workersSpeedUp: {
      requestResponse: round(ratio(loads, "wa-calc-w2", "wa-calc-w1")),
      pipelined: round(ratio(loads, "wb-calc-w2", "wb-calc-w1")),
      skipped: loads.find((r) => r.scenario.startsWith("w") && r.skipped)
        ?.skipped ?? null,
    },
    /** Every target by name: met, missed (with value and limit), not measured. */
    targetsMet: tally(targets),
    scenarios: loads,
    idle,
    heavyLines: heavy,
    memory,
    failures,
    ok: failures.length === 0,
  };
  json.meta.totalS = round((performance.now() - facts.started) / 1000, 1)!;
  return json;
}

// ---------------------------------------------------------------------------
// Text

export function pct(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : "-";
}

function ms(value: number | null): string {
  if (value === null || !Number.isFinite(value)) return "-";
  return value >= 100 ? value.toFixed(0) : value.toFixed(2);
}

function fixed(value: number | null, digits: number): string {
  return value === null || !Number.isFinite(value)
    ? "-"
    : value.toFixed(digits);
}

/** One row per load scenario, in the order they ran. */
function scenarioTable(loads: LoadResult[]): string {
  const header = [
    "scenario",
    "server",
    "conns",
    "depth",
    "lines/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "max/p50",
    "least/med",
    "peak MiB",
    "srv CPU",
    "gen CPU",
    "gen lag",
    "core0",
    "core1",
    "other",
    "tcp rtx",
    "drops",
    "bound",
    "errors",
    "mismatch",
  ];
  const rows = loads.map((r) => [
    r.id,
    `${r.label}${r.serverWorkers ? ` --workers ${r.serverWorkers}` : ""}`,
    String(r.connections),
    String(r.depth),
    r.skipped
      ? "skipped"
      : r.failed
      ? "FAILED"
      : String(Math.round(r.linesPerS)),
    ms(r.p50Ms),
    ms(r.p99Ms),
    ms(r.maxMs),
    fixed(r.maxOverMedian, 1),
    fixed(r.leastServedOverMedian, 2),
    fixed(r.peakRssKiB / 1024, 0),
    pct(r.serverCpu),
    pct(r.generatorCpu),
    ms(r.generatorLoopLagMaxMs),
    pct(r.coreBusy[0]),
    pct(r.coreBusy[1]),
    pct(r.otherCpu),
    r.tcp ? String(r.tcp.RetransSegs + r.tcp.ListenOverflows) : "-",
    r.tcp ? String(r.tcp.BacklogDrops) : "-",
    boundBy(r),
    String(r.errors),
    String(r.mismatches),
  ]);
  return table(header, rows);
}

/** Fairness and memory, one row per server. */
function serverTable(summary: Summary): string {
  const header = [
    "server",
    "conns",
    "lines/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "max/median",
    "least-served/median",
    "peak RSS MiB",
    "idle KiB/conn",
  ];
  const rows: string[][] = [];
  for (const s of summary.servers) {
    const loads = [
      [1000, s.fairness1000],
      [5000, s.fairness5000],
    ] as const;
    let first = true;
    for (const [conns, f] of loads) {
      if (!f && !(first && s.idleKiBPerConnection !== null)) continue;
      rows.push([
        first ? s.label : "",
        f ? String(conns) : "-",
        f ? String(f.linesPerS) : "-",
        ms(f?.p50Ms ?? null),
        ms(f?.p99Ms ?? null),
        ms(f?.maxMs ?? null),
        fixed(f?.maxOverMedian ?? null, 1),
        fixed(f?.leastServedOverMedian ?? null, 2),
        fixed(f?.peakRssMiB ?? null, 0),
        first ? fixed(s.idleKiBPerConnection, 1) : "",
      ]);
      first = false;
    }
  }
  return table(header, rows, 1);
}

/**
 * The last line: what was met and what was missed (targets are reported,
 * not failures), then whether anything failed, which is what the exit code
 * says.
 */
function resultLine(summary: Summary): string {
  const { met, missed, notMeasured } = summary.targetsMet;
  const total = met.length + missed.length + notMeasured.length;
  const parts = [`result: ${met.length} of ${total} targets met`];
  if (missed.length > 0) {
    parts.push(`${missed.length} missed: ${missed.join(", ")}`);
  }
  if (notMeasured.length > 0) {
    parts.push(`${notMeasured.length} not measured or not judged`);
  }
  const { failures } = summary;
  parts.push(
    failures.length === 0
      ? "no failures (exit 0)"
      : `FAILED (exit 1):\n  ${failures.join("\n  ")}`,
  );
  return parts.join("; ");
}

function calibrationLine(summary: Summary): string {
  const c = summary.calibration;
  if (c.met === null || !("maxOverMedian" in c)) {
    return `calibration: SKIPPED (${c.skipped}): the fairness figures are uncalibrated`;
  }
  return `calibration (generator vs Node peer, ${c.connections} closed-loop conns): max/median ${c.maxOverMedian.value} (<= ${c.maxOverMedian.limit}), least-served/median ${c.leastServedOverMedian.value} (>= ${c.leastServedOverMedian.limit}): ${
    c.met
      ? "OK, the generator is fair"
      : "FAILED, the generator measures itself"
  }${
    c.firstTry
      ? ` (second attempt: the first measured ${c.firstTry.maxOverMedian} and ${c.firstTry.leastServedOverMedian} while other processes used ${
        pct(c.firstTry.otherCpu ?? NaN)
      } of a CPU)`
      : ""
  }${
    c.at5000
      ? `; at 5000 conns ${c.at5000.maxOverMedian} and ${c.at5000.leastServedOverMedian}`
      : ""
  }`;
}

/** The human-readable report: calibration, the tables, then the verdicts. */
function text(summary: Summary): string {
  const { targets, meta } = summary;
  const loads = summary.scenarios;
  const out: string[] = [];
  out.push(
    `lineserver bench — nproc ${meta.nproc}, ${meta.placement}; generator: ${meta.generator}; ${meta.windows}`,
  );
  out.push(meta.traffic);
  out.push("");
  out.push(calibrationLine(summary));
  out.push("");
  out.push(scenarioTable(loads));
  out.push("");
  out.push(
    "fairness (closed loop, every reply checked) and memory, per server:",
  );
  out.push(serverTable(summary));
  out.push("");
  const f = (t: typeof targets.fairness1000, conns: number) =>
    `lineserver fairness at ${conns} conns: max/median ${
      verdict(t?.maxOverMedian)
    }, least-served/median ${verdict(t?.leastServedOverMedian)}`;
  out.push(f(targets.fairness1000, 1000));
  out.push(f(targets.fairness5000, 5000));
  const o = targets.overNodePeer;
  const perCpu = targets.overNodePeerPerServerCpu;
  out.push(
    `lineserver / Node peer lines/s: 50 conns request/response ${
      verdict(o.requestResponse50)
    }; pipelined x32 ${verdict(o.pipelined50)}; 1000 conns ${
      verdict(o.closedLoop1000)
    }`,
  );
  out.push(
    `lineserver / Node peer per second of server CPU: request/response ${
      perCpu.requestResponse50 ?? "-"
    }, pipelined x32 ${perCpu.pipelined50 ?? "-"}, 1000 conns ${
      perCpu.closedLoop1000 ?? "-"
    }`,
  );
  const idle = targets.idleKiBPerConnection;
  const fewer = idle && idle.connections < IDLE_TARGET_CONNECTIONS
    ? ` (fewer than the ${IDLE_TARGET_CONNECTIONS} the target and docs/performance.md are for: the fixed memory is spread over fewer connections, so this is larger and not comparable)`
    : "";
  out.push(
    `lineserver memory: idle ${verdict(idle)} KiB/conn${
      idle ? ` at ${idle.connections} conns${fewer}` : ""
    }; peak RSS under 1000 conns ${verdict(targets.peakRssMiB1000)} MiB`,
  );
  const echo = summary.overRawEcho;
  if (echo.requestResponse50 !== null || echo.pipelined50 !== null) {
    out.push(
      `lineserver / raw echo (Deno.listen) lines/s: request/response ${
        echo.requestResponse50 ?? "-"
      }, pipelined ${echo.pipelined50 ?? "-"}; per second of server CPU: ${
        echo.requestResponse50PerServerCpu ?? "-"
      }, ${echo.pipelined50PerServerCpu ?? "-"}`,
    );
  }
  const w = summary.workersSpeedUp;
  if (loads.some((r) => r.scenario.startsWith("w"))) {
    out.push(
      w.skipped
        ? `--workers 2: skipped: ${w.skipped}`
        : `--workers 2 over --workers 1 (both on CPUs 0-1, generator on CPU 1): request/response ${
          w.requestResponse ?? "-"
        }, pipelined ${w.pipelined ?? "-"}`,
    );
  }
  if (summary.heavyLines.length > 0) {
    out.push("", heavyLinesText(summary.heavyLines), "");
  }
  for (const r of summary.idle) {
    if (r.failed || r.skipped) {
      out.push(
        `${r.id}: ${r.skipped ? "skipped" : "FAILED"}: ${
          r.skipped ?? r.failed
        }`,
      );
    } else {
      out.push(
        `${r.id}: ${r.connected} idle connections; VmRSS ${r.rssBeforeKiB} KiB before, ${r.rssHeldKiB} KiB held, ${r.rssAfterCloseKiB} KiB after close => ${
          r.kibPerConnection.toFixed(1)
        } KiB/conn (connect ${r.connectS.toFixed(1)} s, server CPU while held ${
          pct(r.serverCpuWhileHeld)
        })`,
      );
    }
  }
  if (summary.memory.length > 0) out.push(memoryText(summary.memory));
  // Retransmitted segments alone can be probes of a full receive window;
  // a retransmission timeout, a full listen queue or a full input backlog
  // means a packet was lost and waited.
  const dropped = loads.filter((r) =>
    r.tcp &&
    r.tcp.TCPTimeouts + r.tcp.ListenOverflows + r.tcp.BacklogDrops > 0
  );
  if (dropped.length > 0) {
    out.push(
      `NOTE: lost loopback packets during ${
        dropped.map((r) =>
          `${r.id} (${r.tcp!.TCPTimeouts} retransmission timeouts, ${
            r.tcp!.ListenOverflows
          } listen-queue overflows, ${r.tcp!.BacklogDrops} backlog drops)`
        ).join(", ")
      }: each lost packet waited 200 ms or more for its retransmission, and those rows' max and least-served figures include that wait`,
    );
  }
  const disturbed = loads.filter((r) => r.otherCpu > 0.1);
  if (disturbed.length > 0) {
    out.push(
      `WARNING: other processes used CPU during ${
        disturbed.map((r) => `${r.id} (${pct(r.otherCpu)})`).join(", ")
      }: those rows are disturbed; rerun on a quiet machine`,
    );
  }
  for (const r of [...loads, ...summary.idle, ...summary.memory]) {
    for (const m of r.mismatchSamples) out.push(`${r.id} mismatch: ${m}`);
    for (const e of r.errorSamples) out.push(`${r.id} error: ${e}`);
  }
  out.push(resultLine(summary));
  out.push(`total ${meta.totalS} s`);
  out.push("");
  return out.join("\n");
}

/**
 * Prints the report (unless `jsonOnly`) and the JSON to stdout, and keeps the
 * JSON in bench/results.json. Returns a problem writing the file, if any.
 */
export function printReport(
  summary: Summary,
  jsonOnly: boolean,
): string | undefined {
  if (!jsonOnly) console.log(text(summary));
  const json = JSON.stringify(summary, null, 2);
  console.log(json);
  try {
    Deno.writeTextFileSync(RESULTS_FILE, json + "\n");
  } catch (error) {
    return `${RESULTS_FILE} not written (${
      (error as Error).name
    }): run with --allow-write=bench/results.json`;
  }
  return undefined;
}

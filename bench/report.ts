/**
 * What the bench prints. Progress goes to stderr, so that stdout holds only
 * the table and the JSON (or only the JSON with `--json-only`) and can be
 * piped; the JSON is also written to bench/results.json.
 *
 * @module
 */
import { placement } from "./machine.ts";
import type { Options } from "./options.ts";
import { boundBy, type Summary } from "./summary.ts";

const RESULTS_FILE = new URL("./results.json", import.meta.url).pathname;

/** A progress line on stderr, so stdout stays machine-readable. */
export function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

export function pct(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : "-";
}

function ms(value: number): string {
  if (!Number.isFinite(value)) return "-";
  return value >= 100 ? value.toFixed(0) : value.toFixed(2);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => r[i].length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) => i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))
      .join("  ");
  return [
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ]
    .join("\n");
}

/** One row per load scenario, in the order they ran. */
function scenarioTable(summary: Summary): string {
  const header = [
    "scenario",
    "server",
    "conns",
    "depth",
    "lines/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    ">100ms",
    "srv CPU",
    "gen CPU",
    "gen lag",
    "core0",
    "core1",
    "other",
    "tcp rtx",
    "bound",
    "errors",
    "mismatch",
  ];
  const rows = summary.scenarios.map((r) => [
    r.id,
    r.target === "echo"
      ? "raw echo"
      : `calc${r.serverWorkers ? ` --workers ${r.serverWorkers}` : ""}`,
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
    String(r.slowOver100Ms),
    pct(r.serverCpu),
    pct(r.generatorCpu),
    ms(r.generatorLoopLagMaxMs),
    pct(r.coreBusy[0]),
    pct(r.coreBusy[1]),
    pct(r.otherCpu),
    r.tcp ? String(r.tcp.RetransSegs + r.tcp.ListenOverflows) : "-",
    boundBy(r),
    String(r.errors),
    String(r.mismatches),
  ]);
  return table(header, rows);
}

/** The human-readable report: the table, then one line per conclusion. */
function text(summary: Summary, options: Options): string {
  const { ratios, idle, failures } = summary;
  const speedUp = summary.workersSpeedUp;
  const all = summary.scenarios;
  // The unrounded results, so the text shows the same digits as the table.
  const cResult = all.find((r) => r.id === "c-calc");
  const cEcho = all.find((r) => r.id === "c-echo");
  const out: string[] = [];
  out.push(
    `lineserver bench — nproc ${summary.meta.nproc}, ${placement.note}, ${options.clientWorkers} client workers, ${options.warmupS}s warm-up + ${options.durationS}s measured per scenario`,
  );
  out.push(summary.meta.traffic);
  out.push("");
  out.push(scenarioTable(summary));
  out.push("");
  out.push(
    `calc/echo throughput: (a) ${ratios.aCalcOverEcho ?? "-"}   (b) ${
      ratios.bCalcOverEcho ?? "-"
    }  [target (b) >= 0.8: ${
      ratios.bCalcOverEcho === null
        ? "-"
        : ratios.bCalcOverEcho >= 0.8
        ? "met"
        : "MISSED"
    }]`,
  );
  out.push(
    `calc/echo per second of server CPU: (a) ${
      ratios.aPerServerCpu ?? "-"
    }   (b) ${ratios.bPerServerCpu ?? "-"}${
      ratios.echoClientBound
        ? "  [the echo reference was client-bound: the throughput ratio above is an upper bound]"
        : ""
    }`,
  );
  if (cResult) {
    out.push(
      `fairness (c): max ${
        ms(cResult.maxMs)
      } ms, ${cResult.slowOver100Ms} replies > 100 ms  [target none: ${
        summary.fairness?.met ? "met" : "MISSED"
      }]${
        cEcho
          ? `; raw echo under the same load: max ${
            ms(cEcho.maxMs)
          } ms, ${cEcho.slowOver100Ms} > 100 ms`
          : ""
      }`,
    );
  }
  if (idle) {
    out.push(
      idle.failed
        ? `idle (d): FAILED: ${idle.failed}`
        : `idle (d): ${idle.connected} connections; server VmRSS ${idle.rssBeforeKiB} KiB before, ${idle.rssHeldKiB} KiB held, ${idle.rssAfterCloseKiB} KiB after close => ${
          idle.kibPerConnection.toFixed(1)
        } KiB/connection (connect ${
          idle.connectS.toFixed(1)
        } s, server CPU while held ${pct(idle.serverCpuWhileHeld)})`,
    );
  }
  if (options.scenarios.has("w")) {
    out.push(
      speedUp.skipped
        ? `--workers 2: skipped: ${speedUp.skipped}`
        : `--workers 2 speed-up vs --workers 1 (both on CPUs 0-1, generator on CPU 1): (a) ${
          speedUp.a ?? "-"
        }  (b) ${speedUp.b ?? "-"}`,
    );
  }
  const disturbed = all.filter((r) => r.otherCpu > 0.1);
  if (disturbed.length > 0) {
    out.push(
      `WARNING: other processes used CPU during ${
        disturbed.map((r) => `${r.id} (${pct(r.otherCpu)})`).join(", ")
      }: those rows are disturbed; rerun on a quiet machine`,
    );
  }
  for (const r of all) {
    for (const m of r.mismatchSamples) out.push(`${r.id} mismatch: ${m}`);
    for (const e of r.errorSamples) out.push(`${r.id} error: ${e}`);
  }
  out.push(
    failures.length === 0
      ? "result: OK"
      : `result: FAILED\n  ${failures.join("\n  ")}`,
  );
  out.push(`total ${summary.meta.totalS} s`);
  out.push("");
  return out.join("\n");
}

/** Prints the report (unless `--json-only`) and the JSON, and keeps the JSON in bench/results.json. */
export function printReport(summary: Summary, options: Options): void {
  if (!options.jsonOnly) console.log(text(summary, options));
  const json = JSON.stringify(summary, null, 2);
  console.log(json);
  try {
    Deno.writeTextFileSync(RESULTS_FILE, json + "\n");
  } catch (error) {
    progress(
      `${RESULTS_FILE} not written (${
        (error as Error).name
      }): run with --allow-write=bench/results.json`,
    );
  }
}

/**
 * `deno task bench`: throughput, latency, CPU and memory of the calculator
 * server, next to a raw byte-echo server as the reference point.
 *
 * The orchestrator (this file and the modules it imports) starts each
 * server as a subprocess on port 0, pinned to CPU 0 with `taskset`, and pins
 * itself and its load-generator workers (`bench/load_worker.ts`, Deno Worker
 * threads) to CPU 1. Every scenario gets a fresh server, a warm-up, then a
 * fixed measuring window; every wait is bounded and every child is killed by
 * PID and reaped, even on failure or Ctrl-C.
 *
 * Scenarios (`--scenario a,b,c,d,w`, default all):
 *   a  50 connections, strict request/response (raw echo, then calculator)
 *   b  50 connections, 32 lines in flight per connection (echo, then calc)
 *   c  1000 connections, request/response (fairness: no reply after > 100 ms)
 *   d  server RSS per idle connection, 5000 connections held after the welcome
 *   w  a and b with `--workers 2` against `--workers 1`, both on CPUs 0-1
 *
 * Requests are `\r\n`-terminated sum-mode lines (bench/traffic.ts); the echo
 * server gets the same bytes and must return them. Every reply is checked
 * byte for byte; any mismatch or connection error makes the exit code 1.
 *
 * Options: --quick  --json-only  --scenario LIST  --duration S  --warmup S
 *          --client-workers N  --idle-connections N  --server FILE
 *          --deno-flags "FLAGS" (extra `deno run` flags for the calculator
 *          server, e.g. "--v8-flags=--prof,--logfile=/tmp/v8.log")
 *
 * Output: the table then the JSON on stdout (only the JSON with --json-only),
 * progress on stderr, the JSON also in bench/results.json.
 *
 * Permissions: --allow-net=127.0.0.1, --allow-run (deno, taskset, prlimit,
 * grep, sh, getconf, nproc), --allow-read, --allow-env and
 * --allow-write=bench/results.json. Deno asks for --allow-all before it lets a
 * program read /proc, so /proc is read by `grep` in a subprocess
 * (bench/proc.ts) at the edges of each measuring window.
 *
 * @module
 */
import { type IdleResult, runIdle } from "./idle_scenario.ts";
import { cleanUp } from "./live.ts";
import {
  type LoadResult,
  type LoadScenario,
  runLoad,
} from "./load_scenarios.ts";
import {
  nproc,
  placement,
  placeProcesses,
  readClockTicks,
  SERVER_CPU,
  SHARED_CPUS,
} from "./machine.ts";
import { type Options, parseOptions } from "./options.ts";
import { allowedCpus, fileLimit, raiseOwnFileLimit } from "./proc.ts";
import { printReport, progress } from "./report.ts";
import { summarize } from "./summary.ts";
import { calculatorPool, echoPool } from "./traffic.ts";

const PIPELINE_DEPTH = 32;

/**
 * A hard bound on the whole run: every load scenario's warm-up and window
 * plus a generous allowance for starting servers, connecting and draining.
 * The default plan needs about 80 s and gets 170 s (under 3 minutes).
 */
function budgetMs(options: Options): number {
  const loads = ["a", "b", "c", "w"].filter((s) => options.scenarios.has(s))
    .length * 2;
  const perLoad = options.warmupS + options.durationS + 8;
  const idle = options.scenarios.has("d") ? 30 : 0;
  return Math.max(60, loads * perLoad + idle + 20) * 1000;
}

async function main(options: Options): Promise<number> {
  const started = performance.now();
  const processors = await nproc();
  await readClockTicks();

  // One socket per client connection here, one per connection in the server
  // (which inherits this limit), plus some for Deno itself.
  const needFiles = options.scenarios.has("d")
    ? options.idleConnections + 256
    : options.scenarios.has("c")
    ? 1256
    : 512;
  const before = await fileLimit(Deno.pid);
  const fileLimitNow = await raiseOwnFileLimit(needFiles);
  if (fileLimitNow < needFiles) {
    progress(
      `open-file limit ${fileLimitNow} < ${needFiles} needed and the hard limit is lower: run as \`prlimit --nofile=${needFiles}:${needFiles} deno task bench\` (needs CAP_SYS_RESOURCE) or lower --idle-connections`,
    );
  }

  await placeProcesses(processors);
  progress(
    `nproc ${processors}; ${placement.note}; generator CPUs now ${await allowedCpus(
      Deno.pid,
    )}; ${options.clientWorkers} client workers; ${options.warmupS}s warm-up + ${options.durationS}s per scenario`,
  );

  const calc = calculatorPool();
  const echo = echoPool(calc);

  const plan: LoadScenario[] = [];
  const add = (s: Omit<LoadScenario, "id">) =>
    plan.push({
      ...s,
      id: `${s.scenario}-${s.target}${s.workers ? `-w${s.workers}` : ""}`,
    });
  for (
    const [scenario, depth, what] of [
      ["a", 1, "request/response"],
      ["b", PIPELINE_DEPTH, `pipelined ${PIPELINE_DEPTH} deep`],
    ] as const
  ) {
    if (!options.scenarios.has(scenario)) continue;
    for (const target of ["echo", "calc"] as const) {
      add({
        scenario,
        description: what,
        target,
        cpus: SERVER_CPU,
        connections: 50,
        depth,
      });
    }
  }
  if (options.scenarios.has("c")) {
    for (const target of ["echo", "calc"] as const) {
      add({
        scenario: "c",
        description: "1000 conns request/response",
        target,
        cpus: SERVER_CPU,
        connections: 1000,
        depth: 1,
      });
    }
  }
  const loadResults: LoadResult[] = [];
  for (const s of plan) {
    loadResults.push(
      await runLoad(s, s.target === "echo" ? echo : calc, options),
    );
  }

  let idle: IdleResult | undefined;
  if (options.scenarios.has("d")) {
    idle = await runIdle(
      calc,
      options,
      fileLimitNow < needFiles
        ? `open-file limit ${fileLimitNow} < ${needFiles} needed`
        : undefined,
    );
  }

  const workerResults: LoadResult[] = [];
  if (options.scenarios.has("w")) {
    for (
      const [scenario, depth, what] of [
        ["a", 1, "request/response"],
        ["b", PIPELINE_DEPTH, `pipelined ${PIPELINE_DEPTH} deep`],
      ] as const
    ) {
      for (const workers of [1, 2]) {
        const s: LoadScenario = {
          id: `w${scenario}-calc-w${workers}`,
          scenario: `w${scenario}`,
          description: `${what}, --workers ${workers}, server on CPUs 0-1`,
          target: "calc",
          workers,
          cpus: SHARED_CPUS,
          connections: 50,
          depth,
        };
        const r = await runLoad(s, calc, options);
        workerResults.push(r);
        if (r.skipped) break;
      }
    }
  }

  const summary = await summarize({ loadResults, workerResults, idle }, {
    options,
    processors,
    openFileLimitBefore: before,
    calc,
    started,
  });
  printReport(summary, options);
  return summary.ok ? 0 : 1;
}

if (import.meta.main) {
  const options = parseOptions(Deno.args);
  const budget = budgetMs(options);
  const watchdog = setTimeout(async () => {
    console.error(`[bench] over the ${budget / 1000} s budget: stopping`);
    await cleanUp();
    Deno.exit(1);
  }, budget);
  const interrupted = async () => {
    console.error("[bench] interrupted: stopping children");
    await cleanUp();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", interrupted);
  Deno.addSignalListener("SIGTERM", interrupted);
  let code = 1;
  try {
    code = await main(options);
  } catch (error) {
    console.error(`[bench] ${(error as Error).stack ?? error}`);
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
  Deno.exit(code);
}

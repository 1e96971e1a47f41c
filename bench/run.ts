/**
 * `deno task bench`: throughput, fairness, latency, CPU and memory of
 * lineserver, next to the Node.js peer (`node_peer.mjs`) and raw byte-echo
 * servers on `Deno.listen` and on `node:net` (`raw_echo_server.ts`).
 *
 * Each server runs as a subprocess started from the repository root on port
 * 0, pinned to CPU 0 with `taskset`; this process and its load-generator
 * Workers (`load_worker.ts`, on `node:net`) are pinned to CPU 1. Every row
 * gets a fresh server, a warm-up, then a fixed measuring window; every wait
 * is bounded, the whole run has a time budget, and every child is killed by
 * PID and reaped, even on failure or Ctrl-C.
 *
 * Every run starts with the calibration: the generator against the Node.js
 * peer at 1000 closed-loop connections must show max/median <= 5 and
 * least-served/median >= 0.9, or its fairness figures measure the generator.
 * A calibration that misses is repeated once (a moment of another process on
 * the generator's CPU is enough to miss); both attempts are reported.
 *
 * Scenarios (`--scenario a,b,c,d,e,w,m`, default all):
 *   a  50 connections, strict request/response (raw echo, lineserver, Node peer)
 *   b  50 connections, 32 lines in flight per connection (the same three)
 *   c  1000 connections, closed loop on `1,2,3,4,5,6,7,8\n`: fairness (every
 *      server, lineserver also with TLS)
 *   e  the same at 5000 connections
 *   d  server RSS per idle connection, 5000 connections held after the welcome
 *   w  a and b with `--workers 2` against `--workers 1`, both on CPUs 0-1
 *   k  the client library beside Node's `net`: request/response, pipelined,
 *      bulk push (client_scenario.ts)
 *   h  one client pipelining 64 KB lines beside a bystander sending a line
 *      every 50 ms: the bystander's reply times (heavy_lines.ts)
 *   m  memory under clients streaming without a newline, and the return to
 *      rest (memory_scenario.ts)
 *
 * Every reply is checked byte for byte; any mismatch or connection error, or
 * a failed calibration, makes the exit code 1. Targets missed are reported,
 * not failures.
 *
 * Output: the report then the JSON on stdout (only the JSON with
 * --json-only), progress on stderr, the JSON also in bench/results.json.
 *
 * Permissions: --allow-net=127.0.0.1, --allow-run (deno, node, taskset,
 * prlimit, grep, sh, getconf, nproc, openssl, mktemp, rm), --allow-read,
 * --allow-env and --allow-write=bench/results.json. Deno asks for
 * --allow-all before it lets a program read /proc, so /proc is read by
 * `grep` in a subprocess at the edges of each measuring window.
 *
 * @module
 */
import {
  allowedCpus,
  cpuModel,
  fileLimit,
  nproc,
  placement,
  placeProcesses,
  progress,
  raiseOwnFileLimit,
  readClockTicks,
  SERVER_CPU,
  SHARED_CPUS,
} from "./machine.ts";
import {
  CALIBRATION_FIRST_TRY_ID,
  CALIBRATION_ID,
  calibrationMet,
  IDLE_TARGET_CONNECTIONS,
  printReport,
  summarize,
} from "./report.ts";
import {
  type IdleResult,
  type LoadResult,
  type LoadScenario,
  runIdle,
  runLoad,
  type Settings,
} from "./scenarios.ts";
import { memoryBudgetS, runMemory } from "./memory_scenario.ts";
import { cleanUp, type ServerKind } from "./servers.ts";
import { clientTable, runClientScenario } from "./client_scenario.ts";
import {
  HEAVY_ROWS,
  heavyLinesBudgetS,
  type HeavyLinesResult,
  runHeavyRow,
} from "./heavy_lines.ts";
import { calculatorPool, fairnessPool } from "./traffic.ts";

const PIPELINE_DEPTH = 32;
const SCENARIOS = ["a", "b", "c", "d", "e", "w", "h", "k", "m"];

// ---------------------------------------------------------------------------
// Command line

/** What one run measures and how long it takes. */
export interface Options extends Settings {
  jsonOnly: boolean;
  scenarios: Set<string>;
  /** Seconds of rest watched after each load of scenario m. */
  memoryRestS: number;
}

const USAGE = `usage: deno task bench [options]
  --quick                 a short smoke run (1-2 s windows)
  --scenario LIST         comma-separated, from a,b,c,d,e,w,h,k,m (default all)
  --duration S            measuring window of a, b, w, h (default 6)
  --warmup S              warm-up of a, b, w, h (default 1)
  --fair-duration S       measuring window of c, e and the calibration (default 8)
  --fair-warmup S         warm-up of c, e and the calibration (default 2)
  --client-workers N      generator Workers (default 1)
  --idle-connections N    connections held in d (default 5000; the idle
                          target is judged only at 5000 or more)
  --memory-rest S         rest watched after each load of m (default 30)
  --server FILE           lineserver entry point (default server.ts)
  --baseline FILE         another lineserver entry point (an older checkout)
                          measured beside it in a, b, c, e and d, as
                          "lineserver before"
  --deno-flags "FLAGS"    extra deno run flags for lineserver
  --json-only             print only the JSON`;

function usage(problem: string): never {
  console.error(`${problem}\n${USAGE}`);
  Deno.exit(2);
}

/** Parses `args`; prints the usage text and exits with code 2 on a bad option. */
export function parseOptions(args: string[]): Options {
  const quick = args.includes("--quick");
  const options: Options = {
    jsonOnly: args.includes("--json-only"),
    scenarios: new Set(SCENARIOS),
    warmupS: quick ? 0.3 : 1,
    durationS: quick ? 1 : 6,
    fairWarmupS: quick ? 0.5 : 2,
    fairDurationS: quick ? 2 : 8,
    clientWorkers: 1,
    // As many as the documented figure, even when quick: fewer would give
    // a larger figure per connection that cannot be compared with it.
    idleConnections: IDLE_TARGET_CONNECTIONS,
    memoryRestS: quick ? 5 : 30,
    calc: { server: "server.ts", denoFlags: [] },
  };
  const flags = new Set(["--quick", "--json-only"]);
  const valued = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    if (flags.has(args[i])) continue;
    if (!USAGE.includes(`${args[i]} `) || !args[i].startsWith("--")) {
      usage(`Unknown option: received "${args[i]}"`);
    }
    if (i + 1 >= args.length) usage(`Missing value for ${args[i]}`);
    valued.set(args[i], args[++i]);
  }
  const number = (name: string, min: number, max: number, fallback: number) => {
    const text = valued.get(name);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!(n >= min && n <= max)) {
      usage(`Bad value for ${name}: received "${text}"`);
    }
    return n;
  };
  const list = valued.get("--scenario");
  if (list !== undefined) {
    options.scenarios = new Set(list.split(",").map((s) => s.trim()));
    for (const s of options.scenarios) {
      if (!SCENARIOS.includes(s)) usage(`Unknown scenario: received "${s}"`);
    }
  }
  options.durationS = number("--duration", 0.2, 30, options.durationS);
  options.warmupS = number("--warmup", 0, 10, options.warmupS);
  options.fairDurationS = number(
    "--fair-duration",
    0.2,
    30,
    options.fairDurationS,
  );
  options.fairWarmupS = number("--fair-warmup", 0, 10, options.fairWarmupS);
  options.clientWorkers = Math.floor(
    number("--client-workers", 1, 16, options.clientWorkers),
  );
  options.idleConnections = Math.floor(
    number("--idle-connections", 1, 20000, options.idleConnections),
  );
  options.memoryRestS = number("--memory-rest", 1, 120, options.memoryRestS);
  options.calc.server = valued.get("--server") ?? options.calc.server;
  options.calc.baseline = valued.get("--baseline");
  options.calc.denoFlags =
    valued.get("--deno-flags")?.split(" ").filter((f) => f) ?? [];
  return options;
}

// ---------------------------------------------------------------------------
// The plan

/** Every load row of the run, in the order they run: the calibration first. */
function plan(options: Options): LoadScenario[] {
  const rows: LoadScenario[] = [];
  const speed = { warmupS: options.warmupS, durationS: options.durationS };
  const fair = {
    warmupS: options.fairWarmupS,
    durationS: options.fairDurationS,
  };
  const calc = calculatorPool();
  const closedLoop = (
    scenario: string,
    connections: number,
    kind: ServerKind,
  ) =>
    rows.push({
      id: `${scenario}-${kind}`,
      scenario,
      description: `${connections} conns closed loop`,
      server: { kind, cpus: SERVER_CPU },
      connections,
      depth: 1,
      pool: fairnessPool(),
      ...fair,
    });

  // The calibration is the Node peer's 1000-connection row of c: always run.
  closedLoop("c", 1000, "node-peer");
  for (
    const [scenario, depth, what] of [
      ["a", 1, "request/response"],
      ["b", PIPELINE_DEPTH, `pipelined ${PIPELINE_DEPTH} deep`],
    ] as const
  ) {
    if (!options.scenarios.has(scenario)) continue;
    for (
      const kind of withBaseline(options, ["echo-deno", "calc", "node-peer"])
    ) {
      rows.push({
        id: `${scenario}-${kind}`,
        scenario,
        description: what,
        server: { kind, cpus: SERVER_CPU },
        connections: 50,
        depth,
        pool: calc,
        ...speed,
      });
    }
  }
  if (options.scenarios.has("c")) {
    for (
      const kind of withBaseline(options, [
        "calc",
        "calc-tls",
        "echo-deno",
        "echo-node",
      ])
    ) {
      closedLoop("c", 1000, kind);
    }
  }
  if (options.scenarios.has("e")) {
    for (
      const kind of withBaseline(options, [
        "node-peer",
        "calc",
        "echo-deno",
        "echo-node",
      ])
    ) {
      closedLoop("e", 5000, kind);
    }
  }
  if (options.scenarios.has("w")) {
    for (
      const [scenario, depth, what] of [
        ["wa", 1, "request/response"],
        ["wb", PIPELINE_DEPTH, `pipelined ${PIPELINE_DEPTH} deep`],
      ] as const
    ) {
      for (const workers of [1, 2]) {
        rows.push({
          id: `${scenario}-calc-w${workers}`,
          scenario,
          description: `${what}, --workers ${workers}, server on CPUs 0-1`,
          server: { kind: "calc", workers, cpus: SHARED_CPUS },
          connections: 50,
          depth,
          pool: calc,
          ...speed,
        });
      }
    }
  }
  return rows;
}

/** The servers whose idle memory scenario d measures. */
const IDLE_SERVERS: readonly ServerKind[] = [
  "calc",
  "calc-tls",
  "node-peer",
  "echo-deno",
  "echo-node",
];

/** The idle servers, with "lineserver before" beside lineserver when given. */
function idleServers(options: Options): ServerKind[] {
  return withBaseline(options, IDLE_SERVERS);
}

/** `kinds`, with "lineserver before" right after lineserver when it is given. */
function withBaseline(
  options: Options,
  kinds: readonly ServerKind[],
): ServerKind[] {
  return options.calc.baseline === undefined
    ? [...kinds]
    : kinds.flatMap((kind) =>
      kind === "calc" ? ["calc", "calc-baseline"] as const : [kind]
    );
}

/**
 * A hard bound on the whole run: every row's warm-up and window plus a
 * generous allowance for starting servers, connecting and draining. The
 * default plan needs about 4.5 minutes and gets 11.
 */
function budgetMs(rows: LoadScenario[], options: Options): number {
  // The rows, and the calibration once more should it miss the first time.
  let seconds = 30 + rows[0].warmupS + rows[0].durationS + 10;
  for (const row of rows) {
    seconds += row.warmupS + row.durationS + 8 + row.connections / 500;
  }
  if (options.scenarios.has("d")) {
    seconds += idleServers(options).length *
      (10 + options.idleConnections / 250);
  }
  if (options.scenarios.has("k")) {
    seconds += 6 * (options.warmupS + options.durationS + 10);
  }
  if (options.scenarios.has("h")) seconds += heavyLinesBudgetS(options);
  if (options.scenarios.has("m")) seconds += memoryBudgetS(options.memoryRestS);
  return seconds * 1000;
}

// ---------------------------------------------------------------------------
// The run

async function main(options: Options, rows: LoadScenario[]): Promise<number> {
  const started = performance.now();
  const processors = await nproc();
  await readClockTicks();

  // One socket per client connection here, one per connection in the server
  // (which inherits this limit), plus some for Deno itself.
  const needFiles = Math.max(
    ...rows.map((r) => r.connections),
    options.scenarios.has("d") ? options.idleConnections : 0,
  ) + 256;
  const before = await fileLimit(Deno.pid);
  const fileLimitNow = await raiseOwnFileLimit(needFiles);
  if (fileLimitNow < needFiles) {
    progress(
      `open-file limit ${fileLimitNow} < ${needFiles} needed and the hard limit is lower: run as \`prlimit --nofile=${needFiles}:${needFiles} deno task bench\` (needs CAP_SYS_RESOURCE) or lower --idle-connections`,
    );
  }

  await placeProcesses(processors);
  const windows =
    `speed rows ${options.warmupS} s warm-up + ${options.durationS} s, fairness rows ${options.fairWarmupS} s + ${options.fairDurationS} s`;
  progress(
    `nproc ${processors}; ${placement.note}; generator CPUs now ${await allowedCpus(
      Deno.pid,
    )}; ${options.clientWorkers} generator worker(s); ${windows}`,
  );

  const loads: LoadResult[] = [];
  for (const row of rows) {
    let result = await runLoad(row, options);
    if (row.id !== CALIBRATION_ID) {
      loads.push(result);
      continue;
    }
    const said = (r: LoadResult) =>
      `max/median ${r.maxOverMedian.toFixed(2)} (<= 5), least-served/median ${
        r.leastServedOverMedian.toFixed(3)
      } (>= 0.9), other processes ${Math.round(r.otherCpu * 100)}% of a CPU`;
    if (!result.failed && !result.skipped && !calibrationMet(result)) {
      // Another process taking the generator's CPU for a moment is enough
      // to miss; one more attempt tells that apart from an unfair generator.
      progress(`calibration missed: ${said(result)}; repeating it once`);
      loads.push({ ...result, id: CALIBRATION_FIRST_TRY_ID });
      result = await runLoad(row, options);
    }
    loads.push(result);
    if (!result.failed && !result.skipped) {
      progress(`calibration: ${said(result)}`);
    }
  }
  const idle: IdleResult[] = [];
  if (options.scenarios.has("d")) {
    const tooFew = fileLimitNow < options.idleConnections + 256
      ? `open-file limit ${fileLimitNow} < ${
        options.idleConnections + 256
      } needed`
      : undefined;
    for (const kind of idleServers(options)) {
      idle.push(await runIdle(kind, options, tooFew));
    }
  }

  const client = options.scenarios.has("k")
    ? await runClientScenario(options)
    : undefined;
  const heavy: HeavyLinesResult[] = [];
  if (options.scenarios.has("h")) {
    for (const row of HEAVY_ROWS) heavy.push(await runHeavyRow(row, options));
  }
  const memory = options.scenarios.has("m")
    ? await runMemory(options, options.memoryRestS)
    : [];

  const summary = summarize({ loads, idle, heavy, memory }, {
    processors,
    cpuModel: await cpuModel(),
    clientWorkers: options.clientWorkers,
    windows,
    openFileLimit: { before, after: await fileLimit(Deno.pid) },
    calc: calculatorPool(),
    started,
  });
  if (client !== undefined && !options.jsonOnly) {
    console.log(clientTable(client) + "\n");
  }
  // Scenario k's rows ride along in the JSON under "client".
  const withClient = { ...summary, client };
  const notWritten = printReport(withClient, options.jsonOnly);
  if (notWritten) progress(notWritten);
  return summary.ok && !client?.failed ? 0 : 1;
}

if (import.meta.main) {
  const options = parseOptions(Deno.args);
  const rows = plan(options);
  const budget = budgetMs(rows, options);
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
    code = await main(options, rows);
  } catch (error) {
    console.error(`[bench] ${(error as Error).stack ?? error}`);
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
  Deno.exit(code);
}

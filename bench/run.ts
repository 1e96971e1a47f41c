/**
 * `deno task bench`: throughput, latency, CPU and memory of the calculator
 * server, next to a raw byte-echo server as the reference point.
 *
 * The orchestrator (this file) starts each server as a subprocess on port 0,
 * pinned to CPU 0 with `taskset`, and pins itself and its load-generator
 * workers (`bench/load_worker.ts`, Deno Worker threads) to CPU 1. Every
 * scenario gets a fresh server, a warm-up, then a fixed measuring window;
 * every wait is bounded and every child is killed by PID and reaped, even on
 * failure or Ctrl-C.
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
import {
  type LatencyHistogram,
  merge,
  newHistogram,
  quantile,
} from "./histogram.ts";
import type { FromWorker, Problems, ToWorker } from "./load_worker.ts";
import {
  allowedCpus,
  clockTicks,
  cpuModel,
  type CpuSnapshot,
  cpuSnapshot,
  fileLimit,
  hasTaskset,
  LISTENING,
  pinSelf,
  processTree,
  raiseOwnFileLimit,
  rssKiBOfTree,
  ServerChild,
  ServerExited,
  type TcpCounters,
  tcpDelta,
} from "./proc.ts";
import {
  CALC_WELCOME,
  calculatorPool,
  echoPool,
  type Exchange,
  type Target,
} from "./traffic.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const ECHO_ENTRY = "bench/raw_echo_server.ts";
const RESULTS_FILE = new URL("./results.json", import.meta.url).pathname;
const SERVER_CPU = "0";
const GENERATOR_CPU = "1";
const SHARED_CPUS = "0,1";
const SLOW_MS = 100;
const PIPELINE_DEPTH = 32;
const START_TIMEOUT_MS = 30_000;
const DRAIN_MS = 2000;
const SETTLE_MS = 1000;

// ---------------------------------------------------------------- options

interface Options {
  quick: boolean;
  jsonOnly: boolean;
  scenarios: Set<string>;
  durationS: number;
  warmupS: number;
  clientWorkers: number;
  idleConnections: number;
  server: string;
  /** Extra `deno run` flags for the calculator server (e.g. `--v8-flags=--prof,...`). */
  denoFlags: string[];
}

function parseOptions(args: string[]): Options {
  const options: Options = {
    quick: args.includes("--quick"),
    jsonOnly: args.includes("--json-only"),
    scenarios: new Set(["a", "b", "c", "d", "w"]),
    durationS: 6,
    warmupS: 1,
    clientWorkers: 2,
    idleConnections: 5000,
    server: "server.ts",
    denoFlags: [],
  };
  if (options.quick) {
    options.durationS = 1;
    options.warmupS = 0.3;
    options.idleConnections = 1000;
  }
  const value = (name: string) => {
    const at = args.indexOf(name);
    if (at < 0) return undefined;
    if (at + 1 >= args.length) usage(`Missing value for ${name}`);
    return args[at + 1];
  };
  const number = (name: string, min: number, max: number) => {
    const text = value(name);
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!(n >= min && n <= max)) {
      usage(`Bad value for ${name}: received "${text}"`);
    }
    return n;
  };
  const list = value("--scenario");
  if (list !== undefined) {
    options.scenarios = new Set(list.split(",").map((s) => s.trim()));
    for (const s of options.scenarios) {
      if (!"abcdw".includes(s) || s.length !== 1) {
        usage(`Unknown scenario: received "${s}"`);
      }
    }
  }
  options.durationS = number("--duration", 0.2, 30) ?? options.durationS;
  options.warmupS = number("--warmup", 0, 10) ?? options.warmupS;
  options.clientWorkers = number("--client-workers", 1, 16) ??
    options.clientWorkers;
  options.idleConnections = number("--idle-connections", 1, 20000) ??
    options.idleConnections;
  options.server = value("--server") ?? options.server;
  options.denoFlags = value("--deno-flags")?.split(" ").filter((f) => f) ??
    [];
  const known = new Set([
    "--quick",
    "--json-only",
    "--scenario",
    "--duration",
    "--warmup",
    "--client-workers",
    "--idle-connections",
    "--server",
    "--deno-flags",
  ]);
  for (let i = 0; i < args.length; i++) {
    if (!known.has(args[i])) usage(`Unknown option: received "${args[i]}"`);
    if (!["--quick", "--json-only"].includes(args[i])) i++;
  }
  return options;
}

function usage(problem: string): never {
  console.error(
    `${problem}\nusage: deno task bench [--quick] [--json-only] ` +
      `[--scenario a,b,c,d,w] [--duration S] [--warmup S] ` +
      `[--client-workers N] [--idle-connections N] [--server FILE] ` +
      `[--deno-flags "FLAGS"]`,
  );
  Deno.exit(2);
}

// ---------------------------------------------------------------- bookkeeping

/** Everything alive that must be ended on the way out. */
const live = {
  servers: new Set<ServerChild>(),
  workers: new Set<Worker>(),
};

async function cleanUp(): Promise<void> {
  for (const worker of live.workers) worker.terminate();
  live.workers.clear();
  await Promise.all([...live.servers].map((s) => s.stop(1000)));
  live.servers.clear();
}

/** Progress goes to stderr, so stdout holds only the table and the JSON. */
function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Timed out after ${ms} ms: ${what}`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- environment

interface Placement {
  pinned: boolean;
  /** Why not pinned, when not. */
  note: string;
}

let placement: Placement = { pinned: false, note: "" };
let ticksPerSecond = 100;

/** The `taskset` prefix that places a server on `cpus` (none when unpinned). */
function pinPrefix(cpus: string): string[] {
  return placement.pinned ? ["taskset", "-c", cpus] : [];
}

async function nproc(): Promise<number> {
  try {
    const { stdout } = await new Deno.Command("nproc", { stdout: "piped" })
      .output();
    return Number(new TextDecoder().decode(stdout).trim());
  } catch {
    return navigator.hardwareConcurrency;
  }
}

/**
 * CPU ticks of the server's process tree and of this process (the load
 * generator: all its worker threads) and the moment they were read (the
 * middle of the read, which takes a few milliseconds).
 */
async function cpuSample(tree: number[]) {
  const before = performance.now();
  const snapshot: CpuSnapshot = await cpuSnapshot([...tree, Deno.pid]);
  const at = (before + performance.now()) / 2;
  const self = snapshot.processTicks.pop()!;
  const server = snapshot.processTicks.reduce((a, b) => a + b, 0);
  return { at, server, self, cores: snapshot.cores, tcp: snapshot.tcp };
}

/** Busy share of each core between two samples (1.0 = fully busy). */
function coreBusy(
  start: { cores: CpuSnapshot["cores"] },
  end: { cores: CpuSnapshot["cores"] },
): number[] {
  return end.cores.map((core, i) => {
    const total = core.total - (start.cores[i]?.total ?? 0);
    return total > 0 ? (core.busy - start.cores[i].busy) / total : NaN;
  });
}

// ---------------------------------------------------------------- servers

interface ServerSpec {
  target: Target;
  /** `--workers N` for server.ts, or undefined to leave the default. */
  workers?: number;
  cpus: string;
}

async function startServer(
  spec: ServerSpec,
  options: Options,
): Promise<ServerChild> {
  const deno = Deno.execPath();
  const argv = spec.target === "echo"
    ? [deno, "run", "--allow-net=127.0.0.1", ECHO_ENTRY, "--port", "0"]
    : [
      deno,
      "run",
      "--allow-net",
      ...options.denoFlags,
      // --workers loads a worker module from disk, which needs read access.
      ...(spec.workers === undefined ? [] : [`--allow-read=${ROOT}`]),
      options.server,
      "--port",
      "0",
      "--log-level",
      "warning",
      ...(spec.workers === undefined ? [] : ["--workers", `${spec.workers}`]),
    ];
  const server = new ServerChild([...pinPrefix(spec.cpus), ...argv], ROOT);
  live.servers.add(server);
  try {
    await server.listening(START_TIMEOUT_MS);
  } catch (error) {
    await stopServer(server);
    throw error;
  }
  return server;
}

/** The last stderr lines after `listening on` (warnings, errors, the shutdown summary). */
function stderrAfterListening(server: ServerChild): string[] {
  const lines = server.stderr.split("\n").filter((l) => l.trim() !== "");
  const listening = lines.findIndex((l) => LISTENING.test(l));
  return lines.slice(listening + 1).slice(-5);
}

async function stopServer(server: ServerChild): Promise<number> {
  const tree = await processTree(server.pid);
  const code = await server.stop();
  live.servers.delete(server);
  // Helpers the server forked and did not end: kill them by PID too.
  for (const pid of tree.slice(1)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  return code;
}

// ---------------------------------------------------------------- load workers

/** One load-generator Worker with a typed, time-bounded inbox. */
class LoadWorker {
  readonly worker: Worker;
  #inbox: FromWorker[] = [];
  #wake: (() => void) | undefined;

  constructor() {
    this.worker = new Worker(new URL("./load_worker.ts", import.meta.url), {
      type: "module",
    });
    live.workers.add(this.worker);
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      this.#inbox.push(event.data);
      this.#wake?.();
    };
    this.worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#inbox.push({ type: "fatal", message: event.message });
      this.#wake?.();
    };
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  /** The next message, which must be of `type`; rejects on a worker failure or timeout. */
  async expect<T extends FromWorker["type"]>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<FromWorker, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Load worker sent no "${type}" in time`);
      await withTimeout(
        new Promise<void>((resolve) => this.#wake = resolve),
        left,
        `load worker "${type}"`,
      ).catch(() => {});
      this.#wake = undefined;
    }
    const message = this.#inbox.shift()!;
    if (message.type === "fatal") {
      throw new Error(`Load worker failed: ${message.message}`);
    }
    if (message.type !== type) {
      throw new Error(`Load worker sent "${message.type}", not "${type}"`);
    }
    return message as Extract<FromWorker, { type: T }>;
  }

  terminate(): void {
    this.worker.terminate();
    live.workers.delete(this.worker);
  }
}

/** Splits `connections` over at most `workers` generator workers. */
function shares(connections: number, workers: number): number[] {
  const count = Math.min(workers, connections);
  return Array.from(
    { length: count },
    (_, i) =>
      Math.floor(connections / count) + (i < connections % count ? 1 : 0),
  );
}

function emptyProblems(): Problems {
  return { errors: 0, errorSamples: [], mismatches: 0, mismatchSamples: [] };
}

function addProblems(into: Problems, from: Problems): void {
  into.errors += from.errors;
  into.mismatches += from.mismatches;
  into.errorSamples.push(...from.errorSamples);
  into.mismatchSamples.push(...from.mismatchSamples);
  into.errorSamples.splice(5);
  into.mismatchSamples.splice(5);
}

/** Starts the generator workers and opens every connection (welcome read). */
async function connectGenerators(
  server: ServerChild,
  target: Target,
  connections: number,
  depth: number,
  pool: Exchange[],
  options: Options,
): Promise<
  { generators: LoadWorker[]; connected: number; problems: Problems }
> {
  const generators: LoadWorker[] = [];
  const problems = emptyProblems();
  let first = 0;
  for (const share of shares(connections, options.clientWorkers)) {
    const generator = new LoadWorker();
    generators.push(generator);
    generator.post({
      type: "init",
      host: server.host,
      port: server.port,
      connections: share,
      depth,
      requests: pool.map((e) => e.request),
      replies: pool.map((e) => e.reply),
      welcome: target === "calc" ? CALC_WELCOME : null,
      firstConnection: first,
      slowMs: SLOW_MS,
      connectTimeoutMs: 10_000,
      connectConcurrency: 64,
    });
    first += share;
  }
  let connected = 0;
  const budget = 20_000 + connections * 5;
  for (const generator of generators) {
    const ready = await generator.expect("ready", budget);
    connected += ready.connected;
    addProblems(problems, ready);
  }
  return { generators, connected, problems };
}

// ---------------------------------------------------------------- scenarios

interface LoadScenario {
  id: string;
  scenario: string;
  description: string;
  target: Target;
  workers?: number;
  cpus: string;
  connections: number;
  depth: number;
}

interface LoadResult {
  id: string;
  scenario: string;
  description: string;
  target: Target;
  serverWorkers: number | null;
  serverCpus: string;
  generatorCpus: string;
  connections: number;
  connected: number;
  depth: number;
  measuredS: number;
  lines: number;
  linesPerS: number;
  /**
   * Lines per second of server CPU time: what the server would do with a
   * whole core, so a fair comparison when the echo reference is client-bound.
   */
  linesPerServerCpuS: number;
  requestBytesPerS: number;
  replyBytesPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  slowOver100Ms: number;
  /** The generator's own event-loop delay (10 ms timer lateness), all workers. */
  generatorLoopLagP99Ms: number;
  generatorLoopLagMaxMs: number;
  /** CPU time over wall time in the window: 1.0 is one core busy. */
  serverCpu: number;
  generatorCpu: number;
  /** Busy share of each core (any process, softirq included) in the window. */
  coreBusy: number[];
  /**
   * Cores' time in irq/softirq (mostly loopback TCP delivery). With tick-based
   * accounting (this kernel) it is also inside the process times above.
   */
  interruptCpu: number;
  /**
   * CPU used by anything else on the machine in the window (busy time of all
   * cores minus server and generator), in cores: more than a few percent means
   * the run was disturbed (on a kernel with IRQ time accounting it also holds
   * the interrupt time).
   */
  otherCpu: number;
  /** TCP retransmissions, listen-queue overflows and timeouts in the window (whole machine). */
  tcp: TcpCounters | null;
  errors: number;
  mismatches: number;
  stalledConnections: number;
  errorSamples: string[];
  mismatchSamples: string[];
  serverExitCode: number | null;
  /** What the server wrote to stderr after its listening line (at --log-level warning). */
  serverStderr: string[];
  skipped?: string;
  failed?: string;
}

const round = (n: number, digits = 3) =>
  Number.isFinite(n) ? Number(n.toFixed(digits)) : null;

async function runLoad(
  scenario: LoadScenario,
  pool: Exchange[],
  options: Options,
): Promise<LoadResult> {
  const result: LoadResult = {
    id: scenario.id,
    scenario: scenario.scenario,
    description: scenario.description,
    target: scenario.target,
    serverWorkers: scenario.workers ?? null,
    serverCpus: placement.pinned ? scenario.cpus : "unpinned",
    generatorCpus: placement.pinned ? GENERATOR_CPU : "unpinned",
    connections: scenario.connections,
    connected: 0,
    depth: scenario.depth,
    measuredS: 0,
    lines: 0,
    linesPerS: 0,
    linesPerServerCpuS: NaN,
    requestBytesPerS: 0,
    replyBytesPerS: 0,
    p50Ms: NaN,
    p99Ms: NaN,
    maxMs: NaN,
    slowOver100Ms: 0,
    generatorLoopLagP99Ms: NaN,
    generatorLoopLagMaxMs: NaN,
    serverCpu: NaN,
    generatorCpu: NaN,
    coreBusy: [],
    interruptCpu: NaN,
    otherCpu: NaN,
    tcp: null,
    errors: 0,
    mismatches: 0,
    stalledConnections: 0,
    errorSamples: [],
    mismatchSamples: [],
    serverExitCode: null,
    serverStderr: [],
  };
  progress(
    `${scenario.id}: ${scenario.description} (${scenario.target}, ${scenario.connections} conns, depth ${scenario.depth})`,
  );
  let server: ServerChild;
  try {
    server = await startServer(scenario, options);
  } catch (error) {
    if (error instanceof ServerExited && scenario.workers !== undefined) {
      result.skipped = error.firstLine;
      progress(`${scenario.id}: skipped: ${error.firstLine}`);
    } else {
      result.failed = (error as Error).message;
      progress(`${scenario.id}: FAILED: ${result.failed}`);
    }
    return result;
  }
  let generators: LoadWorker[] = [];
  try {
    if (placement.pinned) {
      progress(
        `${scenario.id}: server pid ${server.pid} on CPUs ${await allowedCpus(
          server.pid,
        )}`,
      );
    }
    const opened = await connectGenerators(
      server,
      scenario.target,
      scenario.connections,
      scenario.depth,
      pool,
      options,
    );
    generators = opened.generators;
    result.connected = opened.connected;
    const problems = opened.problems;

    for (const g of generators) g.post({ type: "run" });
    await sleep(options.warmupS * 1000);

    const tree = await processTree(server.pid);
    const start = await cpuSample(tree);
    for (const g of generators) g.post({ type: "measure" });
    await sleep(options.durationS * 1000);
    for (const g of generators) g.post({ type: "stop", drainMs: DRAIN_MS });
    const end = await cpuSample(tree);
    if (server.exited) {
      throw new Error(
        `Server exited during the run (code ${server.exited.code})`,
      );
    }

    const histogram: LatencyHistogram = newHistogram();
    const loopLag: LatencyHistogram = newHistogram();
    let bytesIn = 0;
    let bytesOut = 0;
    for (const g of generators) {
      const r = await g.expect("result", DRAIN_MS + 10_000);
      merge(histogram, r.histogram);
      merge(loopLag, r.loopLag);
      result.lines += r.lines;
      result.slowOver100Ms += r.slow;
      result.stalledConnections += r.stalled;
      bytesIn += r.bytesIn;
      bytesOut += r.bytesOut;
      addProblems(problems, r);
    }
    const seconds = (end.at - start.at) / 1000;
    result.measuredS = seconds;
    result.linesPerS = result.lines / seconds;
    result.requestBytesPerS = bytesOut / seconds;
    result.replyBytesPerS = bytesIn / seconds;
    result.p50Ms = quantile(histogram, 0.5) / 1000;
    result.p99Ms = quantile(histogram, 0.99) / 1000;
    result.maxMs = histogram.maxUs / 1000;
    result.generatorLoopLagP99Ms = quantile(loopLag, 0.99) / 1000;
    result.generatorLoopLagMaxMs = loopLag.maxUs / 1000;
    result.serverCpu = (end.server - start.server) / ticksPerSecond / seconds;
    result.generatorCpu = (end.self - start.self) / ticksPerSecond / seconds;
    result.coreBusy = coreBusy(start, end);
    result.linesPerServerCpuS = result.linesPerS / result.serverCpu;
    result.tcp = tcpDelta(start.tcp, end.tcp);
    const sum = (sample: typeof start, key: "busy" | "interrupts") =>
      sample.cores.reduce((total, core) => total + core[key], 0);
    const cores = (ticks: number) => ticks / ticksPerSecond / seconds;
    result.interruptCpu = cores(
      sum(end, "interrupts") - sum(start, "interrupts"),
    );
    result.otherCpu = Math.max(
      0,
      cores(sum(end, "busy") - sum(start, "busy")) - result.serverCpu -
        result.generatorCpu,
    );
    result.errors = problems.errors;
    result.mismatches = problems.mismatches;
    result.errorSamples = problems.errorSamples;
    result.mismatchSamples = problems.mismatchSamples;
  } catch (error) {
    result.failed = (error as Error).message;
    progress(`${scenario.id}: FAILED: ${result.failed}`);
  } finally {
    for (const g of generators) g.terminate();
    result.serverExitCode = await stopServer(server);
    result.serverStderr = stderrAfterListening(server);
  }
  if (result.failed) return result;
  progress(
    `${scenario.id}: ${Math.round(result.linesPerS)} lines/s, p99 ${
      result.p99Ms.toFixed(2)
    } ms, server CPU ${pct(result.serverCpu)}, generator CPU ${
      pct(result.generatorCpu)
    }, errors ${result.errors}, mismatches ${result.mismatches}`,
  );
  return result;
}

interface IdleResult {
  id: string;
  description: string;
  connections: number;
  connected: number;
  rssBeforeKiB: number;
  rssHeldKiB: number;
  rssAfterCloseKiB: number;
  kibPerConnection: number;
  connectS: number;
  serverCpuWhileHeld: number;
  errors: number;
  mismatches: number;
  errorSamples: string[];
  mismatchSamples: string[];
  serverExitCode: number | null;
  failed?: string;
}

async function runIdle(
  pool: Exchange[],
  options: Options,
  cannotRun?: string,
): Promise<IdleResult> {
  const connections = options.idleConnections;
  const result: IdleResult = {
    id: "d-calc",
    description: "RSS per idle connection",
    connections,
    connected: 0,
    rssBeforeKiB: 0,
    rssHeldKiB: 0,
    rssAfterCloseKiB: 0,
    kibPerConnection: NaN,
    connectS: 0,
    serverCpuWhileHeld: NaN,
    errors: 0,
    mismatches: 0,
    errorSamples: [],
    mismatchSamples: [],
    serverExitCode: null,
  };
  if (cannotRun) {
    result.failed = cannotRun;
    return result;
  }
  progress(`d-calc: holding ${connections} idle connections`);
  let server: ServerChild;
  try {
    server = await startServer({ target: "calc", cpus: SERVER_CPU }, options);
  } catch (error) {
    result.failed = (error as Error).message;
    progress(`d-calc: FAILED: ${result.failed}`);
    return result;
  }
  let generators: LoadWorker[] = [];
  try {
    await sleep(300);
    let tree = await processTree(server.pid);
    result.rssBeforeKiB = await rssKiBOfTree(tree);
    const started = performance.now();
    const opened = await connectGenerators(
      server,
      "calc",
      connections,
      0,
      pool,
      options,
    );
    generators = opened.generators;
    result.connectS = (performance.now() - started) / 1000;
    result.connected = opened.connected;
    await sleep(SETTLE_MS);
    tree = await processTree(server.pid);
    const start = await cpuSample(tree);
    await sleep(SETTLE_MS);
    const end = await cpuSample(tree);
    if (server.exited) {
      throw new Error(
        `Server exited during the run (code ${server.exited.code})`,
      );
    }
    result.serverCpuWhileHeld = (end.server - start.server) / ticksPerSecond /
      ((end.at - start.at) / 1000);
    result.rssHeldKiB = await rssKiBOfTree(tree);
    const problems = opened.problems;
    for (const g of generators) {
      g.post({ type: "close" });
      addProblems(problems, await g.expect("closed", 10_000));
    }
    await sleep(SETTLE_MS);
    result.rssAfterCloseKiB = await rssKiBOfTree(tree);
    result.kibPerConnection = result.connected > 0
      ? (result.rssHeldKiB - result.rssBeforeKiB) / result.connected
      : NaN;
    result.errors = problems.errors;
    result.mismatches = problems.mismatches;
    result.errorSamples = problems.errorSamples;
    result.mismatchSamples = problems.mismatchSamples;
  } catch (error) {
    result.failed = (error as Error).message;
    progress(`d-calc: FAILED: ${result.failed}`);
  } finally {
    for (const g of generators) g.terminate();
    result.serverExitCode = await stopServer(server);
  }
  if (result.failed) return result;
  progress(
    `d-calc: ${result.connected} held, RSS ${result.rssBeforeKiB} -> ${result.rssHeldKiB} KiB, ${
      result.kibPerConnection.toFixed(1)
    } KiB/conn`,
  );
  return result;
}

// ---------------------------------------------------------------- report

function pct(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : "-";
}

function ms(value: number): string {
  if (!Number.isFinite(value)) return "-";
  return value >= 100 ? value.toFixed(0) : value.toFixed(2);
}

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

// ---------------------------------------------------------------- main

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
  ticksPerSecond = await clockTicks();

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

  if (processors < 2) {
    placement = { pinned: false, note: `unpinned: nproc is ${processors}` };
  } else if (!await hasTaskset()) {
    placement = { pinned: false, note: "unpinned: taskset not found" };
  } else if (!await pinSelf(GENERATOR_CPU)) {
    placement = { pinned: false, note: "unpinned: taskset -p failed" };
  } else {
    placement = {
      pinned: true,
      note:
        `server on CPU ${SERVER_CPU}, load generator (this process and its workers) on CPU ${GENERATOR_CPU}`,
    };
  }
  progress(
    `nproc ${processors}; ${placement.note}; generator CPUs now ${await allowedCpus(
      Deno.pid,
    )}; ${options.clientWorkers} client workers; ${options.warmupS}s warm-up + ${options.durationS}s per scenario`,
  );

  const calc = calculatorPool();
  const echo = echoPool(calc);
  const meanBytes = (lines: string[]) =>
    lines.reduce((sum, l) => sum + l.length, 0) / lines.length;

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

  // ---- summary
  const all = [...loadResults, ...workerResults];
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
  const rows = all.map((r) => [
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

  const json = {
    meta: {
      date: new Date().toISOString(),
      nproc: processors,
      cpuModel: await cpuModel(),
      deno: Deno.version.deno,
      placement: placement.note,
      pinned: placement.pinned,
      clientWorkers: options.clientWorkers,
      warmupS: options.warmupS,
      durationS: options.durationS,
      openFileLimit: { before, after: await fileLimit(Deno.pid) },
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
  json.meta.totalS = round((performance.now() - started) / 1000, 1)!;

  if (!options.jsonOnly) {
    const out: string[] = [];
    out.push(
      `lineserver bench — nproc ${processors}, ${placement.note}, ${options.clientWorkers} client workers, ${options.warmupS}s warm-up + ${options.durationS}s measured per scenario`,
    );
    out.push(json.meta.traffic);
    out.push("");
    out.push(table(header, rows));
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
          json.fairness?.met ? "met" : "MISSED"
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
    out.push(`total ${json.meta.totalS} s`);
    out.push("");
    console.log(out.join("\n"));
  }
  const text = JSON.stringify(json, null, 2);
  console.log(text);
  try {
    Deno.writeTextFileSync(RESULTS_FILE, text + "\n");
  } catch (error) {
    progress(
      `${RESULTS_FILE} not written (${
        (error as Error).name
      }): run with --allow-write=bench/results.json`,
    );
  }
  return failures.length === 0 ? 0 : 1;
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

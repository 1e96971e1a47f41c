/**
 * The scenarios: what each one starts, how much load it offers and what it
 * measures. Every scenario gets a fresh server, its connections, a warm-up,
 * then a fixed measuring window; CPU ticks are read at the window's edges,
 * so throughput and CPU shares cover the same interval. A failure is recorded
 * in the result instead of ending the run, and whatever happens the
 * generators are ended and the server is stopped and reaped before the next
 * scenario starts.
 *
 * - Load scenarios ({@linkcode runLoad}): `depth` lines in flight on every
 *   connection, the next sent the moment a reply arrives (a closed loop;
 *   depth 1 is strict request/response). They report lines/s, latency
 *   percentiles, the least-served connection and peak server memory.
 * - The idle scenario ({@linkcode runIdle}): server memory per connection
 *   that holds only its welcome.
 *
 * @module
 */
import { pause } from "../src/deadline.ts";
import {
  closeIdle,
  collectResults,
  leastServedOverMedian,
  type LoadWorker,
  openConnections,
} from "./load.ts";
import {
  allowedCpus,
  coreBusy,
  cpuSample,
  cpuShares,
  GENERATOR_CPU,
  placement,
  processTree,
  progress,
  rssKiBOfTree,
  SERVER_CPU,
  type TcpCounters,
  tcpDelta,
  ticksPerSecond,
} from "./machine.ts";
import {
  assertStillRunning,
  type CalcOptions,
  type ServerChild,
  ServerExited,
  type ServerKind,
  SERVERS,
  type ServerSpec,
  type Started,
  startServer,
  stderrAfterListening,
  stopServer,
  whyNot,
} from "./servers.ts";
import {
  CALC_WELCOME,
  type Exchange,
  expectedFrom,
  fairnessPool,
  type Problems,
  quantile,
} from "./traffic.ts";

const DRAIN_MS = 2000;
const SETTLE_MS = 1000;

/** How long and with how many generator workers the scenarios run. */
export interface Settings {
  /** Warm-up and window of the speed scenarios (50 connections). */
  warmupS: number;
  durationS: number;
  /** Warm-up and window of the fairness scenarios (1000 and 5000 connections). */
  fairWarmupS: number;
  fairDurationS: number;
  clientWorkers: number;
  idleConnections: number;
  calc: CalcOptions;
}

/** One row of the plan: which server, where, how much load and for how long. */
export interface LoadScenario {
  id: string;
  /** The scenario letter it belongs to (`a`, `b`, `c`, `e`, `wa`, `wb`). */
  scenario: string;
  description: string;
  server: ServerSpec;
  connections: number;
  depth: number;
  /** The request lines and their replies, as the calculator answers them. */
  pool: Exchange[];
  warmupS: number;
  durationS: number;
}

/** The fields every scenario result has. */
export interface Outcome extends Problems {
  id: string;
  server: ServerKind;
  label: string;
  serverExitCode: number | null;
  skipped?: string;
  failed?: string;
}

/** One row of the table and of the JSON `scenarios` list. */
export interface LoadResult extends Outcome {
  scenario: string;
  description: string;
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
  /**
   * The slowest reply in the window, or the age of the oldest request still
   * unanswered at the window's end if that is longer (a starved connection).
   */
  maxMs: number;
  /** The slowest reply over the median one. */
  maxOverMedian: number;
  /** Fewest replies any connection got in the window over the median count. */
  leastServedOverMedian: number;
  /** Server VmRSS before the load (after start-up) and its peak by the end. */
  rssStartKiB: number;
  peakRssKiB: number;
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
  stalledConnections: number;
  /** What the server wrote to stderr after its listening line (at --log-level warning). */
  serverStderr: string[];
}

/** One row of the JSON `idle` list. */
export interface IdleResult extends Outcome {
  description: string;
  connections: number;
  connected: number;
  rssBeforeKiB: number;
  rssHeldKiB: number;
  rssAfterCloseKiB: number;
  kibPerConnection: number;
  connectS: number;
  serverCpuWhileHeld: number;
}

/** A result of scenario `id` on server `kind` before anything is measured. */
export function outcome(id: string, kind: ServerKind): Outcome {
  return {
    id,
    server: kind,
    label: SERVERS[kind].label,
    serverExitCode: null,
    errors: 0,
    errorSamples: [],
    mismatches: 0,
    mismatchSamples: [],
  };
}

/** Records why the scenario failed and says so on stderr. */
export function markFailed(result: Outcome, error: unknown): void {
  result.failed = (error as Error).message;
  progress(`${result.id}: FAILED: ${result.failed}`);
}

/** What makes `result` a failure of the run: its failure, errors and mismatches. */
export function outcomeFailures(result: Outcome): string[] {
  return [
    ...(result.failed ? [`${result.id}: ${result.failed}`] : []),
    ...(result.errors ? [`${result.id}: ${result.errors} errors`] : []),
    ...(result.mismatches
      ? [`${result.id}: ${result.mismatches} mismatches`]
      : []),
  ];
}

/**
 * Starts the scenario's server, or records why it was skipped (a tool not
 * installed, a `--workers` value the server refuses) or failed.
 */
export async function start(
  spec: ServerSpec,
  result: Outcome,
  settings: Settings,
): Promise<Started | undefined> {
  const reason = await whyNot(spec.kind);
  if (reason !== undefined) {
    result.skipped = reason;
    progress(`${result.id}: skipped: ${reason}`);
    return undefined;
  }
  try {
    return await startServer(spec, settings.calc);
  } catch (error) {
    if (error instanceof ServerExited && spec.workers !== undefined) {
      result.skipped = error.firstLine;
      progress(`${result.id}: skipped: ${error.firstLine}`);
    } else {
      markFailed(result, error);
    }
    return undefined;
  }
}

/**
 * Runs `body` against a started server and copies the problems it returns
 * into `result`. The body puts each generator it opens in `generators`, so
 * that they are ended even when it throws.
 */
async function measureOn(
  server: ServerChild,
  result: Outcome,
  body: (generators: LoadWorker[]) => Promise<Problems>,
): Promise<void> {
  const generators: LoadWorker[] = [];
  try {
    const problems = await body(generators);
    result.errors = problems.errors;
    result.mismatches = problems.mismatches;
    result.errorSamples = problems.errorSamples;
    result.mismatchSamples = problems.mismatchSamples;
  } catch (error) {
    markFailed(result, error);
  } finally {
    for (const g of generators) g.terminate();
    result.serverExitCode = await stopServer(server);
  }
}

/** Runs one load scenario; a failure is recorded in the result, never thrown. */
export async function runLoad(
  scenario: LoadScenario,
  settings: Settings,
): Promise<LoadResult> {
  const { kind } = scenario.server;
  const result: LoadResult = {
    ...outcome(scenario.id, kind),
    scenario: scenario.scenario,
    description: scenario.description,
    serverWorkers: scenario.server.workers ?? null,
    serverCpus: placement.pinned ? scenario.server.cpus : "unpinned",
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
    maxOverMedian: NaN,
    leastServedOverMedian: NaN,
    rssStartKiB: NaN,
    peakRssKiB: NaN,
    generatorLoopLagP99Ms: NaN,
    generatorLoopLagMaxMs: NaN,
    serverCpu: NaN,
    generatorCpu: NaN,
    coreBusy: [],
    interruptCpu: NaN,
    otherCpu: NaN,
    tcp: null,
    stalledConnections: 0,
    serverStderr: [],
  };
  progress(
    `${scenario.id}: ${scenario.description} (${result.label}, ${scenario.connections} conns, depth ${scenario.depth})`,
  );
  const started = await start(scenario.server, result, settings);
  if (!started) return result;
  const server = started.child;
  await measureOn(server, result, async (generators) => {
    if (placement.pinned) {
      progress(
        `${scenario.id}: server pid ${server.pid} on CPUs ${await allowedCpus(
          server.pid,
        )}`,
      );
    }
    const tree = await processTree(server.pid);
    result.rssStartKiB = (await rssKiBOfTree(tree)).now;
    const speaks = SERVERS[kind].speaks;
    const opened = await openConnections({
      host: server.host,
      port: server.port,
      tlsCa: started.tlsCa,
      connections: scenario.connections,
      depth: scenario.depth,
      pool: expectedFrom(speaks, scenario.pool),
      welcome: speaks === "calc" ? CALC_WELCOME : null,
      workers: settings.clientWorkers,
    }, generators);
    result.connected = opened.connected;

    for (const g of generators) g.post({ type: "run" });
    await pause(scenario.warmupS * 1000);
    const start = await cpuSample(tree);
    for (const g of generators) g.post({ type: "measure" });
    await pause(scenario.durationS * 1000);
    for (const g of generators) g.post({ type: "stop", drainMs: DRAIN_MS });
    const end = await cpuSample(tree);
    assertStillRunning(server);
    result.peakRssKiB = (await rssKiBOfTree(tree)).peak;

    const totals = await collectResults(generators, DRAIN_MS, opened.problems);
    const seconds = (end.at - start.at) / 1000;
    const { histogram, loopLag } = totals;
    result.measuredS = seconds;
    result.lines = totals.lines;
    result.linesPerS = totals.lines / seconds;
    result.requestBytesPerS = totals.bytesOut / seconds;
    result.replyBytesPerS = totals.bytesIn / seconds;
    result.p50Ms = quantile(histogram, 0.5) / 1000;
    result.p99Ms = quantile(histogram, 0.99) / 1000;
    result.maxMs = Math.max(histogram.maxUs / 1000, totals.oldestUnansweredMs);
    result.maxOverMedian = result.maxMs / result.p50Ms;
    result.leastServedOverMedian = leastServedOverMedian(totals.perConnection);
    result.stalledConnections = totals.stalled;
    result.generatorLoopLagP99Ms = quantile(loopLag, 0.99) / 1000;
    result.generatorLoopLagMaxMs = loopLag.maxUs / 1000;
    const cpu = cpuShares(start, end, seconds);
    result.serverCpu = cpu.server;
    result.generatorCpu = cpu.self;
    result.coreBusy = coreBusy(start, end);
    result.linesPerServerCpuS = result.linesPerS / result.serverCpu;
    result.tcp = tcpDelta(start.tcp, end.tcp);
    result.interruptCpu = cpu.interrupts;
    result.otherCpu = cpu.other;
    return totals;
  });
  result.serverStderr = stderrAfterListening(server);
  if (result.failed) return result;
  const pct = (f: number) => `${Math.round(f * 100)}%`;
  progress(
    `${scenario.id}: ${Math.round(result.linesPerS)} lines/s, p50 ${
      result.p50Ms.toFixed(2)
    } ms, max ${result.maxMs.toFixed(1)} ms, least-served/median ${
      result.leastServedOverMedian.toFixed(2)
    }, server CPU ${pct(result.serverCpu)}, generator CPU ${
      pct(result.generatorCpu)
    }, errors ${result.errors}, mismatches ${result.mismatches}`,
  );
  return result;
}

/**
 * The idle scenario for one server: how much memory a connection costs when
 * it only holds its welcome. RSS is read before connecting, while every
 * connection is held and after they close; each read follows a settle pause
 * so the server has finished the work the previous step gave it. Never
 * throws; `cannotRun` says why it must not start (too few file descriptors).
 */
export async function runIdle(
  kind: ServerKind,
  settings: Settings,
  cannotRun?: string,
): Promise<IdleResult> {
  const connections = settings.idleConnections;
  const result: IdleResult = {
    ...outcome(`d-${kind}`, kind),
    description: "RSS per idle connection",
    connections,
    connected: 0,
    rssBeforeKiB: 0,
    rssHeldKiB: 0,
    rssAfterCloseKiB: 0,
    kibPerConnection: NaN,
    connectS: 0,
    serverCpuWhileHeld: NaN,
  };
  if (cannotRun) {
    result.failed = cannotRun;
    return result;
  }
  progress(`${result.id}: holding ${connections} idle connections`);
  const started = await start({ kind, cpus: SERVER_CPU }, result, settings);
  if (!started) return result;
  const server = started.child;
  await measureOn(server, result, async (generators) => {
    await pause(300);
    let tree = await processTree(server.pid);
    result.rssBeforeKiB = (await rssKiBOfTree(tree)).now;
    const began = performance.now();
    const speaks = SERVERS[kind].speaks;
    const opened = await openConnections({
      host: server.host,
      port: server.port,
      tlsCa: started.tlsCa,
      connections,
      depth: 0,
      // One line per connection when the server sends no welcome line.
      pool: expectedFrom(speaks, fairnessPool()),
      welcome: speaks === "calc" ? CALC_WELCOME : null,
      workers: settings.clientWorkers,
    }, generators);
    result.connectS = (performance.now() - began) / 1000;
    result.connected = opened.connected;
    await pause(SETTLE_MS);
    tree = await processTree(server.pid);
    const start = await cpuSample(tree);
    await pause(SETTLE_MS);
    const end = await cpuSample(tree);
    assertStillRunning(server);
    result.serverCpuWhileHeld = (end.server - start.server) / ticksPerSecond /
      ((end.at - start.at) / 1000);
    result.rssHeldKiB = (await rssKiBOfTree(tree)).now;
    await closeIdle(generators, opened.problems);
    await pause(SETTLE_MS);
    result.rssAfterCloseKiB = (await rssKiBOfTree(tree)).now;
    result.kibPerConnection = result.connected > 0
      ? (result.rssHeldKiB - result.rssBeforeKiB) / result.connected
      : NaN;
    return opened.problems;
  });
  if (result.failed) return result;
  progress(
    `${result.id}: ${result.connected} held, RSS ${result.rssBeforeKiB} -> ${result.rssHeldKiB} KiB, ${
      result.kibPerConnection.toFixed(1)
    } KiB/conn`,
  );
  return result;
}

/**
 * The load scenarios (a, b, c and w): a fresh server, generator workers that
 * keep `depth` lines in flight on every connection, a warm-up, then a fixed
 * measuring window. CPU ticks are read at the window's edges, so throughput
 * and CPU shares cover exactly the same interval.
 *
 * @module
 */
import { addProblems, connectGenerators } from "./generators.ts";
import {
  type LatencyHistogram,
  merge,
  newHistogram,
  quantile,
} from "./histogram.ts";
import {
  coreBusy,
  cpuSample,
  GENERATOR_CPU,
  placement,
  ticksPerSecond,
} from "./machine.ts";
import type { Options } from "./options.ts";
import {
  allowedCpus,
  processTree,
  type ServerChild,
  ServerExited,
  type TcpCounters,
  tcpDelta,
} from "./proc.ts";
import { pct, progress } from "./report.ts";
import { markFailed, measureOn } from "./scenario.ts";
import {
  assertStillRunning,
  startServer,
  stderrAfterListening,
} from "./servers.ts";
import { sleep } from "./timing.ts";
import type { Exchange, Target } from "./traffic.ts";

const DRAIN_MS = 2000;

/** One row of the plan: which server, where, and how much load. */
export interface LoadScenario {
  id: string;
  scenario: string;
  description: string;
  target: Target;
  workers?: number;
  cpus: string;
  connections: number;
  depth: number;
}

/** One row of the table and of the JSON `scenarios` list. */
export interface LoadResult {
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

/** Runs one load scenario; a failure is recorded in the result, never thrown. */
export async function runLoad(
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
      markFailed(result, error);
    }
    return result;
  }
  await measureOn(server, result, async (generators) => {
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
    generators.push(...opened.generators);
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
    assertStillRunning(server);

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
    return problems;
  });
  result.serverStderr = stderrAfterListening(server);
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

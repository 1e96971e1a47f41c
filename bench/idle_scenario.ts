/**
 * The idle-memory scenario (d): how much server memory one connection costs
 * when it only holds its welcome. RSS is read before connecting, while every
 * connection is held and after they close; each read follows a settle pause
 * so the server has finished the work the previous step gave it.
 *
 * @module
 */
import { addProblems, connectGenerators } from "./generators.ts";
import { cpuSample, SERVER_CPU, ticksPerSecond } from "./machine.ts";
import type { Options } from "./options.ts";
import { processTree, rssKiBOfTree, type ServerChild } from "./proc.ts";
import { progress } from "./report.ts";
import { markFailed, measureOn } from "./scenario.ts";
import { assertStillRunning, startServer } from "./servers.ts";
import { sleep } from "./timing.ts";
import type { Exchange } from "./traffic.ts";

const SETTLE_MS = 1000;

/** The JSON `idle` object. */
export interface IdleResult {
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

/**
 * Runs the idle scenario; a failure is recorded in the result, never thrown.
 * `cannotRun` says why it must not start (too few file descriptors).
 */
export async function runIdle(
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
    markFailed(result, error);
    return result;
  }
  await measureOn(server, result, async (generators) => {
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
    generators.push(...opened.generators);
    result.connectS = (performance.now() - started) / 1000;
    result.connected = opened.connected;
    await sleep(SETTLE_MS);
    tree = await processTree(server.pid);
    const start = await cpuSample(tree);
    await sleep(SETTLE_MS);
    const end = await cpuSample(tree);
    assertStillRunning(server);
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
    return problems;
  });
  if (result.failed) return result;
  progress(
    `d-calc: ${result.connected} held, RSS ${result.rssBeforeKiB} -> ${result.rssHeldKiB} KiB, ${
      result.kibPerConnection.toFixed(1)
    } KiB/conn`,
  );
  return result;
}

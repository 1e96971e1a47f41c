/**
 * Where the benchmark's processes run and how their CPU time is read. The
 * server goes on CPU 0 and the load generator (this process and its workers)
 * on CPU 1, so neither steals the other's core; a machine that cannot do
 * that runs unpinned and the report says why.
 *
 * @module
 */
import {
  clockTicks,
  type CpuSnapshot,
  cpuSnapshot,
  hasTaskset,
  pinSelf,
} from "./proc.ts";

export const SERVER_CPU = "0";
export const GENERATOR_CPU = "1";
export const SHARED_CPUS = "0,1";

export interface Placement {
  pinned: boolean;
  /** Why not pinned, when not. */
  note: string;
}

// Set once by the functions below before the first scenario; exported
// bindings are live, so the modules that import them see these values.
export let placement: Placement = { pinned: false, note: "" };
export let ticksPerSecond = 100;

/** Reads the clock rate that /proc CPU times are counted in. */
export async function readClockTicks(): Promise<void> {
  ticksPerSecond = await clockTicks();
}

/** Pins this process to the generator CPU when the machine allows it, and records the outcome. */
export async function placeProcesses(processors: number): Promise<void> {
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
}

/** The `taskset` prefix that places a server on `cpus` (none when unpinned). */
export function pinPrefix(cpus: string): string[] {
  return placement.pinned ? ["taskset", "-c", cpus] : [];
}

export async function nproc(): Promise<number> {
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
export async function cpuSample(tree: number[]) {
  const before = performance.now();
  const snapshot: CpuSnapshot = await cpuSnapshot([...tree, Deno.pid]);
  const at = (before + performance.now()) / 2;
  const self = snapshot.processTicks.pop()!;
  const server = snapshot.processTicks.reduce((a, b) => a + b, 0);
  return { at, server, self, cores: snapshot.cores, tcp: snapshot.tcp };
}

/** Busy share of each core between two samples (1.0 = fully busy). */
export function coreBusy(
  start: { cores: CpuSnapshot["cores"] },
  end: { cores: CpuSnapshot["cores"] },
): number[] {
  return end.cores.map((core, i) => {
    const total = core.total - (start.cores[i]?.total ?? 0);
    return total > 0 ? (core.busy - start.cores[i].busy) / total : NaN;
  });
}

/**
 * The machine the bench runs on: where its processes run and what Linux says
 * about them. The server goes on CPU 0 and the load generator (this process
 * and its workers) on CPU 1, so neither steals the other's core; a machine
 * that cannot do that runs unpinned and the report says why. CPU time,
 * resident memory, TCP counters and the open-file limit come from /proc, read
 * at the edges of each measuring window. Progress lines go to stderr, so that
 * stdout holds only the report.
 *
 * @module
 */

/** A progress line on stderr, so stdout stays machine-readable. */
export function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

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

/**
 * CPU used between two {@linkcode cpuSample}s `seconds` apart, in cores:
 * the server's tree, this process, interrupts, and everything else (all
 * cores' busy time but the server's and this process's).
 */
export function cpuShares(
  start: CpuSample,
  end: CpuSample,
  seconds: number,
): { server: number; self: number; interrupts: number; other: number } {
  const cores = (ticks: number) => ticks / ticksPerSecond / seconds;
  const sum = (sample: CpuSample, key: "busy" | "interrupts") =>
    sample.cores.reduce((total, core) => total + core[key], 0);
  const server = cores(end.server - start.server);
  const self = cores(end.self - start.self);
  return {
    server,
    self,
    interrupts: cores(sum(end, "interrupts") - sum(start, "interrupts")),
    other: Math.max(
      0,
      cores(sum(end, "busy") - sum(start, "busy")) - server - self,
    ),
  };
}

/** What {@linkcode cpuSample} reads. */
export type CpuSample = Awaited<ReturnType<typeof cpuSample>>;

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

/** Clock ticks per second for /proc/PID/stat times (`getconf CLK_TCK`, normally 100). */
export async function clockTicks(): Promise<number> {
  try {
    const { stdout } = await new Deno.Command("getconf", {
      args: ["CLK_TCK"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const ticks = Number(new TextDecoder().decode(stdout).trim());
    return ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

/**
 * Reads small /proc files through `grep` in a subprocess: Deno's permission
 * model wants --allow-all for any read under /proc, while the bench task only
 * has --allow-run and --allow-read. Returns file -> text; a missing file (a
 * process that is gone) is simply absent. One spawn costs a few milliseconds,
 * so it is done only at window boundaries.
 */
export async function readProcFiles(
  paths: string[],
  { glob = false } = {},
): Promise<Map<string, string>> {
  const command = glob
    ? new Deno.Command("sh", {
      args: ["-c", `grep -s -H '' ${paths.join(" ")}`],
      stdout: "piped",
      stderr: "null",
    })
    : new Deno.Command("grep", {
      args: ["-s", "-H", "", ...paths],
      stdout: "piped",
      stderr: "null",
    });
  const { stdout } = await command.output();
  const files = new Map<string, string>();
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon);
    const previous = files.get(path);
    const text = line.slice(colon + 1);
    files.set(path, previous === undefined ? text : `${previous}\n${text}`);
  }
  return files;
}

/** Fields of a /proc/PID/stat line after `(comm)`: index 0 is field 3 (state). */
function statFields(stat: string | undefined): string[] | undefined {
  return stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** CPU time of processes and of each core, read at one moment. */
export interface CpuSnapshot {
  /** utime + stime (all threads) per pid, in clock ticks; 0 for a process that is gone. */
  processTicks: number[];
  /** Per core (cpu0, cpu1, ...): busy, interrupt (irq + softirq) and total ticks from /proc/stat. */
  cores: { busy: number; interrupts: number; total: number }[];
  /** Machine-wide TCP counters that explain latency tails not caused by a process. */
  tcp: TcpCounters;
}

/** Selected counters from /proc/net/snmp (Tcp), /proc/net/netstat (TcpExt) and /proc/net/softnet_stat. */
export interface TcpCounters {
  /** Segments retransmitted. */
  RetransSegs: number;
  /** Handshakes dropped because a listen (accept) queue was full. */
  ListenOverflows: number;
  /** Retransmission timeouts that fired. */
  TCPTimeouts: number;
  /**
   * Packets dropped because a CPU's input backlog was full (second column
   * of /proc/net/softnet_stat, all CPUs). Loopback traffic passes through
   * that backlog (`net.core.netdev_max_backlog` packets per CPU): a burst of
   * writes larger than it loses packets, which then wait for a
   * retransmission timeout (200 ms or more).
   */
  BacklogDrops: number;
}

const TCP_COUNTERS = ["RetransSegs", "ListenOverflows", "TCPTimeouts"] as const;

/** Reads `Name: key key ...` / `Name: value value ...` pairs of lines. */
function netCounters(text: string | undefined): Map<string, number> {
  const counters = new Map<string, number>();
  const lines = (text ?? "").split("\n");
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    for (let k = 1; k < keys.length; k++) {
      counters.set(keys[k], Number(values[k]));
    }
  }
  return counters;
}

/** `end - start` for each TCP counter. */
export function tcpDelta(start: TcpCounters, end: TcpCounters): TcpCounters {
  return {
    RetransSegs: end.RetransSegs - start.RetransSegs,
    ListenOverflows: end.ListenOverflows - start.ListenOverflows,
    TCPTimeouts: end.TCPTimeouts - start.TCPTimeouts,
    BacklogDrops: end.BacklogDrops - start.BacklogDrops,
  };
}

/**
 * Process CPU times and per-core busy times in one read. Core busy time
 * includes softirq, where the kernel does most loopback TCP work: that work
 * belongs to no process, so a core can be saturated while the process on it
 * shows well under 100 %.
 */
export async function cpuSnapshot(pids: number[]): Promise<CpuSnapshot> {
  const files = await readProcFiles([
    ...pids.map((pid) => `/proc/${pid}/stat`),
    "/proc/stat",
    "/proc/net/snmp",
    "/proc/net/netstat",
    "/proc/net/softnet_stat",
  ]);
  const processTicks = pids.map((pid) => {
    const fields = statFields(files.get(`/proc/${pid}/stat`));
    return fields ? Number(fields[11]) + Number(fields[12]) : 0;
  });
  const cores: CpuSnapshot["cores"] = [];
  for (const line of (files.get("/proc/stat") ?? "").split("\n")) {
    const match = line.match(/^cpu(\d+) (.*)$/);
    if (!match) continue;
    // user nice system idle iowait irq softirq steal (guest is inside user).
    const t = match[2].trim().split(/\s+/).slice(0, 8).map(Number);
    const total = t.reduce((a, b) => a + b, 0);
    cores[Number(match[1])] = {
      busy: total - t[3] - t[4],
      interrupts: t[5] + t[6],
      total,
    };
  }
  const net = new Map([
    ...netCounters(files.get("/proc/net/snmp")),
    ...netCounters(files.get("/proc/net/netstat")),
  ]);
  const backlogDrops = (files.get("/proc/net/softnet_stat") ?? "").split("\n")
    .reduce((sum, line) => sum + (parseInt(line.split(" ")[1], 16) || 0), 0);
  const tcp = {
    ...Object.fromEntries(
      TCP_COUNTERS.map((name) => [name, net.get(name) ?? 0]),
    ),
    BacklogDrops: backlogDrops,
  } as unknown as TcpCounters;
  return { processTicks, cores, tcp };
}

/** `pid` and every process descending from it (a server may fork workers). */
export async function processTree(pid: number): Promise<number[]> {
  const files = await readProcFiles(["/proc/[0-9]*/stat"], { glob: true });
  const parentOf = new Map<number, number>();
  for (const [path, stat] of files) {
    const fields = statFields(stat);
    if (fields) parentOf.set(Number(path.split("/")[2]), Number(fields[1]));
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [child, parent] of parentOf) {
      if (parent === tree[i]) tree.push(child);
    }
  }
  return tree;
}

/**
 * Resident memory of a process tree in KiB, summed over its processes (a
 * process that is gone counts 0): `now` is VmRSS, `peak` is VmHWM, the
 * highest VmRSS each process has had since it started, and `file` the
 * file-backed part of `now` (RssFile: pages of executables and libraries).
 */
export async function rssKiBOfTree(
  pids: number[],
): Promise<{ now: number; peak: number; file: number }> {
  const files = await readProcFiles(pids.map((pid) => `/proc/${pid}/status`));
  const sum = { now: 0, peak: 0, file: 0 };
  for (const status of files.values()) {
    sum.now += Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0);
    sum.peak += Number(status.match(/^VmHWM:\s+(\d+) kB/m)?.[1] ?? 0);
    sum.file += Number(status.match(/^RssFile:\s+(\d+) kB/m)?.[1] ?? 0);
  }
  return sum;
}

/** Resets VmHWM of each process to its current RSS (Linux clear_refs 5). */
export async function resetPeaks(pids: number[]): Promise<void> {
  await new Deno.Command("sh", {
    args: [
      "-c",
      'for p in "$@"; do echo 5 > "/proc/$p/clear_refs"; done',
      "sh",
      ...pids.map(String),
    ],
    stdout: "null",
    stderr: "null",
  }).output();
}

/** Soft and hard open-file limits of a process. */
export async function fileLimit(
  pid: number,
): Promise<{ soft: number; hard: number }> {
  const files = await readProcFiles([`/proc/${pid}/limits`]);
  const limits = files.get(`/proc/${pid}/limits`) ?? "";
  const match = limits.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  const parse = (v: string | undefined) =>
    v === undefined ? 0 : v === "unlimited" ? Infinity : Number(v);
  return { soft: parse(match?.[1]), hard: parse(match?.[2]) };
}

/** The `Cpus_allowed_list` of a process, as the kernel reports it. */
export async function allowedCpus(pid: number): Promise<string> {
  const files = await readProcFiles([`/proc/${pid}/status`]);
  const status = files.get(`/proc/${pid}/status`) ?? "";
  return status.match(/^Cpus_allowed_list:\s+(\S+)/m)?.[1] ?? "?";
}

/** The CPU model name from /proc/cpuinfo. */
export async function cpuModel(): Promise<string> {
  const files = await readProcFiles(["/proc/cpuinfo"]);
  const info = files.get("/proc/cpuinfo") ?? "";
  return info.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "?";
}

async function quietly(command: string, args: string[]): Promise<boolean> {
  try {
    const { code } = await new Deno.Command(command, {
      args,
      stdout: "null",
      stderr: "null",
    }).output();
    return code === 0;
  } catch {
    return false; // Not installed.
  }
}

/**
 * Raises this process's soft open-file limit to `need` (and the hard limit if
 * we may) with `prlimit --pid`; children started later inherit it. Returns the
 * limit in force afterwards.
 */
export async function raiseOwnFileLimit(need: number): Promise<number> {
  const { soft, hard } = await fileLimit(Deno.pid);
  if (soft >= need) return soft;
  const pid = String(Deno.pid);
  const target = hard >= need ? `${need}:${hard}` : `${need}:${need}`;
  if (!await quietly("prlimit", ["--pid", pid, `--nofile=${target}`])) {
    await quietly("prlimit", ["--pid", pid, `--nofile=${hard}:${hard}`]);
  }
  return (await fileLimit(Deno.pid)).soft;
}

/** Whether `taskset` is installed. */
export function hasTaskset(): Promise<boolean> {
  return quietly("taskset", ["-V"]);
}

/** Pins every thread of this process (and the threads and children it starts later) to `cpus`. */
export function pinSelf(cpus: string): Promise<boolean> {
  return quietly("taskset", ["-a", "-p", "-c", cpus, String(Deno.pid)]);
}

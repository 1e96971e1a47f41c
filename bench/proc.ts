/**
 * What the benchmark needs from Linux and from its child servers: CPU time and
 * resident memory from /proc, the open-file limit, CPU pinning with `taskset`,
 * and a server subprocess whose stderr is drained for as long as it runs.
 *
 * @module
 */

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

/** Selected counters from /proc/net/snmp (Tcp) and /proc/net/netstat (TcpExt). */
export interface TcpCounters {
  /** Segments retransmitted. */
  RetransSegs: number;
  /** Handshakes dropped because a listen (accept) queue was full. */
  ListenOverflows: number;
  /** Retransmission timeouts that fired. */
  TCPTimeouts: number;
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
  const tcp = Object.fromEntries(
    TCP_COUNTERS.map((name) => [name, net.get(name) ?? 0]),
  ) as unknown as TcpCounters;
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

/** VmRSS in KiB summed over a process tree (0 for a process that is gone). */
export async function rssKiBOfTree(pids: number[]): Promise<number> {
  const files = await readProcFiles(pids.map((pid) => `/proc/${pid}/status`));
  let sum = 0;
  for (const status of files.values()) {
    const match = status.match(/^VmRSS:\s+(\d+) kB/m);
    if (match) sum += Number(match[1]);
  }
  return sum;
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

/**
 * The server's own listening line: not `admin listening on`, and not an
 * inspector's `Debugger listening on ws://...` (with --deno-flags --inspect).
 */
export const LISTENING =
  /(?<!admin )listening on ([\w.-]+|\[[0-9a-fA-F:.]+\]):(\d+)/;
const STDERR_TAIL_CHARS = 16384;

/**
 * A server subprocess. Its stderr is read until it ends (so the server never
 * blocks on a full pipe); the last 16 KiB are kept for diagnostics.
 */
export class ServerChild {
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  host = "";
  port = 0;
  #stderr = "";
  #stderrDone: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  exited: Deno.CommandStatus | undefined;

  constructor(argv: string[], cwd: string) {
    this.child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.pid = this.child.pid;
    this.#stderrDone = this.#drain(this.child.stderr);
    this.#status = this.child.status.then((s) => this.exited = s);
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        this.#stderr += decoder.decode(chunk, { stream: true });
        if (this.#stderr.length > 2 * STDERR_TAIL_CHARS) {
          this.#stderr = this.#stderr.slice(-STDERR_TAIL_CHARS);
        }
      }
    } catch {
      // The pipe broke: the process is gone.
    }
  }

  /** The tail of what the server wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Waits for `listening on HOST:PORT`. Rejects with the server's first stderr
   * line if it exits first, or on timeout.
   */
  async listening(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const match = this.#stderr.match(LISTENING);
      if (match) {
        this.host = match[1];
        this.port = Number(match[2]);
        return;
      }
      if (this.exited) {
        await this.#stderrDone;
        if (LISTENING.test(this.#stderr)) continue;
        const first = this.#stderr.split("\n").find((l) => l.trim() !== "");
        throw new ServerExited(this.exited.code, first ?? "(no stderr)");
      }
      if (Date.now() > deadline) {
        throw new Error(
          `Server did not print "listening on" within ${timeoutMs} ms; stderr: ${
            this.#stderr.slice(-500)
          }`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; always reaps the process. Returns its exit code. */
  async stop(graceMs = 3000): Promise<number> {
    const send = (signal: Deno.Signal) => {
      if (this.exited) return;
      try {
        this.child.kill(signal);
      } catch {
        // It exited between the check and the kill.
      }
    };
    send("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      this.#status.then(() => false),
      new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(true), graceMs)
      ),
    ]);
    clearTimeout(timer);
    if (timedOut) send("SIGKILL");
    const status = await this.#status;
    // A forked helper that outlived the server could hold the pipe open.
    await Promise.race([
      this.#stderrDone,
      new Promise((resolve) => timer = setTimeout(resolve, 2000)),
    ]);
    clearTimeout(timer);
    return status.code;
  }
}

/** The server ended before listening (e.g. it rejected an option). */
export class ServerExited extends Error {
  constructor(readonly code: number, readonly firstLine: string) {
    super(`Server exited with code ${code}: ${firstLine}`);
  }
}

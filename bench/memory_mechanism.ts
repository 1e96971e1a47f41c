/**
 * A stand-alone reproduction of where a Deno server's memory goes when
 * clients stream bytes at it through `node:net`, and of what changes it. It
 * imports nothing from this repository: it and `memory_discard_server.mjs`
 * (a bare discard server that runs under Deno and under Node.js) are all an
 * upstream report needs.
 *
 * For each variant, two loads, each on a fresh server: 100 clients that each
 * stream 40 MB without a newline, all at once, then one client streaming
 * 150 MB. Each client writes its bytes, half-closes, and waits for the
 * server to close (so the server has read everything). The server's resident
 * memory (VmRSS; the peak is VmHWM after resetting it through
 * /proc/PID/clear_refs) and its `process.memoryUsage().external` are read
 * before the load, at its peak, when it ends, and 10 and 30 s later while
 * the server idles. The clients run in this process, the server in its own.
 *
 * Variants (`--variants a,b,...`, default a,b,c,d,e; `all` for every one):
 *
 *   a  node:net, `data` events (the default read path)         Deno
 *   b  node:net, Node's `onread` option: one shared buffer      Deno
 *   c  Deno.listen, `conn.read` into one buffer per connection  Deno
 *   d  a + a full collection every 100 ms, `gc` got at run time Deno
 *   e  a, the same file                                         Node.js
 *   f  d + glibc malloc_trim(0) after each collection (FFI)     Deno --allow-ffi
 *   g  a + v8.setFlagsFromString("--max-semi-space-size=1")     Deno
 *   h  a with MALLOC_ARENA_MAX=2 in the environment             Deno
 *   i  d with MALLOC_TRIM_THRESHOLD_=0 in the environment       Deno
 *   j  d with MALLOC_MMAP_THRESHOLD_=65536 in the environment   Deno
 *
 * f, h, i and j need something the user of a program sets (a permission, the
 * environment): they explain the mechanism, they are not a fix.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read bench/memory_mechanism.ts
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read bench/memory_mechanism.ts --variants all
 * ```
 *
 * Options: `--variants LIST`, `--clients N` (100), `--mb N` (40 per client),
 * `--big-mb N` (150), `--rest S` (30), `--age S` (1: seconds from the
 * server's start to the load; V8 starts its memory reducer, which collects
 * a few seconds after activity stops, only once the process is 30 s old).
 * About 75 s per variant with the defaults; it stops by itself past a time
 * budget.
 *
 * @module
 */

const SERVER_FILE = new URL("./memory_discard_server.mjs", import.meta.url)
  .pathname;
const MiB = 1024 * 1024;
const CHUNK = new Uint8Array(MiB).fill(0x78); // "xxx...": never a newline
const LOAD_TIMEOUT_MS = 180_000;
const SAMPLE_MS = 200;

interface Variant {
  id: string;
  what: string;
  runtime: "deno" | "node";
  /** Arguments of memory_discard_server.mjs. */
  args: string[];
  denoFlags?: string[];
  env?: Record<string, string>;
}

const DATA = ["--read", "data"];
const GC = [...DATA, "--gc-every", "100"];
const onDeno = (
  id: string,
  what: string,
  args: string[],
  more: Partial<Variant> = {},
): Variant => ({ id, what, runtime: "deno", args, ...more });
const VARIANTS: Variant[] = [
  onDeno("a", "node:net, data events", DATA),
  onDeno("b", "node:net, onread, one shared buffer", ["--read", "onread"]),
  onDeno("c", "Deno.listen, conn.read into one buffer per conn", [
    "--read",
    "deno",
  ]),
  onDeno(
    "d",
    "node:net, data events + gc() every 100 ms (got at run time)",
    GC,
  ),
  { id: "e", what: "node:net, data events", runtime: "node", args: DATA },
  onDeno("f", "d + malloc_trim(0) after each gc (FFI)", [...GC, "--trim"], {
    denoFlags: ["--allow-ffi"],
  }),
  onDeno(
    "g",
    'a + v8.setFlagsFromString("--max-semi-space-size=1")',
    [...DATA, "--v8-flags-at-run-time", "--max-semi-space-size=1"],
  ),
  onDeno("h", "a, env MALLOC_ARENA_MAX=2", DATA, {
    env: { MALLOC_ARENA_MAX: "2" },
  }),
  onDeno("i", "d, env MALLOC_TRIM_THRESHOLD_=0", GC, {
    env: { MALLOC_TRIM_THRESHOLD_: "0" },
  }),
  onDeno("j", "d, env MALLOC_MMAP_THRESHOLD_=65536", GC, {
    env: { MALLOC_MMAP_THRESHOLD_: "65536" },
  }),
];

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(name);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

/** What the server says about itself (`process.memoryUsage()` and more). */
interface Usage {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  bytesRead: number;
  connections: number;
}

/** One server process: start, ask for its memory, read /proc, stop. */
class DiscardServer {
  readonly child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stdout: ReadableStreamDefaultReader<string>;
  #pending = "";
  port = 0;
  runtime = "";

  constructor(variant: Variant) {
    const argv = variant.runtime === "node"
      ? ["node", SERVER_FILE, ...variant.args]
      : [
        Deno.execPath(),
        "run",
        "--allow-net=127.0.0.1",
        ...(variant.denoFlags ?? []),
        SERVER_FILE,
        ...variant.args,
      ];
    this.child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: variant.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.child.stdin.getWriter();
    this.#stdout = this.child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
  }

  /** Waits for `listening on HOST:PORT (RUNTIME)` on stderr. */
  async listening(): Promise<void> {
    const reader = this.child.stderr.pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    const timer = setTimeout(() => this.kill(), 20_000);
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`server ended: ${text.trim()}`);
        text += value;
        const match = text.match(/listening on [^:]+:(\d+) \((.+)\)/);
        if (match) {
          this.port = Number(match[1]);
          this.runtime = match[2];
          break;
        }
      }
    } finally {
      clearTimeout(timer);
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done);
    })().catch(() => {});
  }

  async usage(): Promise<Usage> {
    await this.#stdin.write(new TextEncoder().encode("m\n"));
    while (!this.#pending.includes("\n")) {
      const { value, done } = await this.#stdout.read();
      if (done) throw new Error("server closed stdout");
      this.#pending += value;
    }
    const at = this.#pending.indexOf("\n");
    const line = this.#pending.slice(0, at);
    this.#pending = this.#pending.slice(at + 1);
    return JSON.parse(line);
  }

  /** VmRSS and VmHWM from /proc (read by `cat`: Deno wants --allow-all for /proc). */
  async proc(): Promise<{ rss: number; peak: number }> {
    const { stdout } = await new Deno.Command("cat", {
      args: [`/proc/${this.child.pid}/status`],
      stdout: "piped",
    }).output();
    const text = new TextDecoder().decode(stdout);
    const kib = (key: string) =>
      Number(text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN);
    return { rss: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
  }

  /** Resets VmHWM to the current RSS, so the next peak is this load's. */
  async resetPeak(): Promise<void> {
    await new Deno.Command("sh", {
      args: ["-c", 'echo 5 > "/proc/$0/clear_refs"', `${this.child.pid}`],
    }).output();
  }

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  async stop(): Promise<void> {
    this.kill();
    await this.child.status;
    await this.#stdin.close().catch(() => {});
    await this.#stdout.cancel().catch(() => {});
  }
}

/** Streams `bytes` of `x` (no newline), half-closes, waits for the server's close. */
async function stream(port: number, bytes: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    let sent = 0;
    while (sent < bytes) {
      sent += await conn.write(CHUNK.subarray(0, Math.min(MiB, bytes - sent)));
    }
    await conn.closeWrite();
    const sink = new Uint8Array(1024);
    while (await conn.read(sink) !== null);
  } finally {
    conn.close();
  }
}

/** What one load did to one server. */
interface LoadResult {
  load: string;
  seconds: number;
  before: Usage;
  peakRss: number;
  peakExternal: number;
  atEnd: Usage;
  after10: Usage;
  after30: Usage;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measureLoad(
  variant: Variant,
  load: { label: string; clients: number; bytes: number },
  restS: number,
  ageS: number,
): Promise<{ result: LoadResult; runtime: string }> {
  const server = new DiscardServer(variant);
  try {
    await server.listening();
    await pause(ageS * 1000);
    const before = await server.usage();
    await server.resetPeak();
    let peakExternal = before.external;
    let streaming = true;
    const sampler = (async () => {
      while (streaming) {
        peakExternal = Math.max(peakExternal, (await server.usage()).external);
        await pause(SAMPLE_MS);
      }
    })();
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${load.label}: over ${LOAD_TIMEOUT_MS} ms`)),
        LOAD_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([
        Promise.all(
          Array.from(
            { length: load.clients },
            () => stream(server.port, load.bytes),
          ),
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
      streaming = false;
      await sampler;
    }
    const seconds = (performance.now() - started) / 1000;
    const atEnd = await server.usage();
    const { peak } = await server.proc();
    peakExternal = Math.max(peakExternal, atEnd.external);
    const expected = load.clients * load.bytes;
    if (atEnd.bytesRead !== expected) {
      throw new Error(`server read ${atEnd.bytesRead} of ${expected} bytes`);
    }
    await pause(Math.min(10, restS) * 1000);
    const after10 = await server.usage();
    await pause(Math.max(0, restS - 10) * 1000);
    const after30 = await server.usage();
    return {
      result: {
        load: load.label,
        seconds,
        before,
        peakRss: peak,
        peakExternal,
        atEnd,
        after10,
        after30,
      },
      runtime: server.runtime,
    };
  } finally {
    await server.stop();
  }
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(0);
}

function row(variant: Variant, runtime: string, r: LoadResult): string {
  const cells = [
    variant.id,
    variant.what,
    runtime.split(",")[0],
    r.load,
    mib(r.before.rss),
    `${mib(r.peakRss)} (+${mib(r.peakRss - r.before.rss)})`,
    mib(r.atEnd.rss),
    mib(r.after10.rss),
    `${mib(r.after30.rss)} (+${mib(r.after30.rss - r.before.rss)})`,
    mib(r.before.external),
    mib(r.peakExternal),
    mib(r.after10.external),
    mib(r.after30.external),
    mib(r.after30.heapUsed),
    r.seconds.toFixed(1),
  ];
  return `| ${cells.join(" | ")} |`;
}

const HEADER = [
  "| id | read path | runtime | load | RSS before | peak RSS | RSS at end | +10 s | +30 s | external before | external peak | external +10 s | external +30 s | heapUsed +30 s | load s |",
  "| -- | --------- | ------- | ---- | ---------- | -------- | ---------- | ----- | ----- | --------------- | ------------- | -------------- | -------------- | -------------- | ------ |",
];

if (import.meta.main) {
  const chosen = option("--variants", "a,b,c,d,e");
  const ids = chosen === "all"
    ? VARIANTS.map((v) => v.id)
    : chosen.split(",").map((s) => s.trim());
  const variants = ids.map((id) => {
    const found = VARIANTS.find((v) => v.id === id);
    if (!found) {
      console.error(`Unknown variant: received "${id}" (a to j, or all)`);
      Deno.exit(2);
    }
    return found;
  });
  const clients = Number(option("--clients", "100"));
  const mb = Number(option("--mb", "40"));
  const bigMb = Number(option("--big-mb", "150"));
  const restS = Number(option("--rest", "30"));
  const ageS = Number(option("--age", "1"));
  const loads = [
    { label: `${clients} x ${mb} MB`, clients, bytes: mb * 1e6 },
    { label: `1 x ${bigMb} MB`, clients: 1, bytes: bigMb * 1e6 },
  ];
  const budgetMs = variants.length * loads.length *
    (LOAD_TIMEOUT_MS + (restS + ageS) * 1000 + 30_000);
  const watchdog = setTimeout(() => {
    console.error(`over the ${budgetMs / 1000} s budget: stopping`);
    Deno.exit(1);
  }, budgetMs);

  console.log(
    `memory_mechanism: clients in Deno ${Deno.version.deno} (this process), each server in its own process, loaded ${ageS} s after its start; MiB`,
  );
  const rows: string[] = [];
  for (const variant of variants) {
    for (const load of loads) {
      console.error(`[${variant.id}] ${variant.what}: ${load.label}`);
      const { result, runtime } = await measureLoad(
        variant,
        load,
        restS,
        ageS,
      );
      const line = row(variant, runtime, result);
      console.error(line);
      rows.push(line);
    }
  }
  console.log([...HEADER, ...rows].join("\n"));
  clearTimeout(watchdog);
}

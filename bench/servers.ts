/**
 * Running the servers under test: each scenario starts a fresh one as a
 * subprocess on port 0, placed on its CPUs with `taskset`, waits for its
 * `listening on HOST:PORT` line, and stops it together with every helper
 * process it forked. Whatever is still running on the way out (normal end,
 * watchdog, Ctrl-C) is stopped and reaped by {@linkcode cleanUp}: a leftover
 * server would hold its port and skew the next run.
 *
 * The servers: lineserver (`server.ts` from the repository root, or
 * `--server FILE`), lineserver with TLS (a throwaway certificate), the
 * Node.js peer (`node_peer.mjs`, run by `node`), and the raw byte-echo
 * (`raw_echo_server.ts`) on `Deno.listen` and on `node:net`.
 *
 * @module
 */
import { pause, settleWithin } from "../src/deadline.ts";
import { pinPrefix, processTree } from "./machine.ts";
import type { Speaks } from "./traffic.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const START_TIMEOUT_MS = 30_000;

/** The servers the bench knows how to run. */
export type ServerKind =
  | "calc"
  | "calc-baseline"
  | "calc-tls"
  | "calc-echo"
  | "node-peer"
  | "node-peer-echo"
  | "echo-deno"
  | "echo-node";

/** How each server is named in the report and what it speaks. */
export const SERVERS: Record<ServerKind, { label: string; speaks: Speaks }> = {
  "calc": { label: "lineserver", speaks: "calc" },
  "calc-baseline": { label: "lineserver before", speaks: "calc" },
  "calc-tls": { label: "lineserver TLS", speaks: "calc" },
  "calc-echo": { label: "lineserver echo", speaks: "line-echo" },
  "node-peer": { label: "Node peer", speaks: "calc" },
  "node-peer-echo": { label: "Node peer echo", speaks: "line-echo" },
  "echo-deno": { label: "echo Deno.listen", speaks: "echo" },
  "echo-node": { label: "echo node:net", speaks: "echo" },
};

/** What to start and where. */
export interface ServerSpec {
  kind: ServerKind;
  /** `--workers N` for server.ts, or undefined to leave the default. */
  workers?: number;
  cpus: string;
}

/** How lineserver itself is started: which entry point, with which extra flags. */
export interface CalcOptions {
  /** The entry point, relative to the repository root. */
  server: string;
  /** Extra `deno run` flags (e.g. `--v8-flags=--prof,...`). */
  denoFlags: string[];
  /**
   * Another lineserver's entry point (an older checkout, say) measured
   * beside this one as `calc-baseline`, in the same run.
   */
  baseline?: string;
}

/** A running server and, for TLS, the certificate a client must trust. */
export interface Started {
  child: ServerChild;
  tlsCa: string | null;
}

/** Everything alive that must be ended on the way out. */
const live = {
  servers: new Set<ServerChild>(),
  certificateDir: undefined as string | undefined,
};

/** Stops (and reaps) every server still alive and removes the certificate. */
export async function cleanUp(): Promise<void> {
  await Promise.all([...live.servers].map((s) => s.stop(1000)));
  live.servers.clear();
  if (live.certificateDir !== undefined) {
    await run("rm", ["-rf", live.certificateDir]);
    live.certificateDir = undefined;
  }
}

/** Runs a tool; its exit code and stdout (an error if it is not installed). */
async function run(
  command: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout).trim(),
    stderr: text.decode(output.stderr).trim(),
  };
}

const missing = new Map<string, Promise<string | undefined>>();

/**
 * Why `kind` cannot run on this machine (`node` or `openssl` not on PATH),
 * or undefined when it can. Asked once per tool.
 */
export function whyNot(kind: ServerKind): Promise<string | undefined> {
  const tool = kind === "node-peer" || kind === "node-peer-echo"
    ? "node"
    : kind === "calc-tls"
    ? "openssl"
    : undefined;
  if (tool === undefined) return Promise.resolve(undefined);
  if (!missing.has(tool)) {
    missing.set(
      tool,
      run(tool, [tool === "node" ? "--version" : "version"]).then(
        ({ code }) => code === 0 ? undefined : `${tool} --version failed`,
        () => `${tool} is not on PATH`,
      ),
    );
  }
  return missing.get(tool)!;
}

/**
 * A throwaway self-signed certificate for 127.0.0.1, made once per run with
 * `openssl` in a fresh temporary directory (removed by {@linkcode cleanUp}).
 * The directory comes from `mktemp` and is removed with `rm`, so the bench
 * needs no write permission beyond its results file. CA:FALSE because
 * rustls refuses a CA certificate as a server's own.
 */
let certificate:
  | Promise<{ certFile: string; keyFile: string; certPem: string; dir: string }>
  | undefined;
function tlsCertificate() {
  certificate ??= (async () => {
    const made = await run("mktemp", ["-d", "-t", "lineserver-bench-XXXXXX"]);
    if (made.code !== 0) throw new Error(`mktemp failed: ${made.stderr}`);
    const dir = made.stdout;
    live.certificateDir = dir;
    const certFile = `${dir}/cert.pem`;
    const keyFile = `${dir}/key.pem`;
    const subject = [
      "-subj",
      "/CN=localhost",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "-addext",
      "extendedKeyUsage=serverAuth",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ];
    const openssl = await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      ...subject,
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ]);
    if (openssl.code !== 0) {
      throw new Error(`openssl req failed: ${openssl.stderr.split("\n")[0]}`);
    }
    return {
      certFile,
      keyFile,
      certPem: await Deno.readTextFile(certFile),
      dir,
    };
  })();
  return certificate;
}

/** The command line that starts `spec` on port 0. */
async function commandLine(
  spec: ServerSpec,
  calc: CalcOptions,
): Promise<{ argv: string[]; tlsCa: string | null }> {
  const deno = Deno.execPath();
  const echo = [
    deno,
    "run",
    "--allow-net=127.0.0.1",
    "bench/raw_echo_server.ts",
  ];
  const lineserver = (
    flags: string[],
    args: string[],
    entry = calc.server,
  ) => [
    deno,
    "run",
    "--allow-net",
    ...flags,
    ...calc.denoFlags,
    entry,
    "--port",
    "0",
    "--log-level",
    "warning",
    ...args,
  ];
  switch (spec.kind) {
    case "calc": {
      const workers = spec.workers === undefined
        ? { flags: [], args: [] }
        // --workers loads a worker module from disk, which needs read access.
        : {
          flags: [`--allow-read=${ROOT}`],
          args: ["--workers", `${spec.workers}`],
        };
      return { argv: lineserver(workers.flags, workers.args), tlsCa: null };
    }
    case "calc-baseline":
      if (calc.baseline === undefined) {
        throw new Error("Cannot start calc-baseline without --baseline FILE");
      }
      return { argv: lineserver([], [], calc.baseline), tlsCa: null };
    case "calc-echo":
      return { argv: lineserver([], ["--protocol", "echo"]), tlsCa: null };
    case "calc-tls": {
      const cert = await tlsCertificate();
      return {
        argv: lineserver([`--allow-read=${cert.dir}`], [
          "--tls-cert",
          cert.certFile,
          "--tls-key",
          cert.keyFile,
        ]),
        tlsCa: cert.certPem,
      };
    }
    case "node-peer":
    case "node-peer-echo":
      return {
        argv: [
          "node",
          "bench/node_peer.mjs",
          "--port",
          "0",
          ...(spec.kind === "node-peer-echo" ? ["--protocol", "echo"] : []),
        ],
        tlsCa: null,
      };
    case "echo-deno":
      return { argv: [...echo, "--port", "0"], tlsCa: null };
    case "echo-node":
      return { argv: [...echo, "--api", "node", "--port", "0"], tlsCa: null };
  }
}

/**
 * Starts a server from the repository root and waits for its listening
 * line; a server that fails to start is stopped.
 */
export async function startServer(
  spec: ServerSpec,
  calc: CalcOptions,
): Promise<Started> {
  const { argv, tlsCa } = await commandLine(spec, calc);
  return { child: await startCommand(argv, spec.cpus), tlsCa };
}

/**
 * Starts a server from its command line (from the repository root, on
 * `cpus`), tracked like the others so that {@linkcode cleanUp} stops it, and
 * waits for the `listening on HOST:PORT` line on its stderr.
 */
export async function startCommand(
  argv: string[],
  cpus: string,
): Promise<ServerChild> {
  const child = new ServerChild([...pinPrefix(cpus), ...argv], ROOT);
  live.servers.add(child);
  try {
    await child.listening(START_TIMEOUT_MS);
  } catch (error) {
    await stopServer(child);
    throw error;
  }
  return child;
}

/** Numbers from a server that died mid-window would be meaningless. */
export function assertStillRunning(server: ServerChild): void {
  if (server.exited) {
    throw new Error(
      `Server exited during the run (code ${server.exited.code})`,
    );
  }
}

/** The last stderr lines after `listening on` (warnings, errors, the shutdown summary). */
export function stderrAfterListening(server: ServerChild): string[] {
  const lines = server.stderr.split("\n").filter((l) => l.trim() !== "");
  const listening = lines.findIndex((l) => LISTENING.test(l));
  return lines.slice(listening + 1).slice(-5);
}

/** Stops the server and any helper it forked; returns the server's exit code. */
export async function stopServer(server: ServerChild): Promise<number> {
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
      await pause(10);
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
    if (!await settleWithin(this.#status, graceMs)) send("SIGKILL");
    const status = await this.#status;
    // A forked helper that outlived the server could hold the pipe open.
    await settleWithin(this.#stderrDone, 2000);
    return status.code;
  }
}

/** The server ended before listening (e.g. it rejected an option). */
export class ServerExited extends Error {
  constructor(readonly code: number, readonly firstLine: string) {
    super(`Server exited with code ${code}: ${firstLine}`);
  }
}

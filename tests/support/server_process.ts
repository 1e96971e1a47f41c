/**
 * Runs `server.ts` as a real subprocess, the way a user runs it, and reads its
 * stderr: the `listening on HOST:PORT` line gives the port to connect to.
 *
 * @module
 */
import { withTimeout } from "./deadline.ts";
import { ProcessOutput } from "./process_output.ts";

/** Absolute path of the project's `server.ts`. */
export const SERVER_ENTRY =
  new URL("../../server.ts", import.meta.url).pathname;

/** The project root, where `deno task` finds deno.json. */
const PROJECT_ROOT = new URL("../..", import.meta.url).pathname;

/** Matches the server's own listening line, not `admin listening on`. */
const LISTENING = /(?<!admin )listening on (\[[^\]]+\]|[^\s:"]+):(\d+)\D/;
/** Matches the admin endpoint's listening line (`--admin-port`): host and port. */
export const ADMIN_LISTENING = /admin listening on (\S+):(\d+)/;

export interface StartOptions {
  /** Extra `deno run` flags before the script, e.g. `--allow-read=cert.pem`. */
  denoFlags?: string[];
  /** How long to wait for the listening line. Default 15 s (first run type-checks). */
  startTimeoutMs?: number;
  /** Wrap the command, e.g. `["prlimit", "--nofile=64", "--"]`. */
  wrapper?: string[];
  /**
   * Start with `deno task NAME ...args` from the project root, with the
   * task's own permissions, instead of `deno run --allow-net server.ts`.
   */
  task?: string;
  /**
   * Run in a session and process group of its own (`setsid`), as a shell
   * runs a foreground job, so that {@linkcode ServerProcess.signalGroup}
   * reaches every process in it, as Ctrl-C in a terminal does.
   */
  ownProcessGroup?: boolean;
}

/** A running `server.ts` child process. */
export class ServerProcess {
  readonly child: Deno.ChildProcess;
  /** The host from the listening line. */
  host = "";
  /** The real port from the listening line. */
  port = 0;
  /** The admin endpoint's host and port, when started with `--admin-port`. */
  adminHost = "";
  adminPort = 0;
  /** What the server writes, and its exit. */
  readonly #output: ProcessOutput;
  /** The process group to signal and kill, when the process leads its own. */
  readonly #group: number | undefined;

  private constructor(child: Deno.ChildProcess, ownProcessGroup: boolean) {
    this.child = child;
    // setsid(1) does not fork when its caller leads no process group (the
    // case for a spawned child), so the child's PID is the group's ID.
    this.#group = ownProcessGroup ? child.pid : undefined;
    this.#output = new ProcessOutput(child, "server");
  }

  /** Starts `deno run --allow-net server.ts ...args`. It does not wait for listening. */
  static spawn(args: string[], options: StartOptions = {}): ServerProcess {
    if (options.task !== undefined && options.denoFlags !== undefined) {
      throw new Error("A task has its own deno flags: give task or denoFlags");
    }
    const deno = options.task === undefined
      ? [
        "deno",
        "run",
        "--allow-net",
        ...(options.denoFlags ?? []),
        SERVER_ENTRY,
        ...args,
      ]
      : ["deno", "task", options.task, ...args];
    const argv = [
      ...(options.ownProcessGroup ? ["setsid"] : []),
      ...(options.wrapper ?? []),
      ...deno,
    ];
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: options.task === undefined ? undefined : PROJECT_ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ServerProcess(child, options.ownProcessGroup ?? false);
  }

  /**
   * Starts the server and waits for its `listening on` line (and, with
   * `--admin-port`, for the admin endpoint's).
   */
  static async start(
    args: string[],
    options: StartOptions = {},
  ): Promise<ServerProcess> {
    const server = ServerProcess.spawn(args, options);
    try {
      const match = await server.waitForStderr(
        LISTENING,
        options.startTimeoutMs ?? 15000,
      );
      server.host = match[1];
      server.port = Number(match[2]);
      if (args.includes("--admin-port")) {
        const admin = await server.waitForStderr(ADMIN_LISTENING, 5000);
        server.adminHost = admin[1];
        server.adminPort = Number(admin[2]);
      }
      return server;
    } catch (error) {
      await server.stop();
      throw new Error(`${(error as Error).message}\nstderr:\n${server.stderr}`);
    }
  }

  /** Everything the server wrote to stderr so far. */
  get stderr(): string {
    return this.#output.stderr;
  }

  /** Everything the server wrote to stdout so far. */
  get stdout(): string {
    return this.#output.stdout;
  }

  /** The exit status once the process has ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#output.exited;
  }

  /**
   * Waits until stderr matches `pattern`, looking again each time stderr
   * grows (so a test can act on a line the moment it is written); fails if
   * the process exits first or on timeout.
   */
  waitForStderr(
    pattern: RegExp,
    timeoutMs = 5000,
  ): Promise<RegExpMatchArray> {
    return this.#output.waitFor(
      `stderr to match ${pattern}`,
      () => this.stderr.match(pattern) ?? undefined,
      timeoutMs,
    );
  }

  /** Sends a signal to the process (only this process, by its PID). */
  signal(signal: Deno.Signal): void {
    if (!this.exited) this.child.kill(signal);
  }

  /**
   * Sends `signal` to every process in the server's own process group, as a
   * terminal does on Ctrl-C (needs `ownProcessGroup`). Resolves once sent.
   */
  async signalGroup(signal: Deno.Signal): Promise<void> {
    if (this.#group === undefined) {
      throw new Error(
        "signalGroup needs a server started with ownProcessGroup",
      );
    }
    const { code, stderr } = await this.#killGroup(signal);
    if (code !== 0) {
      throw new Error(
        `kill -s ${signal} -${this.#group} failed: ${
          new TextDecoder().decode(stderr)
        }`,
      );
    }
  }

  /** `kill -s SIGNAL -- -PGID`, through sh: Deno.kill would need every run permission. */
  #killGroup(signal: Deno.Signal): Promise<Deno.CommandOutput> {
    return withTimeout(
      new Deno.Command("sh", {
        args: [
          "-c",
          'kill -s "$0" -- "-$1"',
          signal.replace(/^SIG/, ""),
          String(this.#group),
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output(),
      5000,
      `kill -s ${signal} -${this.#group}`,
    );
  }

  /** Waits for the process to exit and for its output to be read. */
  waitForExit(timeoutMs = 10000): Promise<Deno.CommandStatus> {
    return this.#output.waitForExit(timeoutMs);
  }

  /**
   * Kills the process if it still runs (SIGKILL; its whole process group if
   * it has its own, so no grandchild is left behind) and reaps it. Always
   * safe to call.
   */
  async stop(): Promise<void> {
    if (this.#group !== undefined) {
      // Also after the leader exited: a child of it may still run.
      await this.#killGroup("SIGKILL");
    }
    if (!this.exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // It exited between the check and the kill.
      }
    }
    await this.waitForExit();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts `server.ts` on free ports (`--port 0 --admin-port 0`) with `args`;
 * its `adminPort` serves `/metrics`, to see what the server has done.
 */
export function startWithAdmin(
  args: string[],
  options: StartOptions = {},
): Promise<ServerProcess> {
  return ServerProcess.start(
    ["--port", "0", "--admin-port", "0", ...args],
    options,
  );
}

/** Runs `server.ts` with `args` to completion (for options that exit at once). */
export async function runServerToExit(
  args: string[],
  timeoutMs = 15000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const server = ServerProcess.spawn(args);
  try {
    const status = await server.waitForExit(timeoutMs);
    return { code: status.code, stdout: server.stdout, stderr: server.stderr };
  } finally {
    await server.stop();
  }
}

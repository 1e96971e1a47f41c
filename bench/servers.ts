/**
 * The servers under test as subprocesses: the calculator (`server.ts`, or
 * `--server FILE`) and the raw echo reference. Each scenario gets a fresh one
 * on port 0, placed on its CPUs, and stops it together with every helper
 * process it forked.
 *
 * @module
 */
import { live } from "./live.ts";
import { pinPrefix } from "./machine.ts";
import type { Options } from "./options.ts";
import { LISTENING, processTree, ServerChild } from "./proc.ts";
import type { Target } from "./traffic.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const ECHO_ENTRY = "bench/raw_echo_server.ts";
const START_TIMEOUT_MS = 30_000;

export interface ServerSpec {
  target: Target;
  /** `--workers N` for server.ts, or undefined to leave the default. */
  workers?: number;
  cpus: string;
}

/** Starts a server and waits for its listening line; a server that fails to start is stopped. */
export async function startServer(
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

/**
 * Scenario k, the client half: the client library (`LineClient`) against
 * lineserver, beside Node's `net` running the same loops
 * (`client_load.ts` and `client_load.mjs`): request/response and pipelined
 * requests per second on one connection to the calculator, and the
 * bulk-push example's transfer rate (MB/s) from its server. The server runs
 * on the server CPU, each client in turn on the generator CPU; every reply
 * is checked by the client that reads it.
 *
 * @module
 */
import { settleWithin } from "../src/deadline.ts";
import { GENERATOR_CPU, pinPrefix, progress, SERVER_CPU } from "./machine.ts";
import {
  type ServerChild,
  startCommand,
  startServer,
  stopServer,
} from "./servers.ts";
import type { Settings } from "./scenarios.ts";
import { calculatorLines } from "./traffic.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** Requests in flight in the pipelined rows. */
const WINDOW = 32;

/** One client's rate in one mode. */
export interface ClientRate {
  client: "LineClient" | "node:net";
  mode: "rr" | "pipelined" | "bulk";
  perSecond: number;
  unit: string;
  seconds: number;
  /** The client process's CPU time over the window, in cores. */
  cpuShare: number;
}

/** Scenario k's rows, or why it could not run. */
export interface ClientScenarioResult {
  rows: ClientRate[];
  failed: string | null;
}

/** Runs one client to its end; its JSON line, or an error naming what failed. */
async function runClient(
  client: ClientRate["client"],
  mode: ClientRate["mode"],
  port: number,
  settings: Settings,
): Promise<ClientRate> {
  const args = [
    "--mode",
    mode,
    "--port",
    String(port),
    "--window",
    String(WINDOW),
    "--warmup",
    String(settings.warmupS),
    "--duration",
    String(settings.durationS),
  ];
  const argv = client === "LineClient"
    ? [
      Deno.execPath(),
      "run",
      "--allow-net=127.0.0.1",
      "bench/client_load.ts",
      ...args,
    ]
    : ["node", "bench/client_load.mjs", ...args];
  const full = [...pinPrefix(GENERATOR_CPU), ...argv];
  const child = new Deno.Command(full[0], {
    args: full.slice(1),
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The Node client reads the request lines and replies from stdin.
  const pool = calculatorLines();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(pool)));
  await writer.close();
  const output = child.output();
  const limitMs = (settings.warmupS + settings.durationS + 30) * 1000;
  if (!await settleWithin(output, limitMs)) {
    child.kill("SIGKILL");
    await output.catch(() => {});
    throw new Error(`${client} ${mode} did not finish within ${limitMs} ms`);
  }
  const { code, stdout, stderr } = await output;
  const text = new TextDecoder();
  if (code !== 0) {
    throw new Error(
      `${client} ${mode} exited with ${code}: ${
        text.decode(stderr).trim().split("\n").slice(-3).join(" / ")
      }`,
    );
  }
  return JSON.parse(text.decode(stdout).trim().split("\n").pop()!);
}

/** Runs scenario k: both clients, three modes. */
export async function runClientScenario(
  settings: Settings,
): Promise<ClientScenarioResult> {
  const rows: ClientRate[] = [];
  let server: ServerChild | undefined;
  try {
    server = (await startServer(
      { kind: "calc", cpus: SERVER_CPU },
      settings.calc,
    )).child;
    for (const mode of ["rr", "pipelined"] as const) {
      for (const client of ["LineClient", "node:net"] as const) {
        progress(`k: ${client} ${mode} against lineserver`);
        rows.push(await runClient(client, mode, server.port, settings));
      }
    }
    await stopServer(server);
    // The example prints its log on stdout; the bench reads stderr.
    server = await startCommand([
      "sh",
      "-c",
      'exec "$@" 1>&2',
      "sh",
      Deno.execPath(),
      "run",
      "--allow-net=127.0.0.1",
      "examples/bulk_push/server.ts",
      "--port",
      "0",
    ], SERVER_CPU);
    for (const client of ["LineClient", "node:net"] as const) {
      progress(`k: ${client} bulk push`);
      rows.push(await runClient(client, "bulk", server.port, settings));
    }
    return { rows, failed: null };
  } catch (error) {
    return { rows, failed: (error as Error).message };
  } finally {
    if (server !== undefined) await stopServer(server);
  }
}

/** The scenario's table, LineClient beside node:net in each mode. */
export function clientTable(result: ClientScenarioResult): string {
  const out = [
    "client library (one connection, server on its own CPU, every reply checked):",
    "  mode                        LineClient              node:net                ratio",
  ];
  const names = {
    rr: "request/response",
    pipelined: `pipelined x${WINDOW}`,
    bulk: "bulk push 3 x 3 MiB",
  };
  for (const mode of ["rr", "pipelined", "bulk"] as const) {
    const ours = result.rows.find((r) =>
      r.mode === mode && r.client === "LineClient"
    );
    const node = result.rows.find((r) =>
      r.mode === mode && r.client === "node:net"
    );
    const cell = (r: ClientRate | undefined) =>
      r === undefined
        ? "-".padEnd(24)
        : `${r.perSecond.toFixed(r.unit === "MB/s" ? 1 : 0)} ${r.unit} (${
          Math.round(r.cpuShare * 100)
        }%)`.padEnd(24);
    const ratio = ours && node
      ? (ours.perSecond / node.perSecond).toFixed(2)
      : "-";
    out.push(`  ${names[mode].padEnd(28)}${cell(ours)}${cell(node)}${ratio}`);
  }
  out.push("  (in brackets: the client process's CPU over the window)");
  if (result.failed !== null) out.push(`  failed: ${result.failed}`);
  return out.join("\n");
}

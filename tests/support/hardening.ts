/**
 * Helpers for the hardening and shutdown tests: the server's own lines, a
 * greeted client, a flood that stops when the server stops reading, and
 * process measurements from `/proc`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { withTimeout } from "./deadline.ts";
import { LineClient } from "./line_client.ts";
import { WELCOME } from "./calc_replies.ts";
import { runTool } from "./tools.ts";

/** The calculator's greeting, also exported here for the hardening tests. */
export { WELCOME };
/** One mebibyte, for sizing floods and memory bounds. */
export const MiB = 1024 * 1024;
/** Everything a client beyond `--max-connections` receives, byte for byte. */
export const TOO_MANY = "ERROR. Too many connections, try again later\r\n";
/** The idle-timeout line (without CRLF). */
export const IDLE_LINE = "<idle timeout: closing connection>";
/** The shutdown line (without CRLF). */
export const SHUTTING_DOWN = "<server shutting down>";

/** Connects and asserts that the first line is `greeting`. */
export async function connectGreeted(
  port: number,
  greeting = WELCOME,
): Promise<LineClient> {
  const client = await LineClient.connect(port);
  try {
    assert.equal(await client.readLine(), greeting);
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

/**
 * Opens `count` TCP connections to `port` on 127.0.0.1, one after another,
 * each within 2 s, and pushes each to `into` as it opens, so that the
 * caller closes them all even when a later one fails. They read nothing.
 */
export async function connectMany(
  port: number,
  count: number,
  into: Deno.TcpConn[],
): Promise<void> {
  for (let i = 0; i < count; i++) {
    into.push(
      await withTimeout(
        Deno.connect({ hostname: "127.0.0.1", port }),
        2000,
        `connect #${i}`,
      ),
    );
  }
}

/** What {@linkcode floodUntilStalled} did. */
export interface FloodResult {
  /** Bytes the kernel accepted from us. */
  sent: number;
  /** True when a write stayed blocked for `stallMs`: the server stopped reading. */
  stalled: boolean;
  /** The write error that ended the flood (e.g. the server reset the connection). */
  error?: Error;
  /**
   * The write still in flight when stalled (it settles when the server reads
   * again or the connection ends). It never rejects.
   */
  pending: Promise<void>;
}

/**
 * Writes `chunk` again and again, never reading, until `limitBytes` have been
 * sent, `maxMs` has passed, a write fails, or one write stays blocked for
 * `stallMs`. Never rejects.
 */
export async function floodUntilStalled(
  conn: Deno.Conn,
  chunk: Uint8Array,
  options: { limitBytes: number; stallMs: number; maxMs: number },
): Promise<FloodResult> {
  const started = Date.now();
  let sent = 0;
  let offset = 0;
  while (sent < options.limitBytes && Date.now() - started < options.maxMs) {
    const write = conn.write(chunk.subarray(offset)).then(
      (n) => ({ n, error: undefined }),
      (error: Error) => ({ n: 0, error }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stall = new Promise<"stalled">((resolve) => {
      timer = setTimeout(() => resolve("stalled"), options.stallMs);
    });
    const outcome = await Promise.race([write, stall]);
    clearTimeout(timer);
    if (outcome === "stalled") {
      return { sent, stalled: true, pending: write.then(() => {}) };
    }
    if (outcome.error) {
      return {
        sent,
        stalled: false,
        error: outcome.error,
        pending: Promise.resolve(),
      };
    }
    sent += outcome.n;
    offset += outcome.n;
    if (offset === chunk.length) offset = 0;
  }
  return { sent, stalled: false, pending: Promise.resolve() };
}

/**
 * Reads a file under `/proc`. Deno grants `/proc` only with --allow-all, so
 * the test (allowed to run `sh`) asks `cat` for it.
 */
function readProc(path: string): Promise<string> {
  return runTool(`read ${path}`, ["sh", "-c", 'exec cat "$1"', "sh", path]);
}

/** Whether `/proc` exists (Linux). Process measurements need it. */
export function hasProc(): boolean {
  return Deno.build.os === "linux";
}

/** Resident memory of process `pid` in bytes (VmRSS from /proc/PID/status). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readProc(`/proc/${pid}/status`);
  const match = status.match(/^VmRSS:\s+(\d+)\s+kB$/m);
  if (!match) throw new Error(`No VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * The highest resident memory of process `pid` in bytes since it started or
 * since {@linkcode resetPeakRss} (VmHWM from /proc/PID/status).
 */
export async function peakRssBytes(pid: number): Promise<number> {
  const status = await readProc(`/proc/${pid}/status`);
  const match = status.match(/^VmHWM:\s+(\d+)\s+kB$/m);
  if (!match) throw new Error(`No VmHWM in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** Resets the peak {@linkcode peakRssBytes} reports to the current RSS (Linux clear_refs). */
export async function resetPeakRss(pid: number): Promise<void> {
  await runTool(`reset the peak RSS of ${pid}`, [
    "sh",
    "-c",
    'echo 5 > "/proc/$1/clear_refs"',
    "sh",
    String(pid),
  ]);
}

/** User + system CPU time of process `pid` (all threads), in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readProc(`/proc/${pid}/stat`);
  // The command name (field 2) may contain spaces: count fields after its ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the whole line, i.e. 12 and 13 here.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100; // USER_HZ is 100 on Linux for everything /proc reports.
}

/** Largest socket buffers the kernel may auto-tune to (bytes), for sizing floods. */
export async function maxSocketBuffers(): Promise<
  { receive: number; send: number }
> {
  const read = async (name: string, fallback: number) => {
    try {
      const text = await readProc(`/proc/sys/net/ipv4/${name}`);
      return Number(text.trim().split(/\s+/)[2]) || fallback;
    } catch {
      return fallback;
    }
  };
  return {
    receive: await read("tcp_rmem", 6 << 20),
    send: await read("tcp_wmem", 4 << 20),
  };
}

/**
 * Asserts that connecting to `port` on 127.0.0.1 is refused (ECONNREFUSED):
 * nothing listens there any more.
 */
export async function expectConnectRefused(port: number): Promise<void> {
  let conn: Deno.TcpConn;
  try {
    conn = await withTimeout(
      Deno.connect({ hostname: "127.0.0.1", port }),
      2000,
      `connect to port ${port}`,
    );
  } catch (error) {
    assert.ok(
      error instanceof Deno.errors.ConnectionRefused,
      `expected ECONNREFUSED, got ${error}`,
    );
    return;
  }
  conn.close();
  assert.fail(
    `A connection to port ${port} was accepted; expected ECONNREFUSED`,
  );
}

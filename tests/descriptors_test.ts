/**
 * Descriptors the server's limits bound: every accepted socket counts
 * against the limits from accept on, or against the server's bound on
 * sockets that hold no slot (waiting for one, or being refused: 128), so
 * 3,000 silent clients from one address cost a `server.ts` process at most
 * `--max-connections` + 128 descriptors and a few of its own, with or
 * without `--proxy-protocol`. A TLS client that closes or resets in the
 * middle of its handshake is released at once, not at the handshake's
 * 10 s deadline.
 *
 * Real `server.ts` subprocesses, whose descriptors are counted in
 * `/proc/PID/fd`; Linux only.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { delay, pollUntil, withTimeout } from "./support/deadline.ts";
import { ServerProcess } from "./support/server_process.ts";
import { hasProc } from "./support/hardening.ts";
import { connectTlsLineClient } from "./support/tls_client.ts";
import { startTlsServerProcess } from "./support/tls_server.ts";
import { runTool } from "./support/tools.ts";
import { ask, sum, WELCOME } from "./support/calc_replies.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";

const HOST = "127.0.0.1";
/** The server's bound on sockets that hold no slot (waiting for one, or being refused). */
const MAX_UNADMITTED = 128;
/** How soon the socket of a client that left its TLS handshake must be closed. */
const RELEASED_WITHIN_MS = 2000;
/** Descriptors the process may open besides its clients' (log pipes, timers, the runtime's own). */
const SLACK = 16;

/** How many descriptors process `pid` has open (`/proc/PID/fd`, read through `sh`). */
async function openDescriptors(pid: number): Promise<number> {
  const count = await runTool(`count the descriptors of ${pid}`, [
    "sh",
    "-c",
    'ls "/proc/$1/fd" | wc -l',
    "sh",
    String(pid),
  ]);
  return Number(count.trim());
}

/**
 * Samples `pid`'s descriptors until `stop` resolves (and once more after);
 * resolves with the highest count seen.
 */
async function peakDescriptors(
  pid: number,
  stop: Promise<unknown>,
): Promise<number> {
  let done = false;
  stop.finally(() => done = true);
  let peak = 0;
  while (!done) {
    peak = Math.max(peak, await openDescriptors(pid));
    await delay(50);
  }
  return Math.max(peak, await openDescriptors(pid));
}

/** Clients that connect together, in {@linkcode openSilent}. */
const BATCH = 50;

/** Opens `count` connections to `port`, in batches over about `spreadMs`; they stay open and silent. */
async function openSilent(
  port: number,
  count: number,
  spreadMs: number,
  into: Deno.TcpConn[],
): Promise<void> {
  const batch = BATCH;
  const pauseMs = spreadMs / (count / batch);
  for (let opened = 0; opened < count; opened += batch) {
    const conns = await Promise.all(
      Array.from(
        { length: Math.min(batch, count - opened) },
        () => Deno.connect({ hostname: HOST, port }),
      ),
    );
    into.push(...conns);
    await delay(pauseMs);
  }
}

for (const proxy of [true, false]) {
  Deno.test({
    name:
      `descriptors: 3,000 silent clients from one address stay within --max-connections + ${MAX_UNADMITTED} descriptors${
        proxy ? " with --proxy-protocol" : ""
      }`,
    ignore: !hasProc(),
    async fn() {
      const maxConnections = 10;
      const server = await ServerProcess.start([
        "--port",
        "0",
        "--max-connections",
        String(maxConnections),
        "--max-connections-per-ip",
        "1",
        "--log-level",
        "error",
        ...(proxy ? ["--proxy-protocol"] : []),
      ]);
      const pid = server.child.pid;
      const conns: Deno.TcpConn[] = [];
      try {
        const baseline = await openDescriptors(pid);
        const opening = openSilent(server.port, 3000, 2000, conns);
        const peak = await peakDescriptors(pid, opening);
        await opening;
        const bound = baseline + maxConnections + MAX_UNADMITTED + SLACK;
        // A socket the server closes at once (past every bound) keeps its
        // descriptor until the runtime's next turn: one batch of clients
        // arriving together may briefly stand above the bound.
        assert.ok(
          peak <= bound + BATCH,
          `peak of ${peak} descriptors with ${conns.length} clients (baseline ${baseline}, bound ${bound} + ${BATCH})`,
        );
        await pollUntil(
          `the server's descriptors to settle within ${bound} (baseline ${baseline}) with ${conns.length} clients open`,
          () => openDescriptors(pid),
          (open) => open <= bound,
          1000,
        );
      } finally {
        for (const conn of conns) conn.close();
        await server.stop();
      }
    },
  });
}

/** Ways a client can leave in the middle of a TLS handshake. */
const LEAVINGS = {
  "closes (FIN)": (socket: net.Socket) => socket.end(),
  "resets (RST)": (socket: net.Socket) => socket.resetAndDestroy(),
};

const opensslMissing = await opensslMissingReason();

for (const [how, leave] of Object.entries(LEAVINGS)) {
  Deno.test({
    name:
      `descriptors: a TLS client that ${how} during its handshake is released at once, not at the handshake deadline`,
    ignore: !hasProc() || opensslMissing !== undefined,
    async fn() {
      await using cert = await createTestCertificate();
      const server = await startTlsServerProcess(cert, [
        "--log-level",
        "warning",
      ]);
      const pid = server.child.pid;
      const sockets: net.Socket[] = [];
      try {
        const baseline = await openDescriptors(pid);
        const count = 50;
        for (let i = 0; i < count; i++) {
          // A ClientHello's first bytes, never finished: the server waits for the rest.
          sockets.push(await leaveMidHandshake(server.port, leave));
        }
        // Accepted in order: once a later client is served, the server has
        // taken every one of them in.
        const served = await connectTlsLineClient(server.port, cert.certPem);
        try {
          assert.equal(await served.readLine(), WELCOME);
          await ask(served, "1,2\n", sum(3));
        } finally {
          served.close();
        }
        // Well before the handshake deadline (10 s): released, not timed out.
        await pollUntil(
          `the sockets of ${count} clients that left to be closed (baseline ${baseline})`,
          () => openDescriptors(pid),
          (open) => open <= baseline + 2,
          RELEASED_WITHIN_MS,
        );
      } finally {
        for (const socket of sockets) socket.destroy();
        await server.stop();
      }
    },
  });
}

/** Connects, sends the start of a TLS record, then leaves as `leave` says; returns the socket. */
async function leaveMidHandshake(
  port: number,
  leave: (socket: net.Socket) => void,
): Promise<net.Socket> {
  const socket = net.connect(port, HOST);
  socket.on("error", () => {});
  await withTimeout(
    new Promise((resolve) => socket.once("connect", resolve)),
    5000,
    "TLS connect",
  );
  // A handshake record header announcing 512 bytes, and nothing more.
  socket.write(Uint8Array.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  leave(socket);
  socket.resume();
  return socket;
}

Deno.test({
  name:
    "descriptors: a TLS client that half-closes right after its handshake is still served (its end is not a client leaving)",
  ignore: opensslMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    const server = await startTlsServerProcess(cert, [
      "--log-level",
      "warning",
    ]);
    try {
      for (let i = 0; i < 20; i++) {
        const client = await connectTlsLineClient(server.port, cert.certPem);
        try {
          // The request and the FIN follow the client's last handshake message at once.
          await client.send(`${i},1\n`);
          await client.closeWrite();
          assert.equal(
            await client.readToEnd(5000),
            `${WELCOME}\r\n${sum(i + 1)}\r\n`,
          );
        } finally {
          client.close();
        }
      }
    } finally {
      await server.stop();
    }
  },
});

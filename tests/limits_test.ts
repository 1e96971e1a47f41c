/**
 * Server limits (SPEC §5): the connection limit, the idle timeout,
 * backpressure, and accept errors. In-process servers (mod.ts) where only the
 * wire is observed; a real `server.ts` subprocess where the test measures the
 * process itself (resident memory, CPU) or needs a file-descriptor limit.
 */
import assert from "node:assert/strict";
import { startServer } from "../mod.ts";
import { delay, withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  connectGreeted,
  connectWhenSlotFree,
  cpuSeconds,
  type FloodResult,
  floodUntilStalled,
  hasProc,
  IDLE_LINE,
  maxSocketBuffers,
  rssBytes,
  TOO_MANY,
  WELCOME,
} from "./support/hardening.ts";

const HOST = "127.0.0.1";
const MiB = 1024 * 1024;
const sum = (n: number) => `Sum of input integers: '${n}'`;

/** Sends `request` and asserts the reply line. */
async function ask(
  client: LineClient,
  request: string,
  expected: string,
  timeoutMs?: number,
) {
  await client.send(request);
  assert.equal(await client.readLine(timeoutMs), expected);
}

// --- connection limit ------------------------------------------------------

Deno.test("max connections: a client beyond the limit gets only the error line, never a slot", async () => {
  const server = await startServer({
    hostname: HOST,
    port: 0,
    maxConnections: 2,
    shutdownTimeoutMs: 1000,
  });
  const clients: LineClient[] = [];
  try {
    const port = server.addr.port;
    const first = await connectGreeted(port);
    const second = await connectGreeted(port);
    clients.push(first, second);
    // Several clients over the limit, kept open on our side: each receives
    // exactly the error line (no welcome) and the server closes it.
    for (let i = 0; i < 3; i++) {
      const extra = await LineClient.connect(port);
      clients.push(extra);
      assert.equal(await extra.readToEnd(3000), TOO_MANY);
    }
    // The served clients are untouched.
    await ask(first, "1,2\n", sum(3));
    await ask(second, "2,3\n", sum(5));
    // One slot frees up: the next client is served (the turned-away clients
    // did not keep slots).
    first.close();
    const fresh = await connectWhenSlotFree(port, { timeoutMs: 3000 });
    clients.push(fresh);
    await ask(fresh, "3,4\n", sum(7));
    // Still exactly two slots (the turned-away clients gave none back either).
    const over = await LineClient.connect(port);
    clients.push(over);
    assert.equal(await over.readToEnd(3000), TOO_MANY);
    await ask(second, "4,5\n", sum(9));
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});

// --- idle timeout ----------------------------------------------------------

Deno.test("idle timeout: a silent client gets the idle line, then EOF, after about S", async () => {
  const idleMs = 500;
  const server = await startServer({
    hostname: HOST,
    port: 0,
    idleTimeoutMs: idleMs,
    shutdownTimeoutMs: 1000,
  });
  const client = await LineClient.connect(server.addr.port);
  const connectedAt = performance.now();
  try {
    assert.equal(await client.readLine(), WELCOME);
    assert.equal(await client.readLine(idleMs + 3000), IDLE_LINE);
    await client.expectClosed(2000);
    const elapsed = performance.now() - connectedAt;
    assert.ok(
      elapsed >= 0.8 * idleMs && elapsed <= idleMs + 1500,
      `closed after ${elapsed.toFixed(0)} ms; idle timeout ${idleMs} ms`,
    );
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("idle timeout: every received byte, even inside a line, restarts the clock", async () => {
  const idleMs = 600;
  const gapMs = 300; // well under the timeout, but the gaps add up to 3x it
  const server = await startServer({
    hostname: HOST,
    port: 0,
    idleTimeoutMs: idleMs,
    shutdownTimeoutMs: 1000,
  });
  const client = await connectGreeted(server.addr.port);
  try {
    const started = performance.now();
    for (const byte of ["1", ",", "2", ",", "3", ",", "4"]) {
      await client.send(byte);
      await delay(gapMs);
    }
    assert.ok(performance.now() - started > 3 * idleMs);
    await client.send("\n");
    const lastByteAt = performance.now();
    assert.equal(await client.readLine(1000), sum(10));
    // Now silent: the idle line comes one timeout after the last byte.
    assert.equal(await client.readLine(idleMs + 3000), IDLE_LINE);
    await client.expectClosed(2000);
    const silentFor = performance.now() - lastByteAt;
    assert.ok(
      silentFor >= 0.8 * idleMs && silentFor <= idleMs + 1500,
      `closed ${
        silentFor.toFixed(0)
      } ms after the last byte; timeout ${idleMs} ms`,
    );
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("idle timeout: 0 disables it", async () => {
  const server = await startServer({
    hostname: HOST,
    port: 0,
    idleTimeoutMs: 0,
    shutdownTimeoutMs: 1000,
  });
  const client = await connectGreeted(server.addr.port);
  try {
    await delay(1200);
    // Had the server timed the client out, this would read the idle line.
    await ask(client, "1,2\n", sum(3));
    assert.equal(client.buffered.length, 0);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("idle timeout: a client that stops reading is still closed, with replies unsent", async () => {
  // One slot only: the slot frees (and a probe is served) only once the
  // server has closed the flooding client although its replies cannot be written.
  const idleMs = 1000;
  const server = await startServer({
    hostname: HOST,
    port: 0,
    maxConnections: 1,
    idleTimeoutMs: idleMs,
    shutdownTimeoutMs: 1000,
  });
  const port = server.addr.port;
  const flooder = await connectGreeted(port);
  let pending: Promise<void> = Promise.resolve();
  const probes: LineClient[] = [];
  try {
    const chunk = new TextEncoder().encode("1,2\n".repeat(16384));
    const flood = await floodUntilStalled(flooder.conn, chunk, {
      limitBytes: 40 * MiB,
      stallMs: 500,
      maxMs: 8000,
    });
    pending = flood.pending;
    const silentSince = performance.now();
    // While the flooder holds the slot, probes are turned away; then one is served.
    const probe = await connectWhenSlotFree(port, { timeoutMs: idleMs + 5000 });
    probes.push(probe);
    const freedAfter = performance.now() - silentSince;
    assert.ok(
      freedAfter <= idleMs + 4000,
      `slot freed ${freedAfter.toFixed(0)} ms after the flood went silent`,
    );
    await ask(probe, "5,6\n", sum(11));
  } finally {
    flooder.close();
    await withTimeout(pending, 2000, "the blocked flood write to settle");
    for (const probe of probes) probe.close();
    await server.shutdown();
  }
});

Deno.test("CLI: --max-connections and --idle-timeout (fractional) are honoured", async () => {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--max-connections",
    "1",
    "--idle-timeout",
    "0.5",
  ]);
  const clients: LineClient[] = [];
  try {
    const first = await LineClient.connect(server.port);
    const connectedAt = performance.now();
    clients.push(first);
    assert.equal(await first.readLine(), WELCOME);
    const second = await LineClient.connect(server.port);
    clients.push(second);
    assert.equal(await second.readToEnd(3000), TOO_MANY);
    assert.equal(await first.readLine(3000), IDLE_LINE);
    await first.expectClosed(2000);
    const elapsed = performance.now() - connectedAt;
    assert.ok(
      elapsed >= 400 && elapsed <= 2000,
      `idle close after ${elapsed.toFixed(0)} ms with --idle-timeout 0.5`,
    );
    const third = await connectWhenSlotFree(server.port, { timeoutMs: 3000 });
    clients.push(third);
    await ask(third, "1,2\n", sum(3));
    assert.equal(server.exited, undefined);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});

// --- backpressure ----------------------------------------------------------

Deno.test({
  name:
    "backpressure: a client that never reads is not buffered; others get prompt replies",
  ignore: !hasProc(),
  async fn() {
    const server = await ServerProcess.start([
      "--port",
      "0",
      "--log-level",
      "warning",
    ]);
    const pid = server.child.pid;
    const clients: LineClient[] = [];
    let flood: Promise<FloodResult> | undefined;
    try {
      const other = await connectGreeted(server.port);
      clients.push(other);
      for (let i = 0; i < 20; i++) await ask(other, "1,2\n", sum(3));
      const baseline = await rssBytes(pid);
      let peak = baseline;

      const flooder = await connectGreeted(server.port);
      clients.push(flooder);
      // ~20 MB at least, and more than every kernel buffer on the way could
      // hold, so that a server that keeps reading is bound to take it all in.
      const buffers = await maxSocketBuffers();
      const limitBytes = Math.max(
        20 * MiB,
        2 * (buffers.receive + buffers.send),
      );
      const chunk = new TextEncoder().encode("1,2\n".repeat(16384));
      let flooding = true;
      flood = floodUntilStalled(flooder.conn, chunk, {
        limitBytes,
        stallMs: 1500,
        maxMs: 15000,
      });
      flood.then(() => flooding = false);

      // Meanwhile (and for a while after the flood stalls) the other client
      // is answered promptly, and the server's memory is sampled.
      let asked = 0;
      let slowest = 0;
      const until = async (done: () => boolean) => {
        while (!done()) {
          const t = performance.now();
          await ask(other, `${asked},1\n`, sum(asked + 1), 2000);
          slowest = Math.max(slowest, performance.now() - t);
          asked++;
          peak = Math.max(peak, await rssBytes(pid));
          await delay(100);
        }
      };
      await until(() => !flooding);
      const result = await flood;
      const quietUntil = performance.now() + 1000;
      await until(() => performance.now() > quietUntil);

      assert.ok(asked >= 5, `only ${asked} requests during the flood`);
      assert.equal(result.error, undefined, "the flooding client was cut off");
      assert.ok(
        result.stalled,
        `the server read all ${result.sent} bytes of a client that never reads`,
      );
      const growth = peak - baseline;
      assert.ok(
        growth < 100 * MiB,
        `server RSS grew by ${(growth / MiB).toFixed(1)} MiB ` +
          `(flood accepted ${(result.sent / MiB).toFixed(1)} MiB)`,
      );
      console.log(
        `backpressure: flood stalled after ${
          (result.sent / MiB).toFixed(1)
        } MiB; RSS growth ${(growth / MiB).toFixed(1)} MiB; ` +
          `slowest other reply ${slowest.toFixed(0)} ms`,
      );

      // The flooder vanishes with replies pending; the server carries on.
      flooder.close();
      await withTimeout(result.pending, 3000, "the blocked write to settle");
      const fresh = await connectGreeted(server.port);
      clients.push(fresh);
      await ask(fresh, "2,2\n", sum(4));
      assert.equal(server.exited, undefined);
    } finally {
      for (const client of clients) client.close();
      const last = await flood;
      await last?.pending;
      await server.stop();
    }
  },
});

// --- accept errors ---------------------------------------------------------

Deno.test({
  name:
    "accept errors: out of file descriptors, the server logs once, backs off, recovers",
  ignore: !hasProc(),
  async fn() {
    const server = await ServerProcess.start(["--port", "0"], {
      wrapper: ["prlimit", "--nofile=40:40", "--"],
    });
    const pid = server.child.pid;
    const conns: Deno.TcpConn[] = [];
    const acceptLines = () =>
      server.stderr.split("\n").filter((line) =>
        /accept/i.test(line) && /fail|error|too many open files/i.test(line)
      );
    try {
      // More connections than the server has descriptors for: the kernel
      // completes each handshake, the server's accept() then fails (EMFILE).
      for (let i = 0; i < 60; i++) {
        conns.push(
          await withTimeout(
            Deno.connect({ hostname: HOST, port: server.port }),
            2000,
            `connect #${i}`,
          ),
        );
      }
      await server.waitForStderr(/accept/i, 5000);
      // Saturated: the server must idle in its back-off, not spin.
      const cpuBefore = await cpuSeconds(pid);
      const wallBefore = performance.now();
      await delay(1000);
      const cpu = (await cpuSeconds(pid) - cpuBefore) /
        ((performance.now() - wallBefore) / 1000);
      assert.ok(
        cpu < 0.05,
        `server used ${(cpu * 100).toFixed(0)}% CPU while saturated`,
      );
      assert.equal(server.exited, undefined, "the server exited");
      const logged = acceptLines();
      console.log(
        `accept errors: CPU ${(cpu * 100).toFixed(1)}% while saturated; ` +
          `${logged.length} accept log line(s): ${logged[0]?.trim()}`,
      );
      assert.ok(
        logged.length >= 1,
        `no accept error logged:\n${server.stderr}`,
      );
      assert.ok(
        logged.length <= 5,
        `accept error logged ${logged.length} times (once per retry?):\n` +
          logged.slice(0, 10).join("\n"),
      );

      for (const conn of conns.splice(0)) conn.close();
      // A fresh client is served normally once descriptors are free again.
      const fresh = await LineClient.connect(server.port);
      try {
        assert.equal(await fresh.readLine(8000), WELCOME);
        await ask(fresh, "1,2,3\n", sum(6));
      } finally {
        fresh.close();
      }
      assert.equal(server.exited, undefined, "the server exited");
    } finally {
      for (const conn of conns) conn.close();
      await server.stop();
    }
  },
});

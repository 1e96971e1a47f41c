/**
 * The server under overload: backpressure on a client that never
 * reads, and accept errors when file descriptors run out. A real `server.ts`
 * subprocess, because the test measures the process itself (resident memory,
 * CPU) or needs a file-descriptor limit; Linux only (`/proc`).
 */
import assert from "node:assert/strict";
import { ask, sum, WELCOME } from "./support/calc_replies.ts";
import { delay, withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { MeasuredServer } from "./support/measured_server.ts";
import { ServerProcess, startWithAdmin } from "./support/server_process.ts";
import { scrapeMetrics } from "./support/admin_client.ts";
import {
  connectMany,
  cpuSeconds,
  type FloodResult,
  floodUntilStalled,
  hasProc,
  maxSocketBuffers,
  MiB,
  rssBytes,
} from "./support/hardening.ts";

// --- backpressure ----------------------------------------------------------

Deno.test({
  name:
    "backpressure: a client that never reads is not buffered; others get prompt replies",
  ignore: !hasProc(),
  async fn() {
    await using server = await MeasuredServer.start();
    let flood: Promise<FloodResult> | undefined;
    try {
      const other = await server.connect();
      for (let i = 0; i < 20; i++) await ask(other, "1,2\n", sum(3));
      const baseline = await server.rss();
      let peak = baseline;

      const flooder = await server.connect();
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
          peak = Math.max(peak, await server.rss());
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
      const fresh = await server.connect();
      await ask(fresh, "2,2\n", sum(4));
      assert.equal(server.process.exited, undefined);
    } finally {
      server.closeClients();
      const last = await flood;
      await last?.pending;
    }
  },
});

// --- reply amplification -----------------------------------------------------

Deno.test({
  name:
    "backpressure: 50 clients flooding empty lines (one error reply each) and never reading cost a bounded read each and little memory",
  ignore: !hasProc(),
  async fn() {
    const server = await startWithAdmin(["--log-level", "warning"]);
    const pid = server.child.pid;
    const count = 50;
    const conns: Deno.TcpConn[] = [];
    const floods: Promise<FloodResult>[] = [];
    try {
      const baseline = await rssBytes(pid);
      // Each 64 KiB of LF is 65,536 requests, each answered with a 48-byte
      // error line: 3 MB of replies per read. The loopback's buffers take
      // a few MB of them before a client that never reads is "full".
      const chunk = new Uint8Array(64 * 1024).fill(10);
      await connectMany(server.port, count, conns);
      for (const conn of conns) {
        floods.push(floodUntilStalled(conn, chunk, {
          limitBytes: 16 * MiB,
          stallMs: 500,
          maxMs: 8000,
        }));
      }
      const results = await Promise.all(floods);
      const unstalled = results.filter((result) => !result.stalled).length;
      assert.equal(unstalled, 0, "clients whose flood the server kept reading");
      // Memory taken while the server had every flood at hand.
      let peak = baseline;
      for (let i = 0; i < 4; i++) {
        peak = Math.max(peak, await rssBytes(pid));
        await delay(250);
      }
      const received = (await scrapeMetrics(server.adminPort)).samples.get(
        "lineserver_bytes_received_total",
      )!;
      const growth = peak - baseline;
      console.log(
        `reply amplification: ${count} clients; server read ${
          (received / count / 1024).toFixed(0)
        } KiB per client; RSS growth ${(growth / MiB).toFixed(1)} MiB`,
      );
      // One read whose replies the loopback's buffers took in, then at most
      // one more, read but not answered while the client reads nothing. (The
      // old server read no more either: what it held is the difference.)
      assert.ok(
        received <= count * 3 * 64 * 1024,
        `the server read ${received} bytes from ${count} clients`,
      );
      // Replies are produced only as fast as they are written: the old pump
      // answered a whole read first, ~3 MB held per client (+268 MiB here).
      assert.ok(
        growth < 100 * MiB,
        `server RSS grew by ${(growth / MiB).toFixed(1)} MiB`,
      );
      assert.equal(server.exited, undefined);
    } finally {
      for (const conn of conns) conn.close();
      for (const result of await Promise.all(floods)) await result.pending;
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
      await connectMany(server.port, 60, conns);
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

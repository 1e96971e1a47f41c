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
import { ServerProcess } from "./support/server_process.ts";
import {
  connectGreeted,
  cpuSeconds,
  type FloodResult,
  floodUntilStalled,
  hasProc,
  maxSocketBuffers,
  MiB,
  rssBytes,
} from "./support/hardening.ts";

const HOST = "127.0.0.1";

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

/**
 * The idle timeout: a connection from which nothing has been received for
 * `--idle-timeout` gets the idle line and is closed, whether or not its
 * replies could be written. In-process servers (mod.ts); the command-line
 * option is in `connection_limit_test.ts`, the exact timing on a manual
 * clock in `connection_test.ts`.
 */
import assert from "node:assert/strict";
import { startServer } from "../mod.ts";
import { ask, sum, WELCOME } from "./support/calc_replies.ts";
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import {
  connectGreeted,
  floodUntilStalled,
  IDLE_LINE,
  MiB,
} from "./support/hardening.ts";

const HOST = "127.0.0.1";

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

/** The delays of the timers set while `body` runs. */
async function timersSetDuring(body: () => Promise<void>): Promise<number[]> {
  const original = globalThis.setTimeout;
  const delays: number[] = [];
  globalThis.setTimeout = ((callback: () => void, ms?: number) => {
    delays.push(ms ?? 0);
    return original(callback, ms);
  }) as typeof setTimeout;
  try {
    await body();
  } finally {
    globalThis.setTimeout = original;
  }
  return delays;
}

Deno.test("idle timeout: 0 disables it, where the default would arm a clock of 300 s", async () => {
  // A server keeps one timer per timeout (see TimeoutTracker), armed when a
  // connection's clock starts. The default arms one of 300 s for a new
  // client; 0 must arm none at all, neither a longer nor a shorter one. The
  // test's own client waits with a bound of its own, told apart by value.
  const clientWaitMs = 4321;
  const serverTimers = async (idleTimeoutMs: number | undefined) => {
    const server = await startServer({
      hostname: HOST,
      port: 0,
      idleTimeoutMs,
      lineTimeoutMs: 0,
    });
    let client: LineClient | undefined;
    try {
      const delays = await timersSetDuring(async () => {
        client = await LineClient.connect(server.addr.port, {
          timeoutMs: clientWaitMs,
        });
        assert.equal(await client.readLine(clientWaitMs), WELCOME);
        await ask(client, "1,2\n", sum(3), clientWaitMs);
      });
      // Had the server timed the client out, this would read the idle line.
      await ask(client!, "3,4\n", sum(7));
      assert.equal(client!.buffered.length, 0);
      return delays.filter((ms) => ms !== clientWaitMs);
    } finally {
      client?.close();
      await server.shutdown();
    }
  };
  const byDefault = await serverTimers(undefined);
  assert.equal(byDefault.length, 1, `timers: ${byDefault}`);
  assert.ok(
    byDefault[0] > 299_000 && byDefault[0] <= 300_000,
    `the default idle clock: ${byDefault[0]} ms`,
  );
  assert.deepEqual(await serverTimers(0), [], "no idle clock with 0");
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
    // The server closes the flooder at its idle timeout although the
    // replies cannot be written; only that frees the one slot.
    await waitFor(
      "the flooder to be closed at its idle timeout",
      () => server.metrics.connectionsClosed.idle_timeout === 1,
      idleMs + 10000,
    );
    assert.equal(server.metrics.connectionsActive, 0);
    const probe = await connectGreeted(port);
    probes.push(probe);
    await ask(probe, "5,6\n", sum(11));
  } finally {
    flooder.close();
    await withTimeout(pending, 2000, "the blocked flood write to settle");
    for (const probe of probes) probe.close();
    await server.shutdown();
  }
});

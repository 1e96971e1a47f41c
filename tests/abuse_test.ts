/**
 * Abuse resistance over real sockets: the line timeout (a slow-drip client
 * is cut; a client sending whole lines slowly is not) and the per-address
 * connection limit (a refused client takes no slot; a freed slot is
 * reusable).
 */
import assert from "node:assert/strict";
import { sum, WELCOME } from "./support/calc_replies.ts";
import { delay, waitFor } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { withServer } from "./support/socket_harness.ts";

const LINE_TIMEOUT_LINE = "<line timeout: closing connection>";
const PER_ADDRESS_LINE =
  "ERROR. Too many connections from your address, try again later";

/**
 * Sends one byte every 50 ms (each one restarts the idle clock, never the
 * line clock) until the server cuts the client; returns how long that took.
 */
async function dribbleUntilCut(client: LineClient): Promise<number> {
  const started = performance.now();
  const dribble = (async () => {
    for (let i = 0; i < 100 && !client.eof; i++) {
      await client.send("7").catch(() => {});
      await delay(50);
    }
  })();
  assert.equal(await client.readLine(6000), LINE_TIMEOUT_LINE);
  await client.expectClosed(3000);
  const elapsed = performance.now() - started;
  await dribble;
  return elapsed;
}

Deno.test("line timeout: a client that dribbles one byte at a time is cut near the timeout", async () => {
  await withServer({ lineTimeoutMs: 400 }, async ({ server, connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    const elapsed = await dribbleUntilCut(client);
    assert.ok(
      elapsed >= 400 && elapsed < 1500,
      `cut after ${elapsed.toFixed(0)} ms`,
    );
    client.close();
    await waitFor(
      "the line timeout is counted",
      () => server.metrics.connectionsClosed.line_timeout === 1,
      3000,
    );
    assert.equal(server.metrics.errors.line_timeout, 1);
  });
});

Deno.test("line timeout: whole lines sent slowly are never cut, however long the session", async () => {
  await withServer({ lineTimeoutMs: 300 }, async ({ server, connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    // Four times the line timeout in all, each line well within it.
    for (let i = 0; i < 12; i++) {
      await client.send(`${i},1\n`);
      assert.equal(await client.readLine(), sum(i + 1));
      await delay(100);
    }
    // A line split in two parts, both within the timeout, is fine too.
    await client.send("2,");
    await delay(150);
    await client.send("2\n");
    assert.equal(await client.readLine(), sum(4));
    assert.equal(server.metrics.connectionsClosed.line_timeout, 0);
  });
});

Deno.test("line timeout: the clock starts at the first byte of a line, not at the previous reply", async () => {
  await withServer({ lineTimeoutMs: 300 }, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    // A reply, then silence longer than the line timeout: nothing is cut.
    await client.send("1\n");
    assert.equal(await client.readLine(), sum(1));
    await delay(450);
    // Then a line begun and finished within the timeout is answered.
    await client.send("2");
    await delay(100);
    await client.send("\n");
    assert.equal(await client.readLine(), sum(2));
  });
});

Deno.test("line timeout: an over-long line dribbled after its error reply is cut too", async () => {
  await withServer(
    { lineTimeoutMs: 400, maxLineBytes: 8 },
    async ({ connect }) => {
      const client = await connect();
      assert.equal(await client.readLine(), WELCOME);
      await client.send("123456789");
      assert.equal(
        await client.readLine(),
        "ERROR. Line too long (max 8 bytes)",
      );
      const elapsed = await dribbleUntilCut(client);
      assert.ok(elapsed < 1500, `cut after ${elapsed.toFixed(0)} ms`);
    },
  );
});

Deno.test("per-address limit: the client over the limit is refused, takes no slot, and a freed slot is reusable", async () => {
  await withServer(
    { maxConnectionsPerIp: 2, maxConnections: 3 },
    async ({ server, connect }) => {
      const first = await connect();
      const second = await connect();
      assert.equal(await first.readLine(), WELCOME);
      assert.equal(await second.readLine(), WELCOME);
      const refused = await connect();
      assert.equal(await refused.readLine(), PER_ADDRESS_LINE);
      await refused.expectClosed();
      assert.equal(server.activeConnections, 2);
      assert.equal(server.metrics.connectionsClosed.refused_per_ip, 1);
      assert.equal(server.metrics.errors.refused_per_ip, 1);
      assert.equal(server.metrics.connectionsClosed.refused_busy, 0);

      // A freed slot of this address is taken by the next client.
      first.close();
      await waitFor(
        "the slot is given back",
        () => server.activeConnections === 1,
        3000,
      );
      const third = await connect();
      assert.equal(await third.readLine(), WELCOME);
      await third.send("1,2\n");
      assert.equal(await third.readLine(), sum(3));
    },
  );
});

/**
 * Shutdown and abort do not wait for what cannot finish: a silent client
 * still in its PROXY header is closed at once (not at the header's 5 s
 * deadline), and `abort()` closes idle connections at once, counting them
 * as closed by force.
 *
 * In-process servers (mod.ts) on 127.0.0.1 port 0: the sanitizers check
 * that no timer (the header deadline, a linger) outlives the server.
 */
import assert from "node:assert/strict";
import { withTimeout } from "./support/deadline.ts";
import { ask, sum } from "./support/calc_replies.ts";
import { SHUTTING_DOWN } from "./support/hardening.ts";
import { untilActive, withServer } from "./support/socket_harness.ts";

/** A shutdown timeout far beyond every bound below: waiting for it would fail the test. */
const NEVER_REACHED_MS = 60_000;
/**
 * How long closing must take at most. The old drain waited for the PROXY
 * header's deadline (3-5 s) and for the 500 ms linger of each forced
 * connection; a prompt one takes a few milliseconds, so even a loaded
 * machine stays far below this.
 */
const PROMPT_MS = 350;

// withServer's own final shutdown() returns the promise of the shutdown or
// abort() the test started, so it only waits for what the test awaited.

Deno.test("shutdown: a silent client still in its PROXY header does not hold the drain; it is closed at once", async () => {
  await withServer(
    { proxyProtocol: true, shutdownTimeoutMs: NEVER_REACHED_MS },
    async ({ server, connect }) => {
      const silent = await connect();
      // Accepted in order: once a later client is served, the silent one has
      // been accepted and is waiting for its header.
      const served = await connect();
      await served.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n");
      assert.match(await served.readLine(), /welcome/);
      await ask(served, "1,2\n", sum(3));
      served.close();
      await untilActive(server, 0);

      const startedAt = performance.now();
      const summary = await withTimeout(server.shutdown(), 5000, "shutdown()");
      const tookMs = performance.now() - startedAt;
      assert.ok(tookMs < PROMPT_MS, `shutdown took ${tookMs.toFixed(0)} ms`);
      assert.deepEqual(summary, {
        served: 1,
        closedGracefully: 0,
        closedByForce: 0,
      });
      // The silent client was closed without a word.
      assert.equal(await silent.readToEnd(1000), "");
    },
  );
});

Deno.test("abort(): five idle clients are closed at once and counted as closed by force", async () => {
  await withServer(
    { shutdownTimeoutMs: NEVER_REACHED_MS },
    async ({ server, connectGreeted }) => {
      const clients = [];
      for (let i = 0; i < 5; i++) clients.push(await connectGreeted());
      await untilActive(server, 5);
      const startedAt = performance.now();
      const summary = await withTimeout(server.abort(), 5000, "abort()");
      const tookMs = performance.now() - startedAt;
      assert.deepEqual(summary, {
        served: 5,
        closedGracefully: 0,
        closedByForce: 5,
      });
      assert.ok(tookMs < PROMPT_MS, `abort() took ${tookMs.toFixed(0)} ms`);
      assert.equal(server.metrics.connectionsClosed.forced, 5);
      assert.equal(server.metrics.connectionsClosed.shutdown, 0);
      for (const client of clients) {
        // The shutdown line is best effort; nothing else may arrive.
        const rest = await client.readToEnd(1000);
        assert.ok(
          rest === "" || rest === `${SHUTTING_DOWN}\r\n`,
          JSON.stringify(rest),
        );
      }
    },
  );
});

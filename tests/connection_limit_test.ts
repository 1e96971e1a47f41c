/**
 * The connection limit: a client beyond `--max-connections` gets only the
 * error line and never takes a slot. In-process servers (mod.ts) where only
 * the wire is observed; a real `server.ts` subprocess for the command-line
 * options (with the idle timeout, which frees the one slot).
 *
 * A client is connected to a freed slot only once the server shows it has
 * given the slot back (its metrics), never after a guessed delay or by
 * retrying until it works.
 */
import assert from "node:assert/strict";
import { ask, sum, WELCOME } from "./support/calc_replies.ts";
import { untilActive, withServer } from "./support/socket_harness.ts";
import { LineClient } from "./support/line_client.ts";
import { startWithAdmin } from "./support/server_process.ts";
import { waitForMetric } from "./support/admin_client.ts";
import { connectGreeted, IDLE_LINE, TOO_MANY } from "./support/hardening.ts";

Deno.test("max connections: a client beyond the limit gets only the error line, never a slot", async () => {
  await withServer(
    { maxConnections: 2, shutdownTimeoutMs: 1000 },
    async ({ server, connect, connectGreeted }) => {
      const first = await connectGreeted();
      const second = await connectGreeted();
      // Several clients over the limit, kept open on our side: each receives
      // exactly the error line (no welcome) and the server closes it.
      for (let i = 0; i < 3; i++) {
        const extra = await connect();
        assert.equal(await extra.readToEnd(3000), TOO_MANY);
      }
      // The served clients are untouched.
      await ask(first, "1,2\n", sum(3));
      await ask(second, "2,3\n", sum(5));
      // One slot frees up: the next client is served (the turned-away clients
      // did not keep slots).
      first.close();
      await untilActive(server, 1); // the server has seen it leave
      const fresh = await connectGreeted();
      await ask(fresh, "3,4\n", sum(7));
      // Still exactly two slots (the turned-away clients gave none back either).
      const over = await connect();
      assert.equal(await over.readToEnd(3000), TOO_MANY);
      await ask(second, "4,5\n", sum(9));
    },
  );
});

Deno.test("CLI: --max-connections and --idle-timeout (fractional) are honoured", async () => {
  const server = await startWithAdmin([
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
    assert.equal(await first.readLine(10000), IDLE_LINE);
    await first.expectClosed(2000);
    // Not before the timeout (the server's clock starts after our connect);
    // that it comes at all shows the fraction is not the 300 s default.
    const elapsed = performance.now() - connectedAt;
    assert.ok(
      elapsed >= 400,
      `idle close after ${elapsed.toFixed(0)} ms with --idle-timeout 0.5`,
    );
    await waitForMetric(
      server.adminPort,
      "lineserver_connections_active",
      (active) => active === 0,
    );
    const third = await connectGreeted(server.port);
    clients.push(third);
    await ask(third, "1,2\n", sum(3));
    assert.equal(server.exited, undefined);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});

Deno.test("max connections: a client that connects once another has left gets its slot", async () => {
  await withServer(
    { maxConnections: 1, shutdownTimeoutMs: 1000 },
    async ({ server, connect, connectGreeted }) => {
      // Twenty times: close the only client and connect the next one as soon
      // as the server has seen it leave; the slot must be free again.
      let current = await connectGreeted();
      for (let round = 0; round < 20; round++) {
        current.close();
        await untilActive(server, 0); // the server has seen it leave
        current = await connect();
        assert.equal(await current.readLine(3000), WELCOME, `round ${round}`);
      }
      await ask(current, "1,2\n", sum(3));
    },
  );
});

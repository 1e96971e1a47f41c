/**
 * A reset flood: clients that connect and reset (SO_LINGER 0) before the
 * server has accepted them. Such a failure concerns that one connection, so
 * accepting must go on at once: the next honest client is welcomed promptly,
 * and the resets are counted.
 *
 * The server process is stopped (SIGSTOP) while the flood connects and
 * resets, so every reset is certain to happen before the server's accept,
 * then continued (SIGCONT). Linux only.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { WELCOME } from "./support/calc_replies.ts";
import { withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { startWithAdmin } from "./support/server_process.ts";
import { scrapeMetrics } from "./support/admin_client.ts";

const HOST = "127.0.0.1";
const FLOOD = 150;
const ROUNDS = 3;
/** Far below a back-off's first second, far above a welcome's cost. */
const WELCOME_BOUND_MS = 500;

/** Connects, then resets (RST, no FIN) as soon as the handshake is done. */
function connectAndReset(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST, () => {
      socket.resetAndDestroy();
      resolve();
    });
    socket.on("error", () => resolve());
  });
}

async function welcomeLatencyMs(port: number): Promise<number> {
  const started = performance.now();
  const client = await LineClient.connect(port);
  try {
    assert.equal(await client.readLine(), WELCOME);
    return performance.now() - started;
  } finally {
    client.close();
  }
}

function acceptedOrCounted(samples: Map<string, number>): number {
  // A reset before accept shows either as a failed accept or as a
  // connection that ended reset (or closed) at once: the totals must add up.
  return (samples.get('lineserver_accept_errors_total{kind="peer_reset"}') ??
    0) +
    (samples.get('lineserver_connections_total{outcome="reset"}') ?? 0) +
    (samples.get('lineserver_connections_total{outcome="peer_closed"}') ?? 0);
}

Deno.test({
  name:
    "reset flood: clients reset before accept cost nothing; the next client is welcomed at once",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using server = await startWithAdmin(["--log-level", "warning"]);
    const adminPort = server.adminPort;
    const latencies: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      server.child.kill("SIGSTOP");
      try {
        await withTimeout(
          Promise.all(
            Array.from({ length: FLOOD }, () => connectAndReset(server.port)),
          ),
          10000,
          "the reset flood",
        );
      } finally {
        server.child.kill("SIGCONT");
      }
      latencies.push(await welcomeLatencyMs(server.port));
    }
    console.log(
      `welcome after a flood of ${FLOOD} resets: ${
        latencies.map((ms) => ms.toFixed(1)).join(", ")
      } ms`,
    );
    for (const ms of latencies) {
      assert.ok(ms < WELCOME_BOUND_MS, `welcomed after ${ms.toFixed(0)} ms`);
    }
    const { samples } = await scrapeMetrics(adminPort);
    // The honest clients closed normally too (peer_closed): FLOOD per round plus one.
    assert.equal(acceptedOrCounted(samples), ROUNDS * (FLOOD + 1));
    assert.ok(server.exited === undefined, "the server is still running");
  },
});

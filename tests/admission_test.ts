/**
 * Admission over real sockets: one rule for both limits. A client that
 * finds a limit full waits a short grace for a slot; one that leaves while
 * it waits takes no slot with it; and a client that closes and reconnects
 * at once is admitted under the per-address limit as under the server-wide
 * one, although the server sees its close a moment after the client does.
 *
 * In-process servers (mod.ts) on 127.0.0.1 port 0.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { ServerReplies } from "../mod.ts";
import { ask, BYE, sum, WELCOME } from "./support/calc_replies.ts";
import { delay, withTimeout } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { untilActive, withServer } from "./support/socket_harness.ts";

const HOST = "127.0.0.1";
const WAIT_MS = 5000;

/** A PROXY v1 header for a client at 203.0.113.7 (the per-address limit is not in play). */
const PROXY_HEADER = "PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n";

/**
 * Connects with node:net, sends `first` (if any) and resets (SO_LINGER 0)
 * as soon as the connection is up.
 */
async function connectAndResetAtOnce(
  port: number,
  first: string,
): Promise<void> {
  const socket = net.connect(port, HOST);
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.once("close", resolve));
  socket.once("connect", () => {
    if (first !== "") socket.write(first);
    socket.resetAndDestroy();
  });
  await withTimeout(closed, WAIT_MS, "a reset client to close");
}

for (const proxyProtocol of [false, true]) {
  Deno.test(`admission: clients that reset while they wait for a slot of a full server leak none (proxyProtocol: ${proxyProtocol})`, async () => {
    const maxConnections = 2;
    await withServer(
      { maxConnections, proxyProtocol, shutdownTimeoutMs: 1000 },
      async ({ server, port, connect }) => {
        const header = proxyProtocol ? PROXY_HEADER : "";
        const connectServed = async () => {
          const client = await connect();
          await client.send(header);
          assert.equal(await client.readLine(), WELCOME);
          return client;
        };
        const steady = await connectServed();
        // Each round the server is full; a client connects (sends its
        // header) and resets at once, so it waits the grace and is gone
        // before the grace ends; meanwhile a slot frees, so that the wait
        // can end with a slot for a closed stream.
        for (let round = 0; round < 30; round++) {
          const leaving = await connectServed();
          const reset = connectAndResetAtOnce(port, header);
          // Spread the slot's release over the grace (10 ms) from round to round.
          await delay(round % 8);
          leaving.close();
          await reset;
          await untilActive(server, 1);
        }
        // Every slot is still there: maxConnections clients are served at once.
        steady.close();
        await untilActive(server, 0);
        const served: LineClient[] = [];
        for (let i = 0; i < maxConnections; i++) {
          served.push(await connectServed());
        }
        for (const client of served) await ask(client, "1,2\n", sum(3));
      },
      { shutdownWithinMs: WAIT_MS },
    );
  });
}

Deno.test("admission: under a per-address limit of 1, a client that quits and reconnects at once is admitted, 20 times of 20", async () => {
  await withServer(
    { maxConnectionsPerIp: 1, shutdownTimeoutMs: 1000 },
    async ({ server, connect, connectGreeted }) => {
      const refusals: number[] = [];
      let client = await connectGreeted();
      for (let attempt = 1; attempt <= 20; attempt++) {
        await client.send("quit\n");
        assert.equal(await client.readLine(), BYE);
        await client.expectClosed();
        client.close();
        // At once: no waiting for the server to give the address's slot back.
        // The first line is the greeting, or the refusal the client gets
        // when no slot frees within the grace (then the server closes it).
        client = await connect();
        const line = await client.readLine();
        if (line === WELCOME) continue;
        assert.equal(line, ServerReplies.tooManyFromAddress);
        refusals.push(attempt);
        await client.expectClosed();
        client.close();
        // After a refusal: once the server holds no slot, connect again.
        await untilActive(server, 0);
        client = await connectGreeted();
      }
      assert.deepEqual(refusals, [], "attempts refused");
      await ask(client, "2,3\n", sum(5));
    },
    { shutdownWithinMs: WAIT_MS },
  );
});

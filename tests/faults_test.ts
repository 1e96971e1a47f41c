/**
 * Faults stay inside one connection ("Dead peers", "Faults"): peers that
 * reset or vanish with replies pending, and a protocol session that throws,
 * end only their own connection; every other client, and new ones, are
 * served. In-process servers (mod.ts), so the sanitizers also check that the
 * server leaves no resource or op behind. A freed slot is used once the
 * server's metrics show it free, never after a guessed delay.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { type LineProtocol, type LineSession, startServer } from "../mod.ts";
import { ask, sum } from "./support/calc_replies.ts";
import { delay, waitFor } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  type Harness,
  untilActive,
  withServer,
} from "./support/socket_harness.ts";
import { connectGreeted } from "./support/hardening.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();

/**
 * Connects, sends `requests` and closes at once without reading anything:
 * with the welcome and replies unread, the close resets the connection (RST),
 * and the server's pending writes fail.
 */
async function connectSendVanish(
  port: number,
  requests: Uint8Array,
  lingerMs: number,
): Promise<void> {
  const conn = await Deno.connect({ hostname: HOST, port });
  try {
    let rest = requests;
    while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
    if (lingerMs > 0) await delay(lingerMs); // let replies pile up unread
  } catch {
    // The server may already have dropped us (e.g. limit reached): fine.
  } finally {
    conn.close();
  }
}

Deno.test("dead peers: clients that reset with replies pending end only their own task", async () => {
  // A small limit makes a leaked task visible: its slot would never come back.
  const maxConnections = 8;
  const server = await startServer({
    hostname: HOST,
    port: 0,
    maxConnections,
    shutdownTimeoutMs: 1000,
  });
  const port = server.addr.port;
  const clients: LineClient[] = [];
  try {
    const steady = await connectGreeted(port);
    clients.push(steady);
    const burst = encoder.encode("1,2\n".repeat(4000)); // ~110 KB of replies
    for (let round = 0; round < 12; round++) {
      await Promise.all(
        Array.from(
          { length: 6 },
          (_, i) => connectSendVanish(port, burst, i % 3 === 0 ? 0 : 5 * i),
        ),
      );
      // A client connected the whole time is answered after every round.
      await ask(steady, `${round},1\n`, sum(round + 1));
    }
    // Every vanished client gave its slot back: the limit is reachable again.
    await untilActive(server, 1);
    for (let i = 1; i < maxConnections; i++) {
      clients.push(await connectGreeted(port));
    }
    for (const [i, client] of clients.entries()) {
      await ask(client, `${i},2\n`, sum(i + 2));
    }
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});

Deno.test("dead peers: once a client has reset, no more of its lines are answered", async () => {
  const server = await startServer({ hostname: HOST, port: 0 });
  const socket = net.connect({ host: HOST, port: server.addr.port });
  socket.on("error", () => {});
  try {
    await new Promise((resolve) => socket.once("connect", resolve));
    // Empty lines (an error line each) that are never read: the server
    // answers until its output bound is reached, then holds the rest of
    // what it has read unanswered.
    socket.write(new Uint8Array(8 * 1024 * 1024).fill(0x0a));
    let last = -1;
    let still = 0;
    await waitFor(
      "the server to stop answering the client that does not read",
      () => {
        const now = server.metrics.linesTotal;
        still = now > 0 && now === last ? still + 1 : 0;
        last = now;
        return still >= 4 && socket.writableLength > 0;
      },
      10_000,
    );
    const answeredBefore = server.metrics.linesTotal;
    const ended = new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
    });
    socket.resetAndDestroy();
    await ended;
    await untilActive(server, 0);
    // Before: each failed write of the reset connection answered the next
    // batch of its lines, tens of thousands of them, taking the event loop.
    const answeredAfter = server.metrics.linesTotal - answeredBefore;
    assert.ok(
      answeredAfter < 100,
      `${answeredAfter} lines answered after the reset`,
    );
  } finally {
    socket.destroy();
    await server.shutdown();
  }
});

Deno.test("dead peers: a reset is quiet (no warning, no stack trace); the process serves on", async () => {
  const server = await ServerProcess.start(["--port", "0"]);
  try {
    const burst = encoder.encode("1,2\n".repeat(4000));
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        Array.from(
          { length: 6 },
          (_, i) => connectSendVanish(server.port, burst, i % 2 ? 0 : 10),
        ),
      );
    }
    const client = await connectGreeted(server.port);
    try {
      await ask(client, "1,2,3\n", sum(6));
    } finally {
      client.close();
    }
    // Whatever the server logs for a connection, it logs before the line
    // that says it closed: once all 31 are there, nothing more is coming.
    await waitFor(
      "the server to log every connection closed",
      () => server.stderr.match(/connection closed /g)?.length === 31,
      10000,
    );
    assert.equal(server.exited, undefined);
    assert.doesNotMatch(
      server.stderr,
      /^\s+at /m,
      "reset peers must be logged quietly, not with a stack trace",
    );
    // Quietly: at the default level (info) nothing is logged as a warning or error.
    assert.doesNotMatch(server.stderr, /\b(WARN(ING)?|ERROR|FATAL)\b/);
  } finally {
    await server.stop();
  }
});

// --- a protocol session that throws ----------------------------------------

/**
 * A custom protocol whose session answers `ok: <line>`, throws on `boom`,
 * returns a rejected promise on `async boom`, and whose createSession throws
 * for the connection numbers in `failingSessions` (1-based).
 */
function faultyProtocol(failingSessions: number[] = []): LineProtocol {
  let created = 0;
  return {
    name: "faulty",
    createSession(): LineSession {
      created++;
      if (failingSessions.includes(created)) {
        throw new Error(`createSession #${created} fails on purpose`);
      }
      return {
        greeting: "ready",
        ended: false,
        reply(line: string): string | Promise<string> {
          if (line === "boom") throw new Error("boom on purpose");
          if (line === "async boom") {
            return Promise.reject(new Error("async boom on purpose"));
          }
          return `ok: ${line}`;
        },
      };
    },
  };
}

/** Reads until the server closes the connection; the fault must not hang it. */
async function expectDropped(client: LineClient, what: string) {
  await client.readToEnd(3000).catch((error) => {
    throw new Error(`${what}: connection not closed: ${error.message}`);
  });
}

/**
 * Once the bystander is the only client holding a slot (the failed one gave
 * its own back), connects another: it is greeted and answers `request`.
 */
async function serveAnother(
  { server, connect }: Harness,
  request: string,
): Promise<LineClient> {
  await untilActive(server, 1);
  const client = await connect();
  assert.equal(await client.readLine(), "ready");
  await ask(client, `${request}\n`, `ok: ${request}`);
  return client;
}

Deno.test("faults: a session that throws closes only its connection", async () => {
  // Two slots: the next client can only be served if the failed one gave its slot back.
  await withServer(
    { protocol: faultyProtocol(), maxConnections: 2 },
    async (harness) => {
      const bystander = await connectGreeted(harness.port, "ready");
      const victim = await connectGreeted(harness.port, "ready");
      try {
        await ask(victim, "before\n", "ok: before");
        await victim.send("boom\n");
        await expectDropped(victim, "after a thrown error");
        await ask(bystander, "still here\n", "ok: still here");

        const second = await serveAnother(harness, "hello");
        await second.send("async boom\n");
        await expectDropped(second, "after a rejected reply promise");
        await ask(bystander, "and here\n", "ok: and here");

        await serveAnother(harness, "fine");
      } finally {
        bystander.close();
        victim.close();
      }
    },
  );
});

Deno.test("faults: createSession throwing closes only that connection", async () => {
  await withServer(
    { protocol: faultyProtocol([2, 3]), maxConnections: 2 },
    async (harness) => {
      const bystander = await connectGreeted(harness.port, "ready");
      try {
        for (const n of [2, 3]) {
          const failing = await harness.connect();
          await expectDropped(failing, `session #${n}`);
        }
        await ask(bystander, "alive\n", "ok: alive");
        await serveAnother(harness, "served");
      } finally {
        bystander.close();
      }
    },
  );
});

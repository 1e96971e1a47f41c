/**
 * Faults stay inside one connection (SPEC §5 "Dead peers", "Faults"): peers
 * that reset or vanish with replies pending, and a protocol session that
 * throws, end only their own connection; every other client, and new ones,
 * are served. In-process servers (mod.ts), so the sanitizers also check that
 * the server leaves no resource or op behind.
 */
import assert from "node:assert/strict";
import { type LineProtocol, type LineSession, startServer } from "../mod.ts";
import { delay } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import { connectGreeted, connectWhenSlotFree } from "./support/hardening.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();
const sum = (n: number) => `Sum of input integers: '${n}'`;

/** Sends `request` and asserts the reply line. */
async function ask(client: LineClient, request: string, expected: string) {
  await client.send(request);
  assert.equal(await client.readLine(2000), expected);
}

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

/** Serves `count` more clients at once (retrying while slots are freed). */
async function serveMany(port: number, count: number): Promise<LineClient[]> {
  const clients: LineClient[] = [];
  try {
    for (let i = 0; i < count; i++) {
      clients.push(await connectWhenSlotFree(port, { timeoutMs: 3000 }));
    }
    return clients;
  } catch (error) {
    for (const client of clients) client.close();
    throw error;
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
      await delay(20);
    }
    // Every vanished client gave its slot back: the limit is reachable again.
    clients.push(...await serveMany(port, maxConnections - 1));
    for (const [i, client] of clients.entries()) {
      await ask(client, `${i},2\n`, sum(i + 2));
    }
  } finally {
    for (const client of clients) client.close();
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
    await delay(200); // let the server log whatever it logs for the resets
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

Deno.test("faults: a session that throws closes only its connection", async () => {
  // Two slots: the next client can only be served if the failed one gave its slot back.
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: faultyProtocol(),
    maxConnections: 2,
    shutdownTimeoutMs: 1000,
  });
  const port = server.addr.port;
  const clients: LineClient[] = [];
  try {
    const bystander = await connectGreeted(port, "ready");
    const victim = await connectGreeted(port, "ready");
    clients.push(bystander, victim);
    await ask(victim, "before\n", "ok: before");
    await victim.send("boom\n");
    await expectDropped(victim, "after a thrown error");
    await ask(bystander, "still here\n", "ok: still here");

    const second = await connectWhenSlotFree(port, { greeting: "ready" });
    clients.push(second);
    await ask(second, "hello\n", "ok: hello");
    await second.send("async boom\n");
    await expectDropped(second, "after a rejected reply promise");
    await ask(bystander, "and here\n", "ok: and here");

    const third = await connectWhenSlotFree(port, { greeting: "ready" });
    clients.push(third);
    await ask(third, "fine\n", "ok: fine");
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});

Deno.test("faults: createSession throwing closes only that connection", async () => {
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: faultyProtocol([2, 3]),
    maxConnections: 2,
    shutdownTimeoutMs: 1000,
  });
  const port = server.addr.port;
  const clients: LineClient[] = [];
  try {
    const bystander = await connectGreeted(port, "ready");
    clients.push(bystander);
    for (const n of [2, 3]) {
      const failing = await LineClient.connect(port);
      clients.push(failing);
      await expectDropped(failing, `session #${n}`);
    }
    await ask(bystander, "alive\n", "ok: alive");
    const fourth = await connectWhenSlotFree(port, { greeting: "ready" });
    clients.push(fourth);
    await ask(fourth, "served\n", "ok: served");
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});

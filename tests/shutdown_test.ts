/**
 * Graceful shutdown. `server.ts` subprocesses receive real SIGTERM
 * and SIGINT signals; the library's `server.shutdown()` is checked in-process
 * with exact summary counts.
 *
 * No test waits for a guessed duration: a test that must know the server
 * has read what it sent waits for the server's own byte count (`/metrics`,
 * or `server.metrics` in-process). A shutdown that must not wait for its
 * timeout is given one far longer than any test bound, so that waiting for
 * it would fail the test.
 */
import assert from "node:assert/strict";
import { type LineProtocol, startServer } from "../mod.ts";
import { waitFor, withTimeout } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { ServerProcess, startWithAdmin } from "./support/server_process.ts";
import { waitForMetric } from "./support/admin_client.ts";
import { untilReceived } from "./support/socket_harness.ts";
import { ask, sum } from "./support/calc_replies.ts";
import {
  connectGreeted,
  expectConnectRefused,
  SHUTTING_DOWN,
} from "./support/hardening.ts";

const HOST = "127.0.0.1";
const BYE = `${SHUTTING_DOWN}\r\n`;
/** A shutdown timeout no test waits for (seconds): a drain that waited for it would fail the test. */
const NEVER_REACHED_S = "600";

/** The shutdown summary line: served, open at shutdown, finished gracefully, closed by force. */
const SUMMARY =
  /(\d+) connections? served; (\d+) open at shutdown: (\d+) finished gracefully, (\d+) closed by force/;

/** Asserts the summary line's counts; those open at shutdown are the other two added up. */
function assertSummary(
  stderr: string,
  expected: { served: number; gracefully: number; byForce: number },
) {
  const match = stderr.match(SUMMARY);
  assert.ok(match, `no shutdown summary in stderr:\n${stderr}`);
  assert.deepEqual(
    {
      served: Number(match[1]),
      open: Number(match[2]),
      gracefully: Number(match[3]),
      byForce: Number(match[4]),
    },
    { ...expected, open: expected.gracefully + expected.byForce },
    match[0],
  );
}

/** A `server.ts` subprocess with its admin endpoint, to read what it has done. */
interface Served {
  server: ServerProcess;
  /** Clients opened by the test; closed when it ends. */
  clients: LineClient[];
  /** Waits until the server has read exactly `bytes` bytes from its clients. */
  received(bytes: number): Promise<void>;
}

/** Starts `server.ts` with `args`, runs `body`, always reaps the process and closes clients. */
async function withProcess(
  args: string[],
  body: (served: Served) => Promise<void>,
) {
  const server = await startWithAdmin(args);
  const clients: LineClient[] = [];
  try {
    const received = async (bytes: number) => {
      const read = await waitForMetric(
        server.adminPort,
        "lineserver_bytes_received_total",
        (value) => value >= bytes,
      );
      assert.equal(read, bytes, "bytes the server has read");
    };
    await body({ server, clients, received });
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}

/** Connects `count` clients (each greeted) into `clients`. */
async function greetMany(
  port: number,
  count: number,
  clients: LineClient[],
): Promise<LineClient[]> {
  const fresh: LineClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await connectGreeted(port);
    clients.push(client);
    fresh.push(client);
  }
  return fresh;
}

/**
 * Greets an idle client and one that sends half a line (which keeps the
 * drain going), signals once the server has read that half, and waits for
 * the idle client's shutdown line: the drain has begun and goes on. Returns
 * the client in the middle of its line.
 */
async function drainAroundHalfLine(
  { server, clients, received }: Served,
  signal: Deno.Signal,
): Promise<LineClient> {
  const [idle, busy] = await greetMany(server.port, 2, clients);
  await busy.send("1,2");
  await received(3);
  server.signal(signal);
  assert.equal(await idle.readToEnd(3000), BYE);
  assert.equal(server.exited, undefined, "still draining");
  return busy;
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal}: idle clients get the shutdown line then EOF; exit 0 with a summary, without waiting for the timeout`, async () => {
    await withProcess(
      ["--shutdown-timeout", NEVER_REACHED_S],
      async ({ server, clients }) => {
        const [idle, served] = await greetMany(server.port, 2, clients);
        await ask(served, "1,2\n", sum(3));
        server.signal(signal);
        assert.equal(await idle.readToEnd(3000), BYE);
        assert.equal(await served.readToEnd(3000), BYE);
        // Nothing left to drain: the exit must not wait for the timeout.
        const status = await server.waitForExit(10000);
        assert.equal(status.code, 0, server.stderr);
        assertSummary(server.stderr, { served: 2, gracefully: 2, byForce: 0 });
      },
    );
  });
}

Deno.test("shutdown: new connections are refused at once; a line in progress is finished and answered, then the shutdown line", async () => {
  await withProcess(
    ["--shutdown-timeout", NEVER_REACHED_S],
    async (served) => {
      const { server } = served;
      // Only once the drain has begun is the line finished.
      const busy = await drainAroundHalfLine(served, "SIGTERM");
      await expectConnectRefused(server.port);
      await busy.send("\n");
      assert.deepEqual(await busy.readLines(2, 2000), [sum(3), SHUTTING_DOWN]);
      await busy.expectClosed(2000);
      const status = await server.waitForExit(10000);
      assert.equal(status.code, 0, server.stderr);
      assertSummary(server.stderr, { served: 2, gracefully: 2, byForce: 0 });
    },
  );
});

Deno.test("shutdown: a line never finished is closed by force at --shutdown-timeout, not before; exit 0", async () => {
  await withProcess(
    ["--shutdown-timeout", "1"],
    async ({ server, clients, received }) => {
      const [stuck] = await greetMany(server.port, 1, clients);
      await stuck.send("4,5"); // and nothing more
      await received(3);
      const signalledAt = performance.now();
      server.signal("SIGTERM");
      const rest = await stuck.readToEnd(10000);
      const closedAfter = performance.now() - signalledAt;
      // A best-effort shutdown line may precede the forced close; no reply to the fragment.
      assert.ok(rest === "" || rest === BYE, `got ${JSON.stringify(rest)}`);
      // The server's own timer starts after the signal arrives: not sooner
      // (with room for timer granularity).
      assert.ok(
        closedAfter >= 700,
        `closed ${closedAfter.toFixed(0)} ms after the signal (timeout 1 s)`,
      );
      const status = await server.waitForExit(10000);
      assert.equal(status.code, 0, server.stderr);
      assertSummary(server.stderr, { served: 1, gracefully: 0, byForce: 1 });
    },
  );
});

for (
  const [first, second] of [["SIGTERM", "SIGINT"], [
    "SIGINT",
    "SIGTERM",
  ]] as const
) {
  Deno.test(`shutdown: ${second} during the ${first} drain exits 1 at once`, async () => {
    await withProcess(
      ["--shutdown-timeout", NEVER_REACHED_S],
      async (served) => {
        const { server } = served;
        // The half line keeps the drain going until the timeout.
        const stuck = await drainAroundHalfLine(served, first);
        server.signal(second);
        // Only the second signal can end this drain before its timeout.
        const status = await server.waitForExit(10000);
        assert.equal(status.code, 1, server.stderr);
        const rest = await stuck.readToEnd(2000);
        assert.ok(rest === "" || rest === BYE, `got ${JSON.stringify(rest)}`);
      },
    );
  });
}

Deno.test("shutdown: 300 idle clients all get the shutdown line; exit without waiting for the timeout", async () => {
  await withProcess(
    ["--shutdown-timeout", NEVER_REACHED_S],
    async ({ server, clients }) => {
      // Connect in parallel batches; every client is greeted (accepted and served).
      for (let batch = 0; batch < 6; batch++) {
        const greeted = await Promise.allSettled(
          Array.from({ length: 50 }, () => connectGreeted(server.port)),
        );
        for (const result of greeted) {
          if (result.status === "fulfilled") clients.push(result.value);
        }
        const failed = greeted.find((result) => result.status === "rejected");
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
      assert.equal(clients.length, 300);
      server.signal("SIGTERM");
      const rests = await Promise.all(
        clients.map((client) => client.readToEnd(10000)),
      );
      const wrong = rests.filter((rest) => rest !== BYE);
      assert.equal(wrong.length, 0, `e.g. ${JSON.stringify(wrong[0])}`);
      const status = await server.waitForExit(10000);
      assert.equal(status.code, 0, server.stderr);
      assertSummary(server.stderr, {
        served: 300,
        gracefully: 300,
        byForce: 0,
      });
    },
  );
});

Deno.test("shutdown: the server restarts at once on the same fixed port", async () => {
  // The one test with a fixed port: a port that was free a moment ago.
  const probe = Deno.listen({ hostname: HOST, port: 0 });
  const port = probe.addr.port;
  probe.close();

  const first = await ServerProcess.start(["--port", String(port)]);
  const clients: LineClient[] = [];
  try {
    assert.equal(first.port, port);
    for (let i = 0; i < 3; i++) {
      const client = await connectGreeted(port);
      clients.push(client);
      await ask(client, `${i},1\n`, sum(i + 1));
    }
    first.signal("SIGTERM");
    // The server closes first, so its side of each connection sits in TIME_WAIT.
    for (const client of clients) {
      assert.equal(await client.readToEnd(3000), BYE);
    }
    assert.equal((await first.waitForExit(5000)).code, 0, first.stderr);
  } finally {
    for (const client of clients.splice(0)) client.close();
    await first.stop();
  }

  const second = await ServerProcess.start(["--port", String(port)]);
  try {
    assert.equal(second.port, port);
    const client = await connectGreeted(port);
    clients.push(client);
    await ask(client, "2,3\n", sum(5));
    second.signal("SIGTERM");
    assert.equal(await client.readToEnd(3000), BYE);
    assert.equal((await second.waitForExit(5000)).code, 0, second.stderr);
  } finally {
    for (const client of clients) client.close();
    await second.stop();
  }
});

// --- the library: server.shutdown() without signals --------------------------

Deno.test("mod.ts shutdown(): same drain as a signal, with exact summary counts", async () => {
  const shutdownTimeoutMs = 800;
  const server = await startServer({
    hostname: HOST,
    port: 0,
    shutdownTimeoutMs,
  });
  const port = server.addr.port;
  const clients: LineClient[] = [];
  let shutdown: ReturnType<typeof server.shutdown> | undefined;
  try {
    const [idle, finishing, stuck] = await greetMany(port, 3, clients);
    await ask(idle, "1,2\n", sum(3));
    await finishing.send("1,2");
    await stuck.send("4,5");
    await untilReceived(server, 4 + 3 + 3);
    const startedAt = performance.now();
    shutdown = server.shutdown();
    assert.equal(await idle.readToEnd(2000), BYE);
    await expectConnectRefused(port);
    await finishing.send("\n");
    assert.deepEqual(await finishing.readLines(2, 2000), [
      sum(3),
      SHUTTING_DOWN,
    ]);
    await finishing.expectClosed(2000);
    const rest = await stuck.readToEnd(10000);
    const forcedAfter = performance.now() - startedAt;
    assert.ok(rest === "" || rest === BYE, `got ${JSON.stringify(rest)}`);
    assert.ok(
      forcedAfter >= 0.7 * shutdownTimeoutMs,
      `forced close ${forcedAfter.toFixed(0)} ms after shutdown()`,
    );
    const summary = await withTimeout(shutdown, 5000, "shutdown() to resolve");
    assert.deepEqual(
      summary,
      { served: 3, closedGracefully: 2, closedByForce: 1 },
    );
  } finally {
    for (const client of clients) client.close();
    await (shutdown ?? server.shutdown());
  }
});

Deno.test("mod.ts shutdown(): complete lines not yet answered are answered first", async () => {
  // Replies wait for a gate that opens only once shutdown has begun, so
  // three pipelined lines are still being worked through when it begins.
  let openGate!: () => void;
  const gate = new Promise<void>((resolve) => openGate = resolve);
  const asked: string[] = [];
  const gatedProtocol: LineProtocol = {
    name: "gated",
    createSession: () => ({
      greeting: "gated ready",
      ended: false,
      reply: (line: string) => {
        asked.push(line);
        return gate.then(() => `done: ${line}`);
      },
    }),
  };
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: gatedProtocol,
    shutdownTimeoutMs: 2 ** 31 - 1,
  });
  const port = server.addr.port;
  const client = await connectGreeted(port, "gated ready");
  let shutdown: ReturnType<typeof server.shutdown> | undefined;
  try {
    await client.send("a\nb\nc\n");
    await untilReceived(server, 6);
    await waitFor(
      "the first reply to be asked for",
      () => asked.length > 0,
      10000,
    );
    shutdown = server.shutdown();
    openGate();
    assert.deepEqual(await client.readLines(4, 3000), [
      "done: a",
      "done: b",
      "done: c",
      SHUTTING_DOWN,
    ]);
    await client.expectClosed(2000);
    const summary = await withTimeout(shutdown, 5000, "shutdown() to resolve");
    assert.deepEqual(
      summary,
      { served: 1, closedGracefully: 1, closedByForce: 0 },
    );
  } finally {
    openGate();
    client.close();
    await (shutdown ?? server.shutdown());
  }
});

Deno.test("mod.ts shutdown() of an idle server resolves without waiting for the timeout, with zero counts", async () => {
  const server = await startServer({
    hostname: HOST,
    port: 0,
    shutdownTimeoutMs: 2 ** 31 - 1,
  });
  const port = server.addr.port;
  const summary = await withTimeout(server.shutdown(), 5000, "shutdown()");
  assert.deepEqual(
    summary,
    { served: 0, closedGracefully: 0, closedByForce: 0 },
  );
  await expectConnectRefused(port);
});

/**
 * The session API over real sockets, with small protocols written for the
 * test: replies of zero or several lines, async replies, pushing lines
 * (from a timer, from another connection, from inside a reply), closing,
 * `onClose` with its reason for every way a connection ends, the peer
 * address, and the slow-consumer bound with and without `drained()`.
 */
import assert from "node:assert/strict";
import net from "node:net";
import {
  configureSync,
  getLogger,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";
import {
  type CloseReason,
  type LineConnection,
  type LineProtocol,
  type LineServer,
  type LineSession,
  type Reply,
  type ServerOptions,
  startServer,
} from "../mod.ts";
import { BulkReader } from "./support/bulk_reader.ts";
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { withServer } from "./support/socket_harness.ts";
import { maxSocketBuffers } from "./support/hardening.ts";

const HOST = "127.0.0.1";
const WAIT_MS = 5000;
const MiB = 1024 * 1024;

/** What the test protocol's sessions report. */
interface Journal {
  /** `onClose` calls, in order: connection id and reason. */
  closes: [number, CloseReason][];
  /** Lines pushed by `flood` before its connection closed. */
  floodedBytes: number;
  /** What `send` returned once the connection was closed (from `onClose`). */
  sendAfterClose: boolean[];
  /** True while `stream` waits for `drained()`. */
  waitingForDrain: boolean;
  /** Whether the connection was closed right after `wide` sent its line. */
  closedAfterWide?: boolean;
}

/**
 * A protocol with one command per feature of the session API:
 *
 * - `none`, `empty`: no reply line (`undefined`, `[]`);
 * - `three`: three reply lines;
 * - `async MS WORD`: `WORD` after MS milliseconds;
 * - `push WORD`: sends `pushed WORD`, then replies `reply WORD`;
 * - `apush WORD`: sends `early WORD`, waits, sends `late WORD`, replies `reply WORD`;
 * - `tell ID TEXT`: sends `from SENDER: TEXT` to connection ID, replies `told`;
 * - `whoami`: the peer address as `HOST:PORT`;
 * - `bye`, `bye-silent`: `close("goodbye")`, `close()`;
 * - `throw`: throws (a fault);
 * - `stream N`: N lines of 1000 bytes, waiting for `drained()` whenever
 *   `send` says so, then `streamed`;
 * - `burst N`: the same N lines sent at once, ignoring what `send` says;
 * - `flood`: 64 KiB at every turn of the event loop until the connection closes;
 * - `big N`: a reply of N lines of 1000 bytes;
 * - `poke ID`: sends `poke` to connection ID, replies `poked`;
 * - `wide`: sends one line of 1.2 MB in UTF-8 (400,000 three-byte characters).
 */
function testProtocol(journal: Journal): LineProtocol {
  const connections = new Map<number, LineConnection>();
  const streamLine = (i: number) => `${i} ${"s".repeat(1000)}`;
  return {
    name: "test",
    createSession(connection): LineSession {
      connections.set(connection.id, connection);
      return {
        reply(line): Reply | Promise<Reply> {
          const [command, ...rest] = line.split(" ");
          const argument = rest.join(" ");
          switch (command) {
            case "none":
              return undefined;
            case "empty":
              return [];
            case "three":
              return ["one", "two", "three"];
            case "async": {
              const [ms, word] = rest;
              return delay(Number(ms)).then(() => word);
            }
            case "push":
              connection.send(`pushed ${argument}`);
              return `reply ${argument}`;
            case "apush":
              connection.send(`early ${argument}`);
              return delay(5).then(() => {
                connection.send(`late ${argument}`);
                return `reply ${argument}`;
              });
            case "tell": {
              const [id, ...text] = rest;
              connections.get(Number(id))?.send(
                `from ${connection.id}: ${text.join(" ")}`,
              );
              return "told";
            }
            case "whoami":
              return `${connection.peer.hostname}:${connection.peer.port}`;
            case "bye":
              connection.close("goodbye");
              return;
            case "bye-silent":
              connection.close();
              return;
            case "throw":
              throw new Error("a session failed on purpose");
            case "stream":
              return (async () => {
                for (let i = 0; i < Number(argument); i++) {
                  if (!connection.send(streamLine(i))) {
                    journal.waitingForDrain = true;
                    await connection.drained();
                    journal.waitingForDrain = false;
                  }
                }
                return "streamed";
              })();
            case "burst":
              for (let i = 0; i < Number(argument); i++) {
                connection.send(streamLine(i));
              }
              return "burst";
            case "flood": {
              const chunk = "f".repeat(64 * 1024 - 2);
              const push = () => {
                if (connection.closed) return;
                connection.send(chunk);
                journal.floodedBytes += chunk.length + 2;
                setTimeout(push, 0);
              };
              push();
              return "flooding";
            }
            case "big":
              return Array.from(
                { length: Number(argument) },
                (_, i) => streamLine(i),
              );
            case "poke":
              connections.get(Number(argument))?.send("poke");
              return "poked";
            case "wide":
              connection.send("\u20ac".repeat(400_000));
              journal.closedAfterWide = connection.closed;
              return "sent";
          }
          return `unknown ${line}`;
        },
        onClose(reason) {
          connections.delete(connection.id);
          journal.closes.push([connection.id, reason]);
          journal.sendAfterClose.push(connection.send("too late"));
        },
      };
    },
  };
}

/** A server with a fresh test protocol, torn down (clients, then server) after `body`. */
async function withTestServer(
  options: Omit<ServerOptions, "protocol">,
  body: (
    context: {
      server: LineServer;
      journal: Journal;
      connect: () => Promise<LineClient>;
    },
  ) => Promise<void>,
): Promise<Journal> {
  const journal: Journal = {
    closes: [],
    floodedBytes: 0,
    sendAfterClose: [],
    waitingForDrain: false,
  };
  await withServer(
    { ...options, protocol: testProtocol(journal) },
    ({ server, connect }) => body({ server, journal, connect }),
  );
  return journal;
}

Deno.test("session API: a reply may be zero lines or several", async () => {
  await withTestServer({}, async ({ connect }) => {
    const client = await connect();
    await client.send("none\nempty\nthree\nnone\nthree\n");
    assert.deepEqual(await client.readLines(6), [
      "one",
      "two",
      "three",
      "one",
      "two",
      "three",
    ]);
  });
});

Deno.test("session API: async replies keep the order of pipelined requests", async () => {
  await withTestServer({}, async ({ connect }) => {
    const client = await connect();
    // The later the request, the sooner its promise settles.
    await client.send(
      "async 40 a\nthree\nasync 20 b\nasync 0 c\nnone\nasync 10 d\n",
    );
    assert.deepEqual(await client.readLines(7), [
      "a",
      "one",
      "two",
      "three",
      "b",
      "c",
      "d",
    ]);
  });
});

Deno.test("session API: an async reply keeps its place when a large read arrives while other clients wait for turns", async () => {
  await withTestServer({}, async ({ server, connect }) => {
    // A client whose batches outlast a time slice keeps connections
    // waiting for turns; a large read that arrives then waits for a turn
    // too, but never in place of a pending reply.
    const flooder = net.connect({ host: HOST, port: server.addr.port });
    flooder.on("error", () => {});
    flooder.on("data", () => {});
    const batch = "three\n".repeat(10_000);
    let flooding = true;
    const flood = () => {
      while (flooding && flooder.write(batch));
    };
    flooder.on("connect", flood);
    flooder.on("drain", flood);
    const client = await connect();
    try {
      const heavy = server.metrics.linesTotal;
      await waitFor(
        "the flooder's lines answered",
        () => server.metrics.linesTotal > heavy + 10_000,
        WAIT_MS,
      );
      for (let round = 0; round < 20; round++) {
        const slow = `async 30 slow${round}\n`;
        const received = server.metrics.bytesReceived;
        await client.send(slow);
        // The large read must come while the slow reply is pending.
        await waitFor(
          "the slow line read",
          () => server.metrics.bytesReceived >= received + slow.length,
          WAIT_MS,
        );
        await client.send("none\n".repeat(4000) + `async 0 after${round}\n`);
        assert.deepEqual(await client.readLines(2), [
          `slow${round}`,
          `after${round}`,
        ]);
      }
    } finally {
      flooding = false;
      await new Promise<void>((resolve) => {
        flooder.once("close", () => resolve());
        flooder.destroy();
      });
    }
  });
});

Deno.test("session API: send() from inside reply() stays in order with the replies", async () => {
  await withTestServer({}, async ({ connect }) => {
    const client = await connect();
    await client.send("push a\napush b\npush c\nthree\napush d\n");
    assert.deepEqual(await client.readLines(13), [
      "pushed a",
      "reply a",
      "early b",
      "late b",
      "reply b",
      "pushed c",
      "reply c",
      "one",
      "two",
      "three",
      "early d",
      "late d",
      "reply d",
    ]);
  });
});

Deno.test("session API: send() reaches a client with no request in flight, from a timer", async () => {
  const ticks: LineProtocol = {
    name: "ticks",
    createSession(connection) {
      let count = 0;
      const timer = setInterval(() => connection.send(`tick ${++count}`), 10);
      return {
        greeting: "ticking",
        reply: (line) => line,
        onClose: () => clearInterval(timer),
      };
    },
  };
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: ticks,
  });
  try {
    using client = await LineClient.connect(server.addr.port);
    assert.deepEqual(await client.readLines(4), [
      "ticking",
      "tick 1",
      "tick 2",
      "tick 3",
    ]);
  } finally {
    await withTimeout(server.shutdown(), WAIT_MS, "server shutdown");
  }
});

Deno.test("session API: send() reaches a client with no request in flight, from another connection", async () => {
  await withTestServer({}, async ({ connect }) => {
    const first = await connect();
    const second = await connect();
    await first.send("whoami\n"); // both admitted: ids 1 and 2
    await first.readLine();
    await second.send("tell 1 hello there\n");
    assert.equal(await second.readLine(), "told");
    assert.equal(await first.readLine(), "from 2: hello there");
    await first.send("tell 2 and back\n");
    assert.equal(await first.readLine(), "told");
    assert.equal(await second.readLine(), "from 1: and back");
  });
});

Deno.test("session API: peer is the client's address", async () => {
  await withTestServer({}, async ({ connect }) => {
    const client = await connect();
    const local = client.conn.localAddr as Deno.NetAddr;
    await client.send("whoami\n");
    assert.equal(await client.readLine(), `${local.hostname}:${local.port}`);
  });
});

Deno.test("session API: close(finalLine) and close() end the connection after what was queued", async () => {
  const journal = await withTestServer({}, async ({ connect }) => {
    const polite = await connect();
    await polite.send("push x\nbye\nnever answered\n");
    assert.equal(
      await polite.readToEnd(),
      "pushed x\r\nreply x\r\ngoodbye\r\n",
    );
    const silent = await connect();
    await silent.send("three\nbye-silent\nthree\n");
    assert.equal(await silent.readToEnd(), "one\r\ntwo\r\nthree\r\n");
  });
  assert.deepEqual(journal.closes, [[1, "quit"], [2, "quit"]]);
  // A closed connection is a harmless no-op.
  assert.deepEqual(journal.sendAfterClose, [false, false]);
});

/** Connects with node:net, waits for `firstReply` to a request, then resets (RST). */
async function connectAndReset(port: number): Promise<void> {
  const socket = net.connect(port, HOST);
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.once("close", resolve));
  try {
    socket.write("three\n");
    await withTimeout(
      new Promise((resolve) => socket.once("data", resolve)),
      WAIT_MS,
      "a reply before resetting",
    );
    socket.resetAndDestroy();
  } finally {
    socket.destroy();
    await closed;
  }
}

/**
 * How each reason comes about: what the one client does, and the server
 * options that make it happen quickly.
 */
const endings: {
  reason: CloseReason;
  options?: Omit<ServerOptions, "protocol">;
  end(server: LineServer, connect: () => Promise<LineClient>): Promise<void>;
}[] = [
  {
    reason: "quit",
    async end(_server, connect) {
      const client = await connect();
      await client.send("bye\n");
      assert.equal(await client.readToEnd(), "goodbye\r\n");
      client.close();
    },
  },
  {
    reason: "peer_closed",
    async end(_server, connect) {
      const client = await connect();
      await client.send("three\n");
      await client.closeWrite();
      assert.equal(await client.readToEnd(), "one\r\ntwo\r\nthree\r\n");
      client.close();
    },
  },
  {
    reason: "reset",
    end: (server) => connectAndReset(server.addr.port),
  },
  {
    reason: "idle_timeout",
    options: { idleTimeoutMs: 100 },
    async end(_server, connect) {
      const client = await connect();
      assert.equal(
        await client.readToEnd(),
        "<idle timeout: closing connection>\r\n",
      );
      client.close();
    },
  },
  {
    reason: "line_timeout",
    options: { lineTimeoutMs: 100 },
    async end(_server, connect) {
      const client = await connect();
      await client.send("three\nthr");
      assert.equal(
        await client.readToEnd(),
        "one\r\ntwo\r\nthree\r\n<line timeout: closing connection>\r\n",
      );
      client.close();
    },
  },
  {
    reason: "shutdown",
    async end(server, connect) {
      const client = await connect();
      await client.send("three\n");
      assert.deepEqual(await client.readLines(3), ["one", "two", "three"]);
      const done = server.shutdown();
      assert.equal(await client.readToEnd(), "<server shutting down>\r\n");
      client.close();
      await withTimeout(done, WAIT_MS, "shutdown");
    },
  },
  {
    reason: "forced",
    options: { shutdownTimeoutMs: 100 },
    async end(server, connect) {
      const client = await connect();
      const received = server.metrics.bytesReceived;
      await client.send("a line never finish");
      await waitFor(
        "the server to receive the partial line",
        () => server.metrics.bytesReceived === received + 19,
        WAIT_MS,
      );
      const done = server.shutdown();
      assert.equal(await client.readToEnd(), "<server shutting down>\r\n");
      client.close();
      assert.deepEqual(await withTimeout(done, WAIT_MS, "shutdown"), {
        served: 1,
        closedGracefully: 0,
        closedByForce: 1,
      });
    },
  },
  {
    reason: "slow_consumer",
    async end(server, connect) {
      const client = await connect();
      await client.send("flood\n");
      // Never read: the flood piles up until the bound closes the connection.
      await waitFor(
        "the bound to close the connection",
        () => server.metrics.errors.slow_consumer === 1,
        WAIT_MS,
      );
    },
  },
  {
    reason: "fault",
    async end(server, connect) {
      const client = await connect();
      await client.send("three\nthrow\nthree\n");
      assert.equal(await client.readToEnd(), "one\r\ntwo\r\nthree\r\n");
      client.close();
      assert.equal(server.metrics.errors.handler_fault, 1);
    },
  },
];

for (const { reason, options, end } of endings) {
  Deno.test(`session API: onClose is called once, with ${reason}`, async () => {
    const journal = await withTestServer(
      options ?? {},
      async ({ server, journal, connect }) => {
        await end(server, connect);
        await waitFor(
          `onClose(${reason})`,
          () => journal.closes.length > 0,
          WAIT_MS,
        );
        assert.equal(server.metrics.connectionsClosed[reason], 1);
      },
    );
    // After the shutdown every session has been told: once, with the reason.
    assert.deepEqual(journal.closes, [[1, reason]]);
    assert.deepEqual(journal.sendAfterClose, [false]);
  });
}

Deno.test("session API: an onClose that throws is logged and counted as a fault; nothing else is affected", async () => {
  const records: LogRecord[] = [];
  configureSync({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      {
        category: ["session-api-test"],
        lowestLevel: "info",
        sinks: ["memory"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  const throwing: LineProtocol = {
    name: "throwing-close",
    createSession: () => ({
      reply: (line) => line,
      onClose() {
        throw new Error("onClose failed on purpose");
      },
    }),
  };
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: throwing,
    logger: getLogger(["session-api-test"]),
  });
  const clients: LineClient[] = [];
  try {
    const connect = async () => {
      const client = await LineClient.connect(server.addr.port);
      clients.push(client);
      return client;
    };
    const leaving = await connect();
    const staying = await connect();
    await leaving.send("hello\n");
    assert.equal(await leaving.readLine(), "hello");
    await leaving.closeWrite();
    await leaving.expectClosed();
    leaving.close();
    await waitFor(
      "the close hook to fail",
      () => server.metrics.errors.handler_fault === 1,
      WAIT_MS,
    );
    const failures = records.filter((record) =>
      record.level === "error" &&
      String(record.properties.error).includes("onClose failed on purpose")
    );
    assert.equal(failures.length, 1);
    // Logged with its stack, so the log shows where.
    assert.match(String(failures[0].properties.error), /session_api_test\.ts/);
    // The other connection, the listener and new connections carry on.
    await staying.send("still here\n");
    assert.equal(await staying.readLine(), "still here");
    const newcomer = await connect();
    await newcomer.send("hi\n");
    assert.equal(await newcomer.readLine(), "hi");
    assert.equal(server.metrics.connectionsClosed.peer_closed, 1);
    assert.equal(server.metrics.connectionsClosed.fault, 0);
  } finally {
    for (const client of clients) client.close();
    await withTimeout(server.shutdown(), WAIT_MS, "server shutdown");
    resetSync();
  }
});

Deno.test("session API: drained() lets a protocol stream megabytes to a reading client without tripping the 1 MiB bound", async () => {
  // More than the kernel's socket buffers can take, so that the stream
  // has to wait for the client (at least 3 MB).
  const buffers = await maxSocketBuffers();
  const bytes = Math.max(3 * MiB, buffers.receive + buffers.send + 2 * MiB);
  const lines = Math.ceil(bytes / 1000);
  await withTestServer({}, async ({ server, journal, connect }) => {
    const client = await connect();
    const reader = new BulkReader(client.conn);
    await client.send(`stream ${lines}\n`);
    // Read nothing until the stream is held up: waiting for drained(), and
    // nothing more written since the previous look.
    let sent = -1;
    await waitFor("the stream to wait for the client", () => {
      const stalled = journal.waitingForDrain &&
        server.metrics.bytesSent === sent;
      sent = server.metrics.bytesSent;
      return stalled;
    }, WAIT_MS);
    for (let i = 0; i < lines; i++) {
      assert.equal(await reader.readLine(), `${i} ${"s".repeat(1000)}`);
    }
    assert.equal(await reader.readLine(), "streamed");
    assert.equal(server.metrics.errors.slow_consumer, 0);
    assert.deepEqual(journal.closes, []);
  });
});

Deno.test("session API: the same 3 MB sent at once, without drained(), trips the bound even for a reading client", async () => {
  await withTestServer({}, async ({ server, journal, connect }) => {
    const client = await connect();
    await client.send("burst 3000\n");
    await waitFor(
      "the bound to close the connection",
      () => journal.closes.length === 1,
      WAIT_MS,
    );
    assert.deepEqual(journal.closes, [[1, "slow_consumer"]]);
    assert.equal(server.metrics.errors.slow_consumer, 1);
  });
});

Deno.test("session API: pushing more than 1 MiB to a client that does not read trips the bound", async () => {
  await withTestServer({}, async ({ server, journal, connect }) => {
    const client = await connect();
    await client.send("flood\n");
    await waitFor(
      "the bound to close the connection",
      () => journal.closes.length === 1,
      WAIT_MS,
    );
    assert.deepEqual(journal.closes, [[1, "slow_consumer"]]);
    assert.equal(server.metrics.errors.slow_consumer, 1);
    assert.equal(server.metrics.connectionsClosed.slow_consumer, 1);
    // The kernel's socket buffers took their share; the server held at most 1 MiB.
    assert.ok(journal.floodedBytes > MiB, `${journal.floodedBytes} bytes`);
    // The flood's timer stops once the connection is closed (the test's
    // sanitizer would report one still pending).
  });
});

Deno.test("session API: replies waiting to be read count toward the bound of send() too", async () => {
  const lines = 8000; // an 8 MB reply
  await withTestServer({}, async ({ server, journal, connect }) => {
    const reader = await connect();
    const poker = await connect();
    await reader.send(`big ${lines}\n`);
    await waitFor(
      "the reply to be handed to the socket",
      () => server.metrics.bytesSent >= lines * 1000,
      WAIT_MS,
    );
    // Everything waiting for this client counts: a push on top of 8 MB of
    // unread reply is one too many.
    await poker.send("poke 1\n");
    assert.equal(await poker.readLine(), "poked");
    await waitFor(
      "the reader to be closed as a slow consumer",
      () => journal.closes.length === 1,
      WAIT_MS,
    );
    assert.deepEqual(journal.closes, [[1, "slow_consumer"]]);
  });
});

// A 1.2 MB line of three-byte characters is 400,000 UTF-16 code units:
// counted as code units it would slip under the 1 MiB bound.
Deno.test({
  name: "session API: the bound of send() counts bytes, not UTF-16 code units",
  async fn() {
    await withTestServer({}, async ({ journal, connect }) => {
      const client = await connect();
      await client.send("wide\n");
      await waitFor(
        "the wide line to be sent",
        () => journal.closedAfterWide !== undefined,
        WAIT_MS,
      );
      assert.equal(journal.closedAfterWide, true);
    });
  },
});

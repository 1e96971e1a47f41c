/**
 * The chat protocol over real sockets against in-process servers, each with
 * a fresh room (`createChatProtocol()`): joining and guest numbering,
 * talking, `/nick`, `/who`, `/quit`, unknown commands, `left` announced
 * exactly once however a member goes, slow consumers, and shutdown.
 *
 * Every wait is on something observable (a line, a server counter) and
 * bounded; nothing sleeps to synchronise.
 */
import assert from "node:assert/strict";
import net from "node:net";
import v8 from "node:v8";
import vm from "node:vm";
import {
  builtinProtocols,
  type CloseReason,
  createChatProtocol,
  type LineServer,
  startServer,
} from "../mod.ts";
import { BulkReader } from "./support/bulk_reader.ts";
import { startWithAdmin } from "./support/server_process.ts";
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
import { scrapeMetrics } from "./support/admin_client.ts";
import { LineClient } from "./support/line_client.ts";
import { type Harness, withServer } from "./support/socket_harness.ts";

const SHUTTING_DOWN = "<server shutting down>";
const BAD_NAME = "ERROR. Names are 1-32 letters, digits, _ or -";
const UNKNOWN = "ERROR. Unknown command, try /who, /nick NAME or /quit";
const taken = (name: string) => `ERROR. Name ${name} is taken`;
const WAIT_MS = 5000;

/** Starts a chat server with a room of its own. */
function withChat(
  options: Parameters<typeof withServer>[0],
  body: (harness: Harness) => Promise<void>,
): Promise<void> {
  return withServer({ protocol: createChatProtocol(), ...options }, body);
}

/**
 * Connects a member that must be named `name`: checks its welcome and that
 * every member already in `room` hears it join; adds it to `room`.
 */
async function join(
  harness: Harness,
  room: LineClient[],
  name: string,
): Promise<LineClient> {
  const client = await harness.connect();
  assert.equal(await client.readLine(), `<welcome: you are ${name}>`);
  for (const member of room) {
    assert.equal(await member.readLine(), `* ${name} joined`);
  }
  room.push(client);
  return client;
}

/** Sends `request` and reads `count` reply lines. */
async function ask(
  client: LineClient,
  request: string,
  count = 1,
): Promise<string[]> {
  await client.send(`${request}\n`);
  return await client.readLines(count);
}

/**
 * Asserts that nothing else is waiting for `client`: `/who` is answered by
 * its own count line next, not by a line that was owed before it.
 */
async function expectNothingPending(client: LineClient, online: number) {
  await client.send("/who\n");
  assert.equal(await client.readLine(), `* ${online} online`);
  await client.readLines(online);
}

Deno.test("chat: the built-in chat protocol is registered by name", () => {
  const chat = builtinProtocols.chat();
  assert.equal(chat.name, "chat");
  assert.equal(chat.maxQueuedBytes, 1024 * 1024);
});

Deno.test("chat: two servers started from the built-in chat protocol have rooms of their own", async () => {
  await using first = await startServer({
    port: 0,
    protocol: builtinProtocols.chat(),
  });
  await using second = await startServer({
    port: 0,
    protocol: builtinProtocols.chat(),
  });
  using alice = await LineClient.connect(first.addr.port);
  assert.equal(await alice.readLine(), "<welcome: you are guest1>");
  using bob = await LineClient.connect(second.addr.port);
  assert.equal(await bob.readLine(), "<welcome: you are guest1>");
  // alice heard nothing of bob, and is alone in her room.
  assert.deepEqual(await ask(alice, "/who", 2), ["* 1 online", "* guest1"]);
});

Deno.test("chat: a newcomer is welcomed as guest<N>, the others hear it join", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    await join(harness, room, "guest1");
    await join(harness, room, "guest2");
    await join(harness, room, "guest3");
    // N counts admitted connections, including those that have left.
    const [first] = room.splice(0, 1);
    assert.deepEqual(await ask(first, "/quit"), ["connection closed"]);
    await first.expectClosed();
    for (const member of room) {
      assert.equal(await member.readLine(), "* guest1 left");
    }
    await join(harness, room, "guest4");
  });
});

Deno.test("chat: a refused connection is not admitted and takes no guest number", async () => {
  await withChat({ maxConnections: 2 }, async (harness) => {
    const room: LineClient[] = [];
    await join(harness, room, "guest1");
    const second = await join(harness, room, "guest2");
    const refused = await harness.connect();
    assert.equal(
      await refused.readToEnd(),
      "ERROR. Too many connections, try again later\r\n",
    );
    room.pop();
    await second.closeWrite();
    await second.expectClosed();
    assert.equal(await room[0].readLine(), "* guest2 left");
    await waitFor(
      "the slot of guest2 to be free",
      () => harness.server.activeConnections === 1,
      WAIT_MS,
    );
    await join(harness, room, "guest3");
  });
});

Deno.test("chat: a line goes to every other member, never back to its sender; an empty line goes nowhere", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    const carol = await join(harness, room, "guest3");
    await alice.send(
      "hello \t\r\n\n   \r\n  leading kept\n /who is a message\nünïcödé ✓\n",
    );
    for (const receiver of [bob, carol]) {
      assert.deepEqual(await receiver.readLines(4), [
        "guest1: hello",
        "guest1:   leading kept",
        "guest1:  /who is a message",
        "guest1: ünïcödé ✓",
      ]);
    }
    // The sender got nothing back, and the receivers nothing more.
    await expectNothingPending(alice, 3);
    await expectNothingPending(bob, 3);
    await carol.send("\n");
    await carol.send("from carol\n");
    assert.equal(await alice.readLine(), "guest3: from carol");
    assert.equal(await bob.readLine(), "guest3: from carol");
    await expectNothingPending(carol, 3);
  });
});

Deno.test("chat: a relayed line cannot pass for a server line: control characters and line separators become U+FFFD", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    const sent = [
      "hi\r* guest1 left",
      "\x1b[2J\x1b[31mred",
      "nul\x00 bell\x07 tab\tkept",
      "del\x7f c1\u0085\u009b\u009f end",
      "ls\u2028ps\u2029 nbsp\u00a0 ok",
    ];
    await bob.send(sent.map((line) => `${line}\n`).join(""));
    assert.deepEqual(await alice.readLines(sent.length), [
      "guest2: hi\ufffd* guest1 left",
      "guest2: \ufffd[2J\ufffd[31mred",
      "guest2: nul\ufffd bell\ufffd tab\tkept",
      "guest2: del\ufffd c1\ufffd\ufffd\ufffd end",
      "guest2: ls\ufffdps\ufffd nbsp\u00a0 ok",
    ]);
  });
});

Deno.test("chat: 200 lines pipelined in one write arrive whole and in order at every receiver", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const sender = await join(harness, room, "guest1");
    const receivers = [
      await join(harness, room, "guest2"),
      await join(harness, room, "guest3"),
      await join(harness, room, "guest4"),
    ];
    const lines = Array.from(
      { length: 200 },
      (_, i) => `message ${i}:${"x".repeat(i * 7)}`,
    );
    await sender.send(lines.map((line) => `${line}\n`).join(""));
    const expected = lines.map((line) => `guest1: ${line}`);
    const received = await Promise.all(
      receivers.map((receiver) => receiver.readLines(200)),
    );
    for (const lines of received) assert.deepEqual(lines, expected);
  });
});

Deno.test("chat: a too-long line is answered to its sender only", async () => {
  await withChat({ maxLineBytes: 32 }, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    await alice.send(`${"x".repeat(100)}\n`);
    assert.equal(await alice.readLine(), "ERROR. Line too long (max 32 bytes)");
    await alice.send("still here\n");
    assert.equal(await bob.readLine(), "guest1: still here");
  });
});

Deno.test("chat: /nick renames, tells the others, and guards names", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    const carol = await join(harness, room, "guest3");
    const heard = async (line: string, ...members: LineClient[]) => {
      for (const member of members) assert.equal(await member.readLine(), line);
    };

    assert.deepEqual(await ask(alice, "/nick alice"), ["<you are now alice>"]);
    await heard("* guest1 is now alice", bob, carol);
    await alice.send("hi\n");
    await heard("alice: hi", bob, carol);

    // Another member's name, in any case.
    assert.deepEqual(await ask(bob, "/nick alice"), [taken("alice")]);
    assert.deepEqual(await ask(bob, "/nick ALICE"), [taken("ALICE")]);
    // guest followed by digits belongs to new members, in any case.
    for (const name of ["guest1", "guest9", "GUEST3", "Guest12", "guest007"]) {
      assert.deepEqual(await ask(bob, `/nick ${name}`), [taken(name)]);
    }
    // Your own current name again is allowed, also in another case.
    assert.deepEqual(await ask(carol, "/nick guest3"), [
      "<you are now guest3>",
    ]);
    await heard("* guest3 is now guest3", alice, bob);
    assert.deepEqual(await ask(alice, "/nick Alice"), ["<you are now Alice>"]);
    await heard("* alice is now Alice", bob, carol);

    // Malformed: nothing, two spaces, a tab, bad characters, 33 characters.
    const malformed = [
      "/nick",
      "/nick ",
      "/nick  bob",
      "/nick\tbob",
      "/nick bob!",
      "/nick b b",
      "/nick bøb",
      "/nick a.b",
      `/nick ${"x".repeat(33)}`,
    ];
    for (const line of malformed) {
      assert.deepEqual(await ask(bob, line), [BAD_NAME], line);
    }
    // The longest name and every allowed character.
    const longest = "x".repeat(32);
    assert.deepEqual(await ask(bob, `/nick ${longest}`), [
      `<you are now ${longest}>`,
    ]);
    await heard(`* guest2 is now ${longest}`, alice, carol);
    assert.deepEqual(await ask(bob, "/nick aZ09_-"), ["<you are now aZ09_->"]);
    await heard(`* ${longest} is now aZ09_-`, alice, carol);
    // guest without digits is an ordinary name.
    assert.deepEqual(await ask(bob, "/nick guest"), ["<you are now guest>"]);
    await heard("* aZ09_- is now guest", alice, carol);

    // A name given up is free again.
    assert.deepEqual(await ask(alice, "/nick al"), ["<you are now al>"]);
    await heard("* Alice is now al", bob, carol);
    assert.deepEqual(await ask(carol, "/nick ALICE"), ["<you are now ALICE>"]);
    await heard("* guest3 is now ALICE", alice, bob);

    // Errors went to their sender only.
    await expectNothingPending(alice, 3);
    await expectNothingPending(bob, 3);
    await expectNothingPending(carol, 3);
  });
});

Deno.test("chat: /who lists every member, itself included, in byte order", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const names = ["bob", "Carol", "_under", "-dash", "9lives", "guest6"];
    for (let i = 0; i < names.length; i++) {
      await join(harness, room, `guest${i + 1}`);
    }
    for (let i = 0; i < names.length - 1; i++) {
      assert.deepEqual(await ask(room[i], `/nick ${names[i]}`), [
        `<you are now ${names[i]}>`,
      ]);
      for (const other of room) {
        if (other !== room[i]) await other.readLine();
      }
    }
    // Byte order: - < digits < upper case < _ < lower case.
    const expected = [
      "* 6 online",
      "* -dash",
      "* 9lives",
      "* Carol",
      "* _under",
      "* bob",
      "* guest6",
    ];
    assert.deepEqual(await ask(room[2], "/who", 7), expected);
    assert.deepEqual(await ask(room[5], "/who", 7), expected);
  });
});

Deno.test("chat: commands are exact and case-sensitive; any other /line is unknown", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    const unknown = [
      "/",
      "/WHO",
      "/Who",
      "/who x",
      "/who  x",
      "/whois",
      "/QUIT",
      "/quit now",
      "/NICK bob",
      "/nickname bob",
      "/help",
      "//who",
    ];
    for (const line of unknown) {
      assert.deepEqual(await ask(alice, line), [UNKNOWN], line);
    }
    // Trailing whitespace is framing, not part of the command.
    assert.deepEqual(await ask(alice, "/who \t", 3), [
      "* 2 online",
      "* guest1",
      "* guest2",
    ]);
    // Nothing reached the other member, and alice is still connected.
    await expectNothingPending(bob, 2);
  });
});

Deno.test("chat: /quit says connection closed, closes, and the others hear left once", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    await alice.send("/quit\nnever read\n");
    assert.equal(await alice.readToEnd(), "connection closed\r\n");
    alice.close();
    assert.equal(await bob.readLine(), "* guest1 left");
    await expectLeftOnce(harness.server, bob, "quit", 1);
  });
});

/**
 * Waits until the server has ended a connection for `reason` (its session
 * has been told), then checks that no second `left` line was sent.
 */
async function expectLeftOnce(
  server: LineServer,
  observer: LineClient,
  reason: CloseReason,
  online: number,
) {
  await waitFor(
    `a connection closed as ${reason}`,
    () => server.metrics.connectionsClosed[reason] === 1,
    WAIT_MS,
  );
  await expectNothingPending(observer, online);
}

Deno.test("chat: a member that closes its side is announced as left once", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const bob = await join(harness, room, "guest2");
    await bob.send("/nick bob\n");
    assert.equal(await bob.readLine(), "<you are now bob>");
    assert.equal(await alice.readLine(), "* guest2 is now bob");
    await bob.closeWrite();
    await bob.expectClosed();
    bob.close();
    assert.equal(await alice.readLine(), "* bob left");
    await expectLeftOnce(harness.server, alice, "peer_closed", 1);
  });
});

/** Connects with node:net, waits for the first line, then resets (RST). */
async function joinAndReset(port: number): Promise<void> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.once("close", resolve));
  try {
    await withTimeout(
      new Promise((resolve) => socket.once("data", resolve)),
      WAIT_MS,
      "the welcome of the member that resets",
    );
    socket.resetAndDestroy();
  } finally {
    socket.destroy();
    await closed;
  }
}

Deno.test("chat: a member whose connection is reset is announced as left once", async () => {
  await withChat({}, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    await joinAndReset(harness.port);
    assert.equal(await alice.readLine(), "* guest2 joined");
    assert.equal(await alice.readLine(), "* guest2 left");
    await expectLeftOnce(harness.server, alice, "reset", 1);
  });
});

Deno.test("chat: a member closed by the idle timeout is announced as left once", async () => {
  const idleTimeoutMs = 400;
  await withChat({ idleTimeoutMs }, async (harness) => {
    const room: LineClient[] = [];
    const silent = await join(harness, room, "guest1");
    const alice = await join(harness, room, "guest2");
    // alice keeps talking so that only the silent member times out.
    const keepAlive = setInterval(() => {
      alice.send("tick\n").catch(() => {});
    }, idleTimeoutMs / 8);
    try {
      let line: string;
      while ((line = await silent.readLine()) === "guest2: tick");
      assert.equal(line, "<idle timeout: closing connection>");
      await silent.expectClosed();
      silent.close();
      assert.equal(await alice.readLine(), "* guest1 left");
      await waitFor(
        "a connection closed as idle_timeout",
        () => harness.server.metrics.connectionsClosed.idle_timeout === 1,
        WAIT_MS,
      );
    } finally {
      clearInterval(keepAlive);
    }
    await expectNothingPending(alice, 1);
  });
});

Deno.test("chat: a member closed by the line timeout is announced as left once", async () => {
  await withChat({ lineTimeoutMs: 300 }, async (harness) => {
    const room: LineClient[] = [];
    const alice = await join(harness, room, "guest1");
    const slow = await join(harness, room, "guest2");
    await slow.send("a line never finish");
    assert.equal(
      await slow.readToEnd(),
      "<line timeout: closing connection>\r\n",
    );
    slow.close();
    assert.equal(await alice.readLine(), "* guest2 left");
    await expectLeftOnce(harness.server, alice, "line_timeout", 1);
  });
});

/**
 * V8's garbage collector, so that memory is measured without the garbage
 * of the traffic itself (in-process, the clients' garbage counts too).
 */
function exposeGc(): () => void {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc");
}

/** Live memory of this process after a full collection: JS heap plus buffers. */
function liveBytes(gc: () => void): number {
  gc();
  const { heapUsed, external } = Deno.memoryUsage();
  return heapUsed + external;
}

Deno.test("chat: a member that never reads is disconnected as slow_consumer; the others get everything in order", async () => {
  const gc = exposeGc();
  await withChat({}, async (harness) => {
    const { metrics } = harness.server;
    const room: LineClient[] = [];
    const sender = await join(harness, room, "guest1");
    const reader = await join(harness, room, "guest2");
    // The third member reads its welcome and nothing more.
    await join(harness, room, "guest3");
    const bulk = new BulkReader(reader.conn);

    const payload = "y".repeat(1000);
    const linesPerWrite = 256; // about 256 KB per write
    const writes = 256; // 64 MB in all, for each receiver
    const baseline = liveBytes(gc);
    let peak = baseline;
    let received = 0;
    let lefts = 0;
    let disconnectedAfter: number | undefined;
    /** Reads messages up to number `count`, counting the left lines among them. */
    const readMessages = async (count: number) => {
      while (received < count) {
        const line = await bulk.readLine();
        if (line === "* guest3 left") lefts++;
        else assert.equal(line, `guest1: ${received++} ${payload}`);
      }
    };
    for (let written = 0; written < writes; written++) {
      const first = written * linesPerWrite;
      await sender.send(
        Array.from(
          { length: linesPerWrite },
          (_, i) => `${first + i} ${payload}\n`,
        ).join(""),
      );
      // Read each batch before sending the next, so that the reader's own
      // queue stays far below the bound.
      await readMessages(first + linesPerWrite);
      if (disconnectedAfter === undefined && metrics.errors.slow_consumer > 0) {
        disconnectedAfter = (written + 1) * linesPerWrite * payload.length;
      }
      if (written % 8 === 0) peak = Math.max(peak, liveBytes(gc));
    }
    assert.ok(disconnectedAfter, "the slow consumer was never disconnected");
    await waitFor(
      "the slow consumer's connection to be closed",
      () => metrics.connectionsClosed.slow_consumer === 1,
      WAIT_MS,
    );
    assert.equal(metrics.errors.slow_consumer, 1);
    // Its left line came once, among the lines it was too slow for.
    await reader.send("/who\n");
    let line: string;
    while ((line = await bulk.readLine()) === "* guest3 left") lefts++;
    assert.equal(line, "* 2 online");
    assert.equal(lefts, 1, "left lines about the slow consumer");
    // Had its lines been kept, memory would have grown by about 64 MB.
    const sent = writes * linesPerWrite * payload.length;
    assert.ok(
      peak - baseline < sent / 16,
      `memory grew by ${peak - baseline} bytes while ${sent} bytes were sent`,
    );
  });
});

/** Reads lines from `conn` at most `bytesPerTick` every `tickMs`, as a slow link would. */
async function* readPaced(
  conn: Deno.Conn,
  bytesPerTick: number,
  tickMs: number,
): AsyncGenerator<string> {
  const buffer = new Uint8Array(bytesPerTick);
  const decoder = new TextDecoder();
  let partial = "";
  while (true) {
    const n = await withTimeout(conn.read(buffer), WAIT_MS, "paced read");
    if (n === null) throw new Error("The paced reader was disconnected");
    const lines = (partial + decoder.decode(buffer.subarray(0, n))).split(
      "\r\n",
    );
    partial = lines.pop()!;
    yield* lines;
    await delay(tickMs);
  }
}

Deno.test("chat: a flooding sender is slowed to the pace of the members still reading; none of them is disconnected", async () => {
  // The server runs in a process of its own, so that it can outpace the
  // readers (in this process it would share their event loop).
  await using server = await startWithAdmin(["--protocol", "chat"]);
  const harness = {
    connect: () => LineClient.connect(server.port),
  } as Harness;
  const room: LineClient[] = [];
  try {
    const sender = await join(harness, room, "guest1");
    const fast = [
      await join(harness, room, "guest2"),
      await join(harness, room, "guest3"),
    ];
    const paced = await join(harness, room, "guest4");
    const payload = "z".repeat(100);
    const linesPerWrite = 1000; // about 100 KB per write
    const writes = 80; // 8 MB for each reader, 8 times its bound
    const total = writes * linesPerWrite;
    const expected = (i: number) => `guest1: ${i} ${payload}`;
    const flooding = (async () => {
      for (let written = 0; written < writes; written++) {
        const first = written * linesPerWrite;
        await sender.send(
          Array.from(
            { length: linesPerWrite },
            (_, i) => `${first + i} ${payload}\n`,
          ).join(""),
        );
      }
    })();
    const readFast = async (reader: LineClient) => {
      const bulk = new BulkReader(reader.conn);
      for (let i = 0; i < total; i++) {
        const line = await bulk.readLine(WAIT_MS);
        if (line !== expected(i)) assert.fail(`line ${i}: ${line}`);
      }
    };
    // About 12 MB/s: slower than the flood, but reading.
    const readSlowly = async () => {
      let i = 0;
      for await (const line of readPaced(paced.conn, 128 * 1024, 10)) {
        if (line !== expected(i)) assert.fail(`line ${i}: ${line}`);
        if (++i === total) return;
      }
    };
    await Promise.all([...fast.map(readFast), readSlowly()]);
    await withTimeout(flooding, WAIT_MS, "the flood to be written");
    const { samples } = await scrapeMetrics(server.adminPort);
    assert.equal(
      samples.get('lineserver_errors_total{kind="slow_consumer"}'),
      0,
    );
  } finally {
    for (const client of room) client.close();
  }
});

Deno.test("chat: on shutdown every member gets the shutdown line and no left lines", async () => {
  await withChat({}, async (harness) => {
    const { server } = harness;
    const room: LineClient[] = [];
    // The first member is in the middle of a line, so it stays open (and
    // could still hear left lines) while the others are closed.
    const busy = await join(harness, room, "guest1");
    const idle = [
      await join(harness, room, "guest2"),
      await join(harness, room, "guest3"),
    ];
    const received = server.metrics.bytesReceived;
    await busy.send("half a li");
    await waitFor(
      "the server to receive the partial line",
      () => server.metrics.bytesReceived === received + 9,
      WAIT_MS,
    );
    const shutdown = server.shutdown();
    for (const member of idle) {
      assert.equal(await member.readToEnd(), `${SHUTTING_DOWN}\r\n`);
      member.close();
    }
    await waitFor(
      "the idle members' sessions to be closed",
      () => server.metrics.connectionsClosed.shutdown === 2,
      WAIT_MS,
    );
    await busy.send("ne\n");
    assert.equal(await busy.readToEnd(), `${SHUTTING_DOWN}\r\n`);
    busy.close();
    assert.deepEqual(await withTimeout(shutdown, WAIT_MS, "shutdown"), {
      served: 3,
      closedGracefully: 3,
      closedByForce: 0,
    });
  });
});

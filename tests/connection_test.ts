/**
 * The connection task on an in-memory stream: framing, half-close,
 * backpressure, timeouts and the shutdown rule, driven byte by byte with no
 * socket and no real time (the timeouts run on a manual clock), so every
 * step is decided by what the test sends, never by how fast the machine is.
 */
import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import { setImmediate } from "node:timers";
import { getLogger } from "@logtape/logtape";
import { Connection } from "../src/connection.ts";
import {
  type ConnectionConfig,
  DEFAULT_MAX_QUEUED_BYTES,
} from "../src/connection_config.ts";
import { FrameEncoder } from "../src/framing.ts";
import { ServerMetrics } from "../src/metrics.ts";
import { TimeoutTracker } from "../src/timeout_tracker.ts";
import {
  calculatorProtocol,
  type CloseReason,
  echoProtocol,
  type LineProtocol,
  ServerReplies,
} from "../mod.ts";
import { duplexPair } from "./support/duplex_pair.ts";
import { ManualClock } from "./support/manual_clock.ts";
import {
  BYE,
  NOT_INTEGERS,
  sum,
  tooLong,
  WELCOME,
} from "./support/calc_replies.ts";
import { withTimeout } from "./support/deadline.ts";

const CRLF = "\r\n";
const encoder = new TextEncoder();

/** The client's end of an in-memory connection, and what it has received. */
class Client {
  readonly stream: Duplex;
  /** Everything received so far, as text. */
  text = "";
  /** Number of chunks received (the server writes once per batch). */
  chunks = 0;
  /** True once the server's end of the stream (its FIN) arrived. */
  ended = false;
  readonly #decoder = new TextDecoder();

  constructor(stream: Duplex) {
    this.stream = stream;
    stream.on("data", (chunk: Uint8Array) => {
      this.chunks++;
      this.text += this.#decoder.decode(chunk, { stream: true });
    });
    stream.on("end", () => this.ended = true);
  }

  send(data: string | number[]): void {
    this.stream.write(
      typeof data === "string" ? encoder.encode(data) : Uint8Array.from(data),
    );
  }

  /** Waits for the server's FIN and returns every line received. */
  async linesUntilEnd(): Promise<string[]> {
    await until("the server's FIN", () => this.ended);
    return this.lines;
  }

  /** The reply lines received so far (without CRLF). */
  get lines(): string[] {
    const lines = this.text.split(CRLF);
    lines.pop(); // after the last CRLF
    return lines;
  }
}

/**
 * Lets the in-memory streams and the connection run until `condition`
 * holds. Counts event-loop turns, not time; fails after many turns without
 * it (a test waits for what it expects, never for a duration).
 */
async function until(what: string, condition: () => boolean): Promise<void> {
  for (let turn = 0; turn < 1000; turn++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`Never happened: ${what}`);
}

interface Setup {
  connection: Connection;
  /** Resolves with the outcome once the connection has ended. */
  ended: Promise<CloseReason>;
  client: Client;
  /** The server's end of the stream. */
  stream: Duplex;
  metrics: ServerMetrics;
  clock: ManualClock;
  /** Makes the server's `draining` true. */
  drain(): void;
}

/**
 * Runs `body` against one connection on an in-memory stream, then closes
 * the client's end and waits for the connection to end.
 */
async function withConnection(
  options: {
    protocol?: LineProtocol;
    maxLineBytes?: number;
    idleTimeoutMs?: number;
    lineTimeoutMs?: number;
    highWaterMark?: number;
  },
  body: (setup: Setup) => Promise<void>,
): Promise<void> {
  const [stream, clientEnd] = duplexPair({
    highWaterMark: options.highWaterMark,
  });
  const clock = new ManualClock();
  const metrics = new ServerMetrics();
  let draining = false;
  const tracker = (ms: number | undefined, expire: (c: Connection) => void) =>
    ms === undefined ? undefined : new TimeoutTracker(ms, expire, clock);
  const maxLineBytes = options.maxLineBytes ?? 64;
  let onEnd!: (connection: Connection) => void;
  const ended = new Promise<CloseReason>((resolve) =>
    onEnd = (connection) => resolve(connection.outcome)
  );
  const config: ConnectionConfig<Connection> = {
    protocol: options.protocol ?? calculatorProtocol,
    framing: { maxFrameBytes: maxLineBytes },
    encoder: new FrameEncoder(),
    tooLongReply: ServerReplies.lineTooLong(maxLineBytes) + CRLF,
    maxQueuedBytes: DEFAULT_MAX_QUEUED_BYTES,
    logLines: false,
    idle: tracker(options.idleTimeoutMs, (c) => c.onIdleTimeout()),
    line: tracker(options.lineTimeoutMs, (c) => c.onLineTimeout()),
    replyDeadline: undefined,
    lingerMs: 0,
    draining: () => draining,
    onEnd,
    nextId: () => 2,
    metrics,
    logger: getLogger(["lineserver", "connection_test"]),
  };
  const connection = new Connection(stream, config, {
    id: 1,
    peer: { hostname: "192.0.2.1", port: 40000 },
  });
  const client = new Client(clientEnd);
  connection.run();
  try {
    await body({
      connection,
      ended,
      client,
      stream,
      metrics,
      clock,
      drain: () => draining = true,
    });
  } finally {
    clientEnd.resume();
    clientEnd.end();
    await withTimeout(ended, 5000, "the connection to end");
    clientEnd.destroy();
  }
}

Deno.test("connection: a line sent one byte at a time is answered once, after its LF", async () => {
  await withConnection({}, async ({ client, metrics }) => {
    await until("the welcome", () => client.lines.length === 1);
    for (const byte of "1,2,3\r") {
      client.send(byte);
      await until("the byte to be read", () => metrics.bytesReceived > 0);
    }
    assert.equal(metrics.bytesReceived, 6);
    assert.deepEqual(client.lines, [WELCOME], "no reply before the LF");
    client.send("\n");
    await until("the reply", () => client.lines.length === 2);
    assert.deepEqual(client.lines, [WELCOME, sum(6)]);
    assert.equal(metrics.linesTotal, 1);
  });
});

Deno.test("connection: pipelined lines are answered in order, in one write", async () => {
  await withConnection({}, async ({ client }) => {
    await until("the welcome", () => client.chunks === 1);
    client.send("1,2\nproduct\n3,4\n");
    await until("three replies", () => client.lines.length === 4);
    assert.deepEqual(client.lines.slice(1), [
      sum(3),
      "<switching to product mode>",
      "Product of input integers: '12'",
    ]);
    assert.equal(client.chunks, 2, "one write for the whole batch");
  });
});

Deno.test("connection: a character split across two chunks decodes whole", async () => {
  await withConnection({ protocol: echoProtocol }, async ({ client }) => {
    client.send([0x63, 0x61, 0x66, 0xc3]); // "caf" and the first byte of "é"
    client.send([0xa9, 0x0a]);
    await until("the echo", () => client.lines.length === 1);
    assert.deepEqual(client.lines, ["café"]);
  });
});

Deno.test("connection: an over-long line is answered once in its place; the connection stays usable", async () => {
  await withConnection({ maxLineBytes: 8 }, async ({ client, metrics }) => {
    client.send("1,2\n");
    client.send("123456789");
    client.send("0123\n3,4\n");
    await until("three replies", () => client.lines.length === 4);
    assert.deepEqual(client.lines, [WELCOME, sum(3), tooLong(8), sum(7)]);
    assert.equal(metrics.errors.line_too_long, 1);
    assert.equal(metrics.linesTotal, 3);
  });
});

Deno.test("connection: after a half-close the unterminated last line is answered, then FIN", async () => {
  for (const [fragment, reply] of [["1,2", sum(3)], [" \t", NOT_INTEGERS]]) {
    await withConnection({}, async ({ client, ended, metrics }) => {
      client.send(fragment);
      client.stream.end();
      assert.deepEqual(await client.linesUntilEnd(), [WELCOME, reply]);
      assert.equal(await ended, "peer_closed");
      assert.equal(metrics.linesTotal, 1);
    });
  }
});

Deno.test("connection: quit is answered, then FIN; what follows it is not read", async () => {
  await withConnection({}, async ({ client, ended, metrics }) => {
    client.send("1,2\nquit\n3,4\n");
    assert.deepEqual(await client.linesUntilEnd(), [WELCOME, sum(3), BYE]);
    assert.equal(await ended, "quit");
    assert.equal(metrics.linesTotal, 2);
  });
});

Deno.test("connection: a client that does not read is not read from until it does", async () => {
  const highWaterMark = 256;
  await withConnection(
    { highWaterMark },
    async ({ client, stream, metrics }) => {
      await until("the welcome", () => client.lines.length === 1);
      client.stream.pause();
      // 12 KB in, 87 KB of replies out: past the 64 KiB the server lets
      // wait for a client, it answers nothing more until the client reads.
      const batch = "1,2\n".repeat(3000);
      client.send(batch);
      await until("the server to stop reading", () => stream.isPaused());
      assert.equal(metrics.bytesReceived, batch.length);
      const answered = metrics.linesTotal;
      assert.ok(answered < 3000, `${answered} answered before stopping`);
      // More requests wait in the stream, unread, while the replies are unread.
      client.send(batch);
      client.send(batch);
      await until("the requests to queue", () => stream.readableLength > 0);
      assert.equal(metrics.bytesReceived, batch.length);
      assert.equal(metrics.linesTotal, answered);
      // Reading the replies lets the server read again, and answer everything.
      client.stream.resume();
      await until("every reply", () => client.lines.length === 9001);
      assert.equal(metrics.bytesReceived, 3 * batch.length);
      assert.ok(client.lines.slice(1).every((line) => line === sum(3)));
    },
  );
});

Deno.test("connection: a reset ends the connection as reset, and the session hears it", async () => {
  const heard: string[] = [];
  const protocol: LineProtocol = {
    name: "listening",
    createSession: () => ({
      reply: (line) => line,
      onClose: (reason) => heard.push(reason),
    }),
  };
  await withConnection(
    { protocol },
    async ({ ended, metrics, stream }) => {
      stream.destroy(Object.assign(new Error("reset"), { code: "ECONNRESET" }));
      assert.equal(await ended, "reset");
      assert.deepEqual(heard, ["reset"]);
      assert.equal(metrics.errors.reset, 1);
    },
  );
});

Deno.test("connection: the idle timeout counts from the last byte received, even inside a line", async () => {
  await withConnection(
    { idleTimeoutMs: 1000 },
    async ({ client, clock, connection, ended, metrics }) => {
      clock.advance(999);
      client.send("1");
      await until("the byte to be read", () => metrics.bytesReceived === 1);
      clock.advance(999);
      assert.equal(connection.closed, false, "a byte restarted the clock");
      clock.advance(1);
      assert.deepEqual(await client.linesUntilEnd(), [
        WELCOME,
        ServerReplies.idleTimeout,
      ]);
      assert.equal(await ended, "idle_timeout");
      assert.equal(metrics.errors.idle_timeout, 1);
    },
  );
});

Deno.test("connection: the idle timeout closes a client that does not read its replies", async () => {
  await withConnection(
    { idleTimeoutMs: 1000, highWaterMark: 256 },
    async ({ client, clock, connection, ended, stream }) => {
      client.stream.pause();
      client.send("1,2\n".repeat(3000));
      await until("the server to stop reading", () => stream.isPaused());
      clock.advance(1000);
      assert.equal(connection.closed, true, "closed with replies unread");
      client.stream.resume();
      const lines = await client.linesUntilEnd();
      assert.equal(lines.at(-1), ServerReplies.idleTimeout);
      assert.ok(lines.slice(1, -1).every((line) => line === sum(3)));
      assert.equal(await ended, "idle_timeout");
    },
  );
});

Deno.test("connection: the line timeout cuts an unfinished line, never a finished one", async () => {
  await withConnection(
    { lineTimeoutMs: 500 },
    async ({ client, clock, connection, ended, metrics }) => {
      client.send("1,2\n");
      await until("the reply", () => client.lines.length === 2);
      clock.advance(5000); // between lines, no clock runs
      client.send("3,");
      await until("the bytes to be read", () => metrics.bytesReceived === 6);
      clock.advance(499);
      assert.equal(connection.closed, false);
      clock.advance(1);
      assert.deepEqual(await client.linesUntilEnd(), [
        WELCOME,
        sum(3),
        ServerReplies.lineTimeout,
      ]);
      assert.equal(await ended, "line_timeout");
      assert.equal(metrics.errors.line_timeout, 1);
    },
  );
});

Deno.test("connection: a shutdown waits for the line in progress, answers it, then says goodbye", async () => {
  await withConnection(
    {},
    async ({ client, connection, drain, ended, metrics }) => {
      client.send("1,");
      await until("the bytes to be read", () => metrics.bytesReceived === 2);
      drain();
      connection.beginShutdown();
      assert.equal(connection.closed, false, "in the middle of a line");
      client.send("2\n");
      assert.deepEqual(await client.linesUntilEnd(), [
        WELCOME,
        sum(3),
        ServerReplies.shuttingDown,
      ]);
      assert.equal(await ended, "shutdown");
    },
  );
});

Deno.test("connection: a shutdown closes a connection between lines at once", async () => {
  await withConnection({}, async ({ client, connection, drain, ended }) => {
    client.send("1,2\n");
    await until("the reply", () => client.lines.length === 2);
    drain();
    connection.beginShutdown();
    assert.deepEqual(await client.linesUntilEnd(), [
      WELCOME,
      sum(3),
      ServerReplies.shuttingDown,
    ]);
    assert.equal(await ended, "shutdown");
  });
});

/**
 * What a protocol session does wrong stays inside its own connection: a
 * reply the server cannot send (`null`, a number, a line with LF, a bad
 * promise or thenable), an `ended` getter that throws, a reply promise that
 * never settles, a client that resets while its reply is pending. Also two
 * rules of the session API that used to lose or corrupt lines silently: the
 * reply of the `reply()` call that closes the connection goes out before the
 * final line, and `send()` refuses a line with CR or LF as a whole.
 *
 * In-process servers on 127.0.0.1 port 0: an error that escaped a connection
 * would end the test process itself, and the sanitizers check that nothing
 * is left behind.
 */
import assert from "node:assert/strict";
import net from "node:net";
import {
  configureSync,
  getLogger,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";
import type {
  LineConnection,
  LineProtocol,
  LineServer,
  ServerOptions,
} from "../mod.ts";
import { waitFor } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { untilActive, withServer } from "./support/socket_harness.ts";

const HOST = "127.0.0.1";
const WAIT_MS = 5000;
const LOG_CATEGORY = "session-faults-test";

/** What the sessions of {@linkcode misbehavingProtocol} saw. */
interface Journal {
  /** The signal each `hang` request received, in order. */
  hangSignals: AbortSignal[];
  /** How each `hang` request's signal was aborted (its reason's message). */
  aborts: string[];
  /** What `send` threw, per `send-*` command. */
  sendErrors: string[];
}

/** A thenable that is not a Promise, resolving to `value` when asked. */
function thenable(value: unknown): PromiseLike<unknown> {
  return {
    then(resolve: (value: unknown) => unknown) {
      resolve(value);
      return thenable(undefined) as PromiseLike<never>;
    },
  } as PromiseLike<unknown>;
}

/**
 * Greets with `ready`; `echo TEXT` answers TEXT; every other command is one
 * way to misbehave (see the tests), named after what `reply()` returns.
 */
function misbehavingProtocol(journal: Journal): LineProtocol {
  return {
    name: "misbehaving",
    createSession(connection: LineConnection) {
      let endedThrows = false;
      const trySend = (...lines: string[]) => {
        try {
          connection.send(...lines);
          return "sent";
        } catch (error) {
          journal.sendErrors.push(String(error));
          return `send threw ${(error as Error).name}`;
        }
      };
      return {
        greeting: "ready",
        get ended(): boolean {
          if (endedThrows) throw new Error("ended getter failed on purpose");
          return false;
        },
        // deno-lint-ignore no-explicit-any
        reply(line: string, context?: { signal: AbortSignal }): any {
          const [command, ...rest] = line.split(" ");
          switch (command) {
            case "echo":
              return rest.join(" ");
            case "null":
              return null;
            case "promise-null":
              return Promise.resolve(null);
            case "thenable-null":
              return thenable(null);
            case "thenable-ok":
              return thenable("from a thenable");
            case "thenable-throws":
              return {
                then() {
                  throw new Error("then failed on purpose");
                },
              };
            case "number":
              return 42;
            case "lf":
              return "a\nb";
            case "lf-in-array":
              return ["fine", "a\nb"];
            case "ended-throws":
              endedThrows = true;
              return "answered";
            case "hang": {
              const signal = context?.signal;
              if (signal !== undefined) {
                journal.hangSignals.push(signal);
                signal.addEventListener("abort", () => {
                  journal.aborts.push(String(signal.reason?.message));
                });
              }
              return new Promise(() => {});
            }
            case "reply-then-close":
              connection.close("bye");
              return "last words";
            case "send-cr":
              return trySend("a\r* guest1 left");
            case "send-lf":
              return trySend("ok", "a\nb");
            default:
              return `unknown ${command}`;
          }
        },
      };
    },
  };
}

/** The error records logged so far under the test's category. */
type Records = LogRecord[];

/**
 * Runs `body` with a server speaking {@linkcode misbehavingProtocol} and
 * every log record kept in memory; closes every client and shuts down after.
 */
async function withMisbehavingServer(
  options: Partial<ServerOptions>,
  body: (context: {
    server: LineServer;
    /** Connects a client and asserts that its first line is `ready`. */
    connectGreeted: () => Promise<LineClient>;
    journal: Journal;
    records: Records;
  }) => Promise<void>,
): Promise<void> {
  const records: Records = [];
  configureSync({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: [LOG_CATEGORY], lowestLevel: "info", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  const journal: Journal = { hangSignals: [], aborts: [], sendErrors: [] };
  try {
    await withServer(
      {
        protocol: misbehavingProtocol(journal),
        logger: getLogger([LOG_CATEGORY]),
        ...options,
      },
      ({ server, connectGreeted }) =>
        body({
          server,
          connectGreeted: () => connectGreeted("ready"),
          journal,
          records,
        }),
      { shutdownWithinMs: WAIT_MS },
    );
  } finally {
    resetSync();
  }
}

/** The text of the error records logged for failed connections. */
function faultLogs(records: Records): string[] {
  return records
    .filter((record) => record.level === "error")
    .map((record) => String(record.properties.error));
}

/** What one way of misbehaving returns, and what its fault's log must say. */
interface BadReply {
  command: string;
  /** What the client receives before the server closes. */
  received: string;
  /** Matches the logged error. */
  logged: RegExp;
}

const BAD_REPLIES: BadReply[] = [
  { command: "null", received: "", logged: /received null/ },
  { command: "promise-null", received: "", logged: /received null/ },
  { command: "thenable-null", received: "", logged: /received null/ },
  {
    command: "thenable-throws",
    received: "",
    logged: /then failed on purpose/,
  },
  { command: "number", received: "", logged: /received number 42/ },
  { command: "lf", received: "", logged: /contains LF/ },
  // Nothing of a reply with a bad line is sent: the client would see lines the session did not mean.
  { command: "lf-in-array", received: "", logged: /contains LF/ },
  // The reply itself was fine and is delivered; then the connection ends.
  {
    command: "ended-throws",
    received: "answered\r\n",
    logged: /ended getter failed on purpose/,
  },
];

for (const bad of BAD_REPLIES) {
  Deno.test(`session faults: reply() answering "${bad.command}" ends that connection as a fault; the server serves on`, async () => {
    await withMisbehavingServer(
      { maxConnections: 2 },
      async ({ server, connectGreeted, records }) => {
        const bystander = await connectGreeted();
        const victim = await connectGreeted();
        await victim.send("echo before\n");
        assert.equal(await victim.readLine(), "before");
        await victim.send(`${bad.command}\n`);
        assert.equal(await victim.readToEnd(WAIT_MS), bad.received);
        victim.close(); // the server need not wait for our FIN
        await waitFor(
          "the faulty connection to be counted",
          () => server.metrics.connectionsClosed.fault === 1,
          WAIT_MS,
        );
        const logged = faultLogs(records);
        assert.equal(logged.length, 1, `one fault logged: ${logged}`);
        assert.match(logged[0], bad.logged);
        // The other connection, and a new one in the freed slot, are served.
        await bystander.send("echo still here\n");
        assert.equal(await bystander.readLine(), "still here");
        await untilActive(server, 1);
        const next = await connectGreeted();
        await next.send("echo next\n");
        assert.equal(await next.readLine(), "next");
      },
    );
  });
}

Deno.test("session faults: a thenable that is not a Promise is awaited like one", async () => {
  await withMisbehavingServer({}, async ({ server, connectGreeted }) => {
    const client = await connectGreeted();
    await client.send("thenable-ok\necho after\n");
    assert.deepEqual(await client.readLines(2), ["from a thenable", "after"]);
    assert.equal(server.metrics.errors.handler_fault, 0);
  });
});

Deno.test("session faults: a reply that never settles is ended at the reply timeout; its slot is free again and its signal aborted", async () => {
  await withMisbehavingServer(
    { maxConnections: 1, replyTimeoutMs: 300 },
    async ({ server, connectGreeted, journal, records }) => {
      const stuck = await connectGreeted();
      await stuck.send("hang\n");
      assert.equal(await stuck.readToEnd(WAIT_MS), "");
      await waitFor(
        "the connection to end as reply_timeout",
        () => server.metrics.connectionsClosed.reply_timeout === 1,
        WAIT_MS,
      );
      assert.equal(journal.hangSignals.length, 1);
      assert.equal(journal.hangSignals[0].aborted, true);
      assert.deepEqual(journal.aborts, ["The reply took too long"]);
      assert.ok(
        records.some((record) =>
          record.level === "warning" &&
          String(record.message.join("")).includes("did not settle in time")
        ),
        "the timeout is logged as a warning",
      );
      // Its own error kind: a slow backend is not counted as a bug.
      assert.equal(server.metrics.errors.reply_timeout, 1);
      assert.equal(server.metrics.errors.handler_fault, 0);
      // The only slot is free: the next client is served, not refused.
      const next = await connectGreeted();
      await next.send("echo served\n");
      assert.equal(await next.readLine(), "served");
    },
  );
});

Deno.test("session faults: a client that resets while its reply is pending frees its slot at once; the reply's signal aborts", async () => {
  // The default reply timeout (30 s) is far beyond this test: only the reset can free the slot.
  await withMisbehavingServer(
    { maxConnections: 1 },
    async ({ server, connectGreeted, journal }) => {
      const leaving = net.connect(server.addr.port, HOST);
      leaving.on("error", () => {});
      const gone = new Promise((resolve) => leaving.once("close", resolve));
      try {
        leaving.write("hang\n");
        await waitFor(
          "the reply to be pending",
          () => journal.hangSignals.length === 1,
          WAIT_MS,
        );
        leaving.resetAndDestroy(); // SO_LINGER 0: the server receives RST
      } finally {
        leaving.destroy();
        await gone;
      }
      await untilActive(server, 0, 2000);
      assert.equal(server.metrics.connectionsClosed.reset, 1);
      assert.equal(journal.hangSignals[0].aborted, true);
      const next = await connectGreeted();
      await next.send("echo served\n");
      assert.equal(await next.readLine(), "served");
    },
  );
});

Deno.test("session API: the reply of the reply() call that closes the connection is sent before the final line", async () => {
  await withMisbehavingServer({}, async ({ server, connectGreeted }) => {
    const client = await connectGreeted();
    // A request pipelined after the closing one is never answered.
    await client.send("reply-then-close\necho too late\n");
    assert.equal(await client.readToEnd(WAIT_MS), "last words\r\nbye\r\n");
    client.close();
    await waitFor(
      "the connection to end as quit",
      () => server.metrics.connectionsClosed.quit === 1,
      WAIT_MS,
    );
  });
});

Deno.test("session API: send() with CR or LF in a line throws a TypeError and sends none of its lines; the connection stays usable", async () => {
  await withMisbehavingServer(
    {},
    async ({ server, connectGreeted, journal }) => {
      const client = await connectGreeted();
      await client.send("send-cr\n");
      // The next line is the reply, not a forged `* guest1 left` announcement.
      assert.equal(await client.readLine(), "send threw TypeError");
      await client.send("send-lf\n");
      // Not even the valid line before the bad one was sent.
      assert.equal(await client.readLine(), "send threw TypeError");
      await client.send("echo still usable\n");
      assert.equal(await client.readLine(), "still usable");
      assert.equal(journal.sendErrors.length, 2);
      assert.match(journal.sendErrors[0], /CR or LF/);
      assert.equal(server.metrics.errors.handler_fault, 0);
      assert.equal(server.activeConnections, 1);
    },
  );
});

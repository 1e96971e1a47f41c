/**
 * The server core as a library (`mod.ts`): custom LineProtocols plug in, get
 * the same framing, may answer asynchronously, and end connections themselves.
 */
import assert from "node:assert/strict";
import {
  echoProtocol,
  type LineProtocol,
  type LineSession,
  startServer,
} from "../mod.ts";
import { delay } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { withServer } from "./support/socket_harness.ts";

/** Upper-cases every line; greets; `bye` ends the connection; counts per session. */
const shoutProtocol: LineProtocol = {
  name: "shout",
  createSession(): LineSession {
    let count = 0;
    let ended = false;
    return {
      greeting: "HELLO, SAY SOMETHING",
      get ended() {
        return ended;
      },
      reply(line: string): string {
        count++;
        if (line === "bye") {
          ended = true;
          return `BYE AFTER ${count} LINES`;
        }
        return line.toUpperCase();
      },
    };
  },
};

/** Answers after `line` milliseconds, so later lines could finish first. */
const slowProtocol: LineProtocol = {
  name: "slow",
  createSession(): LineSession {
    return {
      greeting: undefined,
      ended: false,
      async reply(line: string): Promise<string> {
        await delay(Number(line));
        return `waited ${line}`;
      },
    };
  },
};

Deno.test("embedding: a custom protocol with a greeting and an ending command", async () => {
  await withServer({ protocol: shoutProtocol }, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), "HELLO, SAY SOMETHING");
    await client.send("hello there\r\n");
    assert.equal(await client.readLine(), "HELLO THERE");
    // Framing is the core's: trailing whitespace gone, leading kept.
    await client.send("  straße \t\r\n");
    assert.equal(await client.readLine(), "  STRASSE");
    // `bye` ends the connection; the line after it is not answered.
    await client.send("bye\nafter\n");
    assert.equal(await client.readToEnd(), "BYE AFTER 3 LINES\r\n");
    // Sessions are per connection: a new one counts from zero.
    const second = await connect();
    assert.equal(await second.readLine(), "HELLO, SAY SOMETHING");
    await second.send("bye\n");
    assert.equal(await second.readToEnd(), "BYE AFTER 1 LINES\r\n");
  });
});

Deno.test("embedding: the line limit applies to custom protocols", async () => {
  await withServer(
    { protocol: shoutProtocol, maxLineBytes: 8 },
    async ({ connect }) => {
      const client = await connect();
      assert.equal(await client.readLine(), "HELLO, SAY SOMETHING");
      await client.send("12345678\n123456789\nok\n");
      assert.deepEqual(await client.readLines(3), [
        "12345678",
        "ERROR. Line too long (max 8 bytes)",
        "OK",
      ]);
    },
  );
});

Deno.test("embedding: async replies stay in request order", async () => {
  await withServer({ protocol: slowProtocol }, async ({ connect }) => {
    const client = await connect();
    // Pipelined: the first reply takes longest.
    await client.send("60\n0\n30\n1\n");
    assert.deepEqual(await client.readLines(4), [
      "waited 60",
      "waited 0",
      "waited 30",
      "waited 1",
    ]);
    // Another client is not held up by a slow reply on the first.
    const other = await connect();
    await client.send("300\n");
    await other.send("0\n");
    assert.equal(await other.readLine(1000), "waited 0");
    assert.equal(await client.readLine(), "waited 300");
  });
});

Deno.test("embedding: a throwing handler closes only its own connection", async () => {
  const faulty: LineProtocol = {
    name: "faulty",
    createSession(): LineSession {
      return {
        greeting: "ready",
        ended: false,
        reply(line: string): string | Promise<string> {
          if (line === "throw") throw new Error("handler failed (on purpose)");
          if (line === "reject") {
            return Promise.reject(new Error("handler rejected (on purpose)"));
          }
          return `ok ${line}`;
        },
      };
    },
  };
  await withServer({ protocol: faulty }, async ({ connect }) => {
    const bystander = await connect();
    assert.equal(await bystander.readLine(), "ready");
    for (const trigger of ["throw", "reject"]) {
      const victim = await connect();
      assert.equal(await victim.readLine(), "ready");
      await victim.send(`1\n${trigger}\n2\n`);
      assert.equal(await victim.readLine(), "ok 1");
      // Whatever it may say, it ends, and `2` is never answered.
      const rest = await victim.readToEnd();
      assert.ok(!rest.includes("ok 2"), `after ${trigger}: ${rest}`);
      await bystander.send(`${trigger} survived\n`);
      assert.equal(await bystander.readLine(), `ok ${trigger} survived`);
    }
    // The listener still accepts.
    const late = await connect();
    assert.equal(await late.readLine(), "ready");
  });
});

Deno.test("embedding: README-style example with `await using`", async () => {
  await using server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    protocol: echoProtocol,
  });
  assert.equal(server.addr.hostname, "127.0.0.1");
  assert.ok(server.addr.port > 0);

  using client = await LineClient.connect(server.addr.port);
  await client.send("hello, lineserver\n");
  assert.equal(await client.readLine(), "hello, lineserver");
});

Deno.test("embedding: shutdown reports what it served", async () => {
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    protocol: shoutProtocol,
  });
  try {
    for (let i = 0; i < 2; i++) {
      using client = await LineClient.connect(server.addr.port);
      assert.equal(await client.readLine(), "HELLO, SAY SOMETHING");
      await client.send("bye\n");
      assert.equal(await client.readToEnd(), "BYE AFTER 1 LINES\r\n");
    }
  } finally {
    const summary = await server.shutdown();
    assert.equal(summary.served, 2);
    assert.equal(summary.closedByForce, 0);
  }
  // Once shut down, the port refuses connections.
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }),
    Deno.errors.ConnectionRefused,
  );
});

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
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
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

// ---------------------------------------------------------------------------
// The README's embedding example, run from a project outside this repository,
// exactly as the README gives it (only the path to the clone differs).

/** This repository's root, without the trailing slash. */
const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The README's `deno.json` and `main.ts` for an embedding project. */
async function readmeEmbeddingExample(): Promise<
  { denoJson: string; mainTs: string }
> {
  const readme = await Deno.readTextFile(`${REPO_ROOT}/README.md`);
  const section = readme.split(/^## Embedding$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, "README.md has no Embedding section");
  const json = section.match(/^```json\n([\s\S]*?)^```$/m)?.[1];
  const ts = section.match(/^```ts(?: ignore)?\n([\s\S]*?)^```$/m)?.[1];
  assert.ok(json && ts, "the Embedding section has a json and a ts block");
  return { denoJson: json, mainTs: ts };
}

/**
 * Writes `files` into a new directory outside the repository, runs
 * `deno run --allow-net main.ts` there, talks to the server it prints, stops
 * it with SIGTERM, and returns what it printed.
 */
async function runOutsideRepo(
  files: Record<string, string>,
): Promise<{ output: string; code: number }> {
  const dir = await Deno.makeTempDir({ prefix: "lineserver-embed-" });
  assert.ok(
    !dir.startsWith(`${REPO_ROOT}/`),
    "the project is outside the repo",
  );
  try {
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    const child = new Deno.Command("deno", {
      args: ["run", "--check", "--allow-net", "main.ts"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let output = "";
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        output += text;
      }
    };
    const collected = Promise.all([
      collect(child.stdout),
      collect(child.stderr),
    ]);
    try {
      const listening = /listening on 127\.0\.0\.1:(\d+)\n/;
      await withTimeout(
        (async () => {
          while (!listening.test(output)) {
            if (await Promise.race([child.status, delay(25)])) {
              throw new Error(`main.ts exited before listening:\n${output}`);
            }
          }
        })(),
        60_000,
        "the embedding project to start (first run type-checks)",
      );
      const port = Number(output.match(listening)![1]);
      {
        using client = await LineClient.connect(port);
        assert.equal(
          await client.readLine(),
          "hello, I shout back (bye to leave)",
        );
        await client.send("hello from outside\r\n");
        assert.equal(await client.readLine(), "HELLO FROM OUTSIDE");
        await client.send("bye\n");
        assert.equal(await client.readToEnd(), "bye!\r\n");
      }
      // The close is logged once the client's side has closed too.
      await waitFor(
        "the connection's close to be logged",
        () => output.includes("connection closed"),
        5000,
      );
      child.kill("SIGTERM");
      const status = await withTimeout(child.status, 10_000, "main.ts to exit");
      await collected;
      return { output, code: status.code };
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await collected;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** What every run of the example must print: the events and the summary. */
function assertServedAndLogged(run: { output: string; code: number }) {
  assert.equal(run.code, 0, run.output);
  // The command's text lines: level, then the message, values unquoted.
  assert.match(run.output, /Z INFO {2}connection opened 127\.0\.0\.1:\d+\n/);
  assert.match(run.output, /connection closed .*2 lines.*quit/);
  assert.match(
    run.output,
    /stopped: \{ served: 1, closedGracefully: 0, closedByForce: 0 \}/,
  );
}

Deno.test("embedding: the README example runs in a project of its own, serves a client and logs", async () => {
  const { denoJson, mainTs } = await readmeEmbeddingExample();
  // The README's clone is ../lineserver; here it is this repository.
  assert.match(denoJson, /"links": \["\.\.\/lineserver"\]/);
  const run = await runOutsideRepo({
    "deno.json": denoJson.replace('"../lineserver"', `"${REPO_ROOT}"`),
    "main.ts": mainTs,
  });
  assertServedAndLogged(run);
});

Deno.test("embedding: importing mod.ts by path works with the README's import of LogTape", async () => {
  const { denoJson, mainTs } = await readmeEmbeddingExample();
  const config = JSON.parse(denoJson);
  delete config.links;
  delete config.imports["@lineserver/lineserver"];
  const byPath = mainTs.replace(
    `from "@lineserver/lineserver"`,
    `from "${REPO_ROOT}/mod.ts"`,
  );
  assert.notEqual(byPath, mainTs);
  const run = await runOutsideRepo({
    "deno.json": JSON.stringify(config, null, 2),
    "main.ts": byPath,
  });
  assertServedAndLogged(run);
});

/**
 * What the command's log shows of connections, at the default level, read
 * from a real `server.ts` subprocess's stderr: a refused client is a line
 * naming its outcome (`refused_per_ip`, `refused_busy`); a flood of
 * refusals is folded into a few lines a second and a summary that counts
 * the rest by outcome; and with `--log-format json` a closed connection's
 * object carries its line count as a number and its `outcome`.
 */
import assert from "node:assert/strict";
import { ServerReplies } from "../mod.ts";
import { waitFor } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import { BYE, sum } from "./support/calc_replies.ts";
import { connectGreeted } from "./support/hardening.ts";

/** The refusal line of a client from 127.0.0.1, with its level. */
const refusalLine = (outcome: string) =>
  new RegExp(
    String.raw`INFO  connection refused 127\.0\.0\.1:\d+: ${outcome}\n`,
  );

/** Runs `body` with a `server.ts` started with `args` (plus `--port 0`); always stops it. */
async function withServerProcess(
  args: string[],
  body: (server: ServerProcess, clients: LineClient[]) => Promise<void>,
): Promise<void> {
  const server = await ServerProcess.start(["--port", "0", ...args]);
  const clients: LineClient[] = [];
  try {
    await body(server, clients);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}

/** Connects and reads everything until the server closes: a refusal. */
async function refused(port: number): Promise<string> {
  const client = await LineClient.connect(port);
  try {
    return await client.readToEnd(5000);
  } finally {
    client.close();
  }
}

for (
  const [limit, outcome, line] of [
    [
      "--max-connections-per-ip",
      "refused_per_ip",
      ServerReplies.tooManyFromAddress,
    ],
    ["--max-connections", "refused_busy", ServerReplies.tooManyConnections],
  ] as const
) {
  Deno.test(`connection log: a client refused by ${limit} is an info line naming ${outcome}`, async () => {
    await withServerProcess([limit, "1"], async (server, clients) => {
      clients.push(await connectGreeted(server.port));
      assert.equal(await refused(server.port), `${line}\r\n`);
      await server.waitForStderr(refusalLine(outcome), 5000);
    });
  });
}

Deno.test("connection log: a flood of refusals is a few lines a second and a summary counting the rest by outcome", async () => {
  const total = 200;
  await withServerProcess(
    ["--max-connections", "1"],
    async (server, clients) => {
      clients.push(await connectGreeted(server.port));
      const startedAt = performance.now();
      for (let done = 0; done < total; done += 20) {
        await Promise.all(
          Array.from({ length: 20 }, () => refused(server.port)),
        );
      }
      const floodSeconds = (performance.now() - startedAt) / 1000;
      // Each refusal is either written or counted in a summary at the end
      // of its second.
      const written = () =>
        server.stderr.match(new RegExp(refusalLine("refused_busy"), "g"))
          ?.length ?? 0;
      const folded = () =>
        [...server.stderr.matchAll(
          /INFO {2}(\d+) more "connection refused \{peer\}: \{outcome\}" in the last second: refused_busy (\d+)\n/g,
        )].reduce((sum, match) => {
          assert.equal(match[1], match[2], "all of them refused_busy");
          return sum + Number(match[1]);
        }, 0);
      await waitFor(
        `${total} refusals to be written or counted`,
        () => written() + folded() === total,
        5000,
      );
      // Five a second are written: the flood spans at most this many seconds.
      const windows = Math.ceil(floodSeconds) + 1;
      assert.ok(
        written() <= 5 * windows,
        `${written()} refusal lines for a flood of ${
          floodSeconds.toFixed(1)
        } s`,
      );
      assert.ok(folded() > 0);
    },
  );
});

Deno.test("connection log: with --log-format json a closed connection has its lines as a number and its outcome", async () => {
  await withServerProcess(["--log-format", "json"], async (server) => {
    const client = await LineClient.connect(server.port);
    try {
      await client.send("1,2\n3,4\nquit\n");
      assert.deepEqual(await client.readLines(4), [
        "<welcome: starting in sum mode>",
        sum(3),
        sum(7),
        BYE,
      ]);
      await client.expectClosed();
    } finally {
      client.close();
    }
    const match = await server.waitForStderr(
      /^\{.*"message":"connection closed .*\}$/m,
      5000,
    );
    const record = JSON.parse(match[0]);
    assert.equal(record.lines, 3);
    assert.equal(record.outcome, "quit");
    assert.equal(typeof record.durationMs, "number");
    assert.equal(record.linesAnswered, undefined);
    assert.equal(record.reason, undefined);
  });
});

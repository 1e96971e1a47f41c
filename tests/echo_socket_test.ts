/**
 * The echo protocol over real sockets against an in-process server:
 * no welcome, every framed line comes back, the line limit applies.
 */
import assert from "node:assert/strict";
import { echoProtocol } from "../mod.ts";
import { ByteReader, bytes, withServer } from "./support/socket_harness.ts";
import { tooLong } from "./support/calc_replies.ts";

Deno.test("echo: no welcome; the first line read is the first echo", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    await client.send("hello\n");
    assert.equal(await client.readLine(), "hello");
    await client.send("hello\r\n");
    assert.equal(await client.readLine(), "hello");
  });
});

Deno.test("echo: lines come back after framing", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    const cases: [string, string][] = [
      ["plain\n", "plain"],
      ["crlf\r\n", "crlf"],
      ["\n", ""],
      ["\r\n", ""],
      [" \t\x0b\x0c\r\n", ""],
      ["  leading kept\n", "  leading kept"],
      ["\tleading tab \t\n", "\tleading tab"],
      ["trailing \t\x0b\x0c\r\r\n", "trailing"],
      ["lone\rcr\n", "lone\rcr"],
      ["inner  \t spaces\n", "inner  \t spaces"],
      ["1,2,4\n", "1,2,4"],
      ["sum\n", "sum"],
      ["help\n", "help"],
      ["quit\n", "quit"], // no special meaning in echo
      ["ünïcödé ✓ 😀\n", "ünïcödé ✓ 😀"],
    ];
    await client.send(cases.map(([request]) => request).join(""));
    const replies = await client.readLines(cases.length);
    cases.forEach(([request, expected], i) =>
      assert.equal(replies[i], expected, `echo of ${JSON.stringify(request)}`)
    );
    // Still open after `quit`.
    await client.send("still here\n");
    assert.equal(await client.readLine(), "still here");
  });
});

Deno.test("echo: exact reply bytes, UTF-8 out", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    const reader = new ByteReader(client.conn);
    await client.send("é\r\n\n");
    assert.deepEqual(await reader.readLineBytes(), bytes([0xc3, 0xa9], "\r\n"));
    assert.deepEqual(await reader.readLineBytes(), bytes("\r\n"));
  });
});

Deno.test("echo: half-close after a final fragment echoes it, then closes", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    await client.send("one\ntwo  ");
    await client.closeWrite();
    assert.equal(await client.readToEnd(), "one\r\ntwo\r\n");
  });
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    await client.send(" \t");
    await client.closeWrite();
    assert.equal(await client.readToEnd(), "\r\n");
  });
});

Deno.test("echo: the line limit applies, counted in raw bytes", async () => {
  await withServer(
    { protocol: echoProtocol, maxLineBytes: 16 },
    async ({ connect }) => {
      const client = await connect();
      const sixteen = "abcdefghijklmnop";
      await client.send(
        [
          "a",
          sixteen,
          `${sixteen}q`,
          "é".repeat(8), // 16 bytes
          "é".repeat(9), // 18 bytes, 9 characters
          `${sixteen} `, // 17 bytes before the strip
          "b",
        ].map((line) => `${line}\n`).join(""),
      );
      assert.deepEqual(await client.readLines(7), [
        "a",
        sixteen,
        tooLong(16),
        "é".repeat(8),
        tooLong(16),
        tooLong(16),
        "b",
      ]);
      await client.send(`${sixteen}\r\n`);
      assert.equal(await client.readLine(), sixteen);
    },
  );
});

Deno.test("echo: each connection gets only its own lines", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const a = await connect();
    const b = await connect();
    await a.send("from a 1\nfrom a");
    await b.send("from b\n");
    assert.equal(await b.readLine(), "from b");
    await a.send(" 2\n");
    assert.deepEqual(await a.readLines(2), ["from a 1", "from a 2"]);
  });
});

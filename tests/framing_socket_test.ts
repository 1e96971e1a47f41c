/**
 * The line framing (docs/protocol.md, "Framing") over real sockets against an in-process server
 * started through `mod.ts`: pipelining, one byte per write, CR and LF,
 * half-close, UTF-8 across writes, and the line limit. Mostly through the
 * calculator, whose replies show how each line was framed; raw bytes through
 * echo. Every reply is compared byte for byte (LineClient checks the `\r\n`).
 */
import assert from "node:assert/strict";
import { echoProtocol } from "../mod.ts";
import { delay } from "./support/deadline.ts";
import {
  ask,
  BYE,
  NOT_INTEGERS,
  product,
  sum,
  TO_PRODUCT,
  TO_SUM,
  tooLong,
  WELCOME,
} from "./support/calc_replies.ts";
import { ByteReader, bytes, withServer } from "./support/socket_harness.ts";

Deno.test("calc: 1000 pipelined lines in one write get 1000 replies in order", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    const requests: string[] = [];
    const expected: string[] = [];
    for (let i = 0; i < 1000; i++) {
      if (i % 100 === 50) {
        requests.push("product\n");
        expected.push(TO_PRODUCT);
      } else if (i % 100 === 0) {
        requests.push("sum\r\n");
        expected.push(TO_SUM);
      } else if (i % 100 < 50) {
        requests.push(`${i},${i}\n`);
        expected.push(sum(2 * i));
      } else {
        requests.push(`${i},${i}\r\n`);
        expected.push(product(i * i));
      }
    }
    const payload = bytes(requests.join(""));
    // One write call for the whole batch (no retry loop splitting it up).
    const written = await client.conn.write(payload);
    if (written < payload.length) await client.send(payload.subarray(written));
    assert.deepEqual(await client.readLines(1000, 15000), expected);
    await ask(client, "quit\n", BYE);
    await client.expectClosed();
  });
});

Deno.test("calc: one byte per write, CRLF and LF", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    client.conn.setNoDelay(true);
    assert.equal(await client.readLine(), WELCOME);
    const text = "product\r\n6,7\n sum\r\nsum\n1,-2,3\r\n";
    for (const byte of bytes(text)) {
      await client.send(Uint8Array.of(byte));
      await delay(2);
    }
    assert.deepEqual(await client.readLines(5), [
      TO_PRODUCT,
      product(42),
      NOT_INTEGERS,
      TO_SUM,
      sum(2),
    ]);
  });
});

Deno.test("calc: half-close after a final line without terminator", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await client.send("product\n1,2");
    await client.closeWrite();
    assert.equal(await client.readLine(), TO_PRODUCT);
    assert.equal(await client.readLine(), product(2));
    await client.expectClosed();
  });
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    await client.send("1,2");
    await client.closeWrite();
    assert.equal(await client.readToEnd(), `${WELCOME}\r\n${sum(3)}\r\n`);
  });
});

Deno.test("calc: a whitespace-only final fragment before FIN gets an error line", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    await client.send("1,2\n \t");
    await client.closeWrite();
    assert.equal(
      await client.readToEnd(),
      `${WELCOME}\r\n${sum(3)}\r\n${NOT_INTEGERS}\r\n`,
    );
  });
});

Deno.test("calc: FIN right after a terminator adds no reply", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    await client.send("1,2\r\n");
    await client.closeWrite();
    assert.equal(await client.readToEnd(), `${WELCOME}\r\n${sum(3)}\r\n`);
  });
});

Deno.test("calc: CRLF and LF both end a line; a lone CR is an ordinary character", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await ask(client, "1,2\r\n", sum(3));
    await ask(client, "3,4\n", sum(7));
    // CR is not space or tab, so it is not allowed around an integer.
    await ask(client, "1\r,2\n", NOT_INTEGERS);
    await ask(client, "\rsum\n", NOT_INTEGERS);
    // A lone CR does not end a line: this is one line `1,2\r5,6`, one reply.
    await ask(client, "1,2\r5,6\n", NOT_INTEGERS);
    await client.send("1,2\r");
    await client.send("5,6\n7\n");
    assert.deepEqual(await client.readLines(2), [NOT_INTEGERS, sum(7)]);
    // Extra CRs before the terminator are trailing whitespace.
    await ask(client, "1,2\r\r\n", sum(3));
    await ask(client, "product\r\r\r\n", TO_PRODUCT);
  });
});

Deno.test("calc: invalid UTF-8 is replaced and never ends the connection", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await client.send(bytes("1,", [0xff, 0xfe], "2\n", [0xc3], "\n"));
    assert.deepEqual(await client.readLines(2), [NOT_INTEGERS, NOT_INTEGERS]);
    await ask(client, "1,2\n", sum(3));
  });
});

Deno.test("framing: UTF-8 split across writes and invalid bytes (echo, raw bytes)", async () => {
  await withServer({ protocol: echoProtocol }, async ({ connect }) => {
    const client = await connect();
    client.conn.setNoDelay(true);
    const reader = new ByteReader(client.conn);
    // "café": é is C3 A9, split between two writes.
    await client.send(bytes("caf", [0xc3]));
    await delay(50);
    await client.send(bytes([0xa9], "\n"));
    assert.deepEqual(await reader.readLineBytes(), bytes("café\r\n"));
    // A four-byte character, one byte per write.
    for (const byte of bytes("<😀>\n")) {
      await client.send(Uint8Array.of(byte));
      await delay(5);
    }
    assert.deepEqual(await reader.readLineBytes(), bytes("<😀>\r\n"));
    // Invalid sequences become U+FFFD (EF BF BD on the wire).
    await client.send(bytes("a", [0xff], "b", [0xc3, 0x28], "c\n"));
    assert.deepEqual(
      await reader.readLineBytes(),
      bytes("a\ufffdb\ufffd(c\r\n"),
    );
    // A truncated sequence at the end of a line.
    await client.send(bytes("x", [0xe2, 0x82], "\n"));
    assert.deepEqual(await reader.readLineBytes(), bytes("x\ufffd\r\n"));
    // The connection is still fine.
    await client.send("ok\n");
    assert.deepEqual(await reader.readLineBytes(), bytes("ok\r\n"));
  });
});

Deno.test("calc: line limit, in order, connection stays usable", async () => {
  await withServer({ maxLineBytes: 16 }, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    const sixteen = "1111111111111111"; // 16 bytes
    assert.equal(sixteen.length, 16);
    await client.send(
      `1,2\n${sixteen}1\n3,4\n${sixteen}\r\n${sixteen}\n${sixteen} \n5\n`,
    );
    assert.deepEqual(await client.readLines(7), [
      sum(3),
      tooLong(16),
      sum(7),
      sum(sixteen), // exactly 16 bytes + CRLF: fine
      sum(sixteen), // exactly 16 bytes + LF: fine
      tooLong(16), // 17 bytes before the whitespace strip
      sum(5),
    ]);
    // A long line made of commands is discarded, not executed.
    await client.send(`product\nquit${" ".repeat(13)}\n2,3\n`);
    assert.deepEqual(await client.readLines(3), [
      TO_PRODUCT,
      tooLong(16),
      product(6),
    ]);
    await ask(client, "quit\n", BYE);
    await client.expectClosed();
  });
});

Deno.test("calc: line limit when a line arrives one byte per write", async () => {
  await withServer({ maxLineBytes: 16 }, async ({ connect }) => {
    const client = await connect();
    client.conn.setNoDelay(true);
    assert.equal(await client.readLine(), WELCOME);
    const sixteen = "1111111111111111";
    const text = [
      `${sixteen}\r\n`, // 16 bytes + CRLF: fine
      `${sixteen}\r\r\n`, // 17 bytes before the terminator: too long
      `${sixteen}\rx\n`, // a lone CR is a character: too long
      `${"1".repeat(15)}\r\r\n`, // 16 bytes (15 + CR) + CRLF: fine
      "2,3\n",
    ].join("");
    for (const byte of bytes(text)) {
      await client.send(Uint8Array.of(byte));
      await delay(1);
    }
    assert.deepEqual(await client.readLines(5), [
      sum(sixteen),
      tooLong(16),
      tooLong(16),
      sum("1".repeat(15)),
      sum(5),
    ]);
    // The CR of a CRLF split from its LF.
    await client.send(`${sixteen}\r`);
    await delay(20);
    await client.send("\n");
    assert.equal(await client.readLine(), sum(sixteen));
  });
});

Deno.test("calc: an over-long line sent in many chunks is answered once", async () => {
  await withServer({ maxLineBytes: 16 }, async ({ connect }) => {
    const client = await connect();
    client.conn.setNoDelay(true);
    assert.equal(await client.readLine(), WELCOME);
    await client.send("1,2\n");
    for (let i = 0; i < 20; i++) {
      await client.send("1,1,1,1,1,");
      await delay(3);
    }
    await client.send("1\n3,4\n");
    assert.deepEqual(await client.readLines(3), [sum(3), tooLong(16), sum(7)]);
    // A big over-long line in one go (its bytes are dropped as they arrive).
    await client.send(`${"9,".repeat(100_000)}9\n4,4\n`);
    assert.deepEqual(await client.readLines(2), [tooLong(16), sum(8)]);
  });
});

Deno.test("calc: an over-long final fragment before FIN is answered once", async () => {
  await withServer({ maxLineBytes: 16 }, async ({ connect }) => {
    const client = await connect();
    await client.send(`1,2\n${"1".repeat(40)}`);
    await client.closeWrite();
    assert.equal(
      await client.readToEnd(),
      `${WELCOME}\r\n${sum(3)}\r\n${tooLong(16)}\r\n`,
    );
  });
});

Deno.test("calc: the default line limit is 65536 bytes", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    const exact = `${"0".repeat(65535)}1`; // 65536 bytes
    await client.send(`${exact}\n${exact}0\n2\n`);
    assert.deepEqual(await client.readLines(3), [
      sum(1),
      tooLong(65536),
      sum(2),
    ]);
  });
});

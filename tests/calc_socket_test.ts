/**
 * The calculator protocol and the line framing (SPEC §2, §3), over real
 * sockets against an in-process server started through `mod.ts`.
 * Every reply is compared byte for byte (LineClient checks the `\r\n`).
 */
import assert from "node:assert/strict";
import { calculatorProtocol, echoProtocol } from "../mod.ts";
import { delay } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { ByteReader, bytes, withServer } from "./support/socket_harness.ts";

const WELCOME = "<welcome: starting in sum mode>";
const TO_SUM = "<switching to sum mode>";
const TO_PRODUCT = "<switching to product mode>";
const HELP =
  "Commands: sum, product, quit, help. Or send integers separated by commas, e.g. 1,2,4";
const BYE = "connection closed";
const NOT_INTEGERS = "ERROR. Enter only integers separated by commas";
const sum = (n: string | number | bigint) => `Sum of input integers: '${n}'`;
const product = (n: string | number | bigint) =>
  `Product of input integers: '${n}'`;
const tooLong = (max: number) => `ERROR. Line too long (max ${max} bytes)`;

/** Sends `request` and asserts the next reply line is exactly `expected`. */
async function ask(client: LineClient, request: string, expected: string) {
  await client.send(request);
  assert.equal(
    await client.readLine(),
    expected,
    `reply to ${JSON.stringify(request)}`,
  );
}

Deno.test("calc: the SPEC §3 transcript, byte for byte", async () => {
  await withServer({ protocol: calculatorProtocol }, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await ask(client, "help\r\n", HELP);
    await ask(client, "1,2,4\r\n", sum(7));
    await ask(client, "product\r\n", TO_PRODUCT);
    await ask(client, "1,2,4\r\n", product(8));
    await ask(client, "sum\r\n", TO_SUM);
    await ask(client, "1,2,4\r\n", sum(7));
    await ask(client, "hello\r\n", NOT_INTEGERS);
    // `quit` and more lines in the same write: only `quit` is answered.
    await client.send("quit\r\n1,2\r\nhelp\r\nproduct\r\n");
    assert.equal(await client.readToEnd(), `${BYE}\r\n`);
  });
});

Deno.test("calc: calculator is the default protocol", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await ask(client, "quit\n", BYE);
    await client.expectClosed();
  });
});

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

Deno.test("calc: each connection has its own mode", async () => {
  await withServer({}, async ({ connect }) => {
    const a = await connect();
    const b = await connect();
    assert.equal(await a.readLine(), WELCOME);
    assert.equal(await b.readLine(), WELCOME);
    await ask(a, "product\n", TO_PRODUCT);
    await ask(b, "2,3\n", sum(5));
    await ask(a, "2,3\n", product(6));
    await ask(b, "product\n", TO_PRODUCT);
    await ask(a, "sum\n", TO_SUM);
    await ask(b, "2,3\n", product(6));
    await ask(a, "2,3\n", sum(5));
    // A third client starts in sum mode whatever the others did.
    const c = await connect();
    assert.equal(await c.readLine(), WELCOME);
    await ask(c, "2,3\n", sum(5));
  });
});

Deno.test("calc: a silent client does not delay another client", async () => {
  await withServer({}, async ({ connect }) => {
    const silent = await connect();
    const halfLine = await connect();
    assert.equal(await halfLine.readLine(), WELCOME);
    await halfLine.send("1,2,"); // never finished
    const busy = await connect();
    assert.equal(await busy.readLine(2000), WELCOME);
    for (let i = 1; i <= 5; i++) {
      await busy.send(`${i},${i}\n`);
      assert.equal(await busy.readLine(2000), sum(2 * i));
    }
    // The silent ones are still connected and the half line is still pending.
    assert.equal(await silent.readLine(), WELCOME);
    await halfLine.send("3\n");
    assert.equal(await halfLine.readLine(), sum(6));
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

Deno.test("calc: trailing whitespace is stripped, leading whitespace is kept", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await ask(client, "product \t\r\n", TO_PRODUCT);
    await ask(client, "sum \t\r\n", TO_SUM);
    await ask(client, "product\x0b\x0c \n", TO_PRODUCT);
    await ask(client, "help\t\n", HELP);
    await ask(client, " sum\n", NOT_INTEGERS);
    await ask(client, "\tsum\n", NOT_INTEGERS);
    await ask(client, "Sum\n", NOT_INTEGERS);
    await ask(client, "PRODUCT\n", NOT_INTEGERS);
    await ask(client, " quit\n", NOT_INTEGERS);
    await ask(client, "2,3 \t\x0b\x0c\r\n", product(6));
    await ask(client, "quit \t\r\n", BYE);
    await client.expectClosed();
  });
});

Deno.test("calc: integer syntax follows Python int() on ASCII", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    const cases: [string, string][] = [
      ["1", sum(1)],
      [" +1 , -2,\t1_000\t", sum(999)],
      ["007,-0,+0", sum(7)],
      ["1_0_0,-1_0", sum(90)],
      ["-5", sum(-5)],
      ["", NOT_INTEGERS],
      ["   ", NOT_INTEGERS],
      ["1,,2", NOT_INTEGERS],
      ["1,2,", NOT_INTEGERS],
      [",1", NOT_INTEGERS],
      ["1 2", NOT_INTEGERS],
      ["0x10", NOT_INTEGERS],
      ["1.5", NOT_INTEGERS],
      ["1e3", NOT_INTEGERS],
      ["--1", NOT_INTEGERS],
      ["+-1", NOT_INTEGERS],
      ["- 1", NOT_INTEGERS],
      ["_1", NOT_INTEGERS],
      ["1_", NOT_INTEGERS],
      ["1__0", NOT_INTEGERS],
      ["+", NOT_INTEGERS],
      ["1;2", NOT_INTEGERS],
      ["\u0661,2", NOT_INTEGERS], // ARABIC-INDIC DIGIT ONE: not ASCII
      ["\uff11", NOT_INTEGERS], // FULLWIDTH DIGIT ONE
      // SPEC allows only spaces/tabs around an item (NO-BREAK SPACE is not).
      ["1\u00a0,2", NOT_INTEGERS],
    ];
    await client.send(cases.map(([line]) => `${line}\n`).join(""));
    const replies = await client.readLines(cases.length);
    cases.forEach(([line, expected], i) =>
      assert.equal(replies[i], expected, `reply to ${JSON.stringify(line)}`)
    );
    await ask(client, "product\n", TO_PRODUCT);
    await ask(client, "-2,3,-4\n", product(24));
    await ask(client, "5,0\n", product(0));
  });
});

Deno.test("calc: arithmetic is exact at any size", async () => {
  await withServer({}, async ({ connect }) => {
    const client = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await ask(client, "9007199254740993,1\n", sum("9007199254740994"));
    const huge = "9".repeat(200);
    await ask(client, `${huge},1\n`, sum(`1${"0".repeat(200)}`));
    await ask(client, "product\n", TO_PRODUCT);
    await ask(
      client,
      "99999999999,99999999999\n",
      product("9999999999800000000001"),
    );
    await ask(
      client,
      "-99999999999,99999999999,-1\n",
      product("9999999999800000000001"),
    );
    await ask(
      client,
      `${huge},${huge}\n`,
      product(BigInt(huge) * BigInt(huge)),
    );
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

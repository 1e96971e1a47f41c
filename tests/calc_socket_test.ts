/**
 * The calculator protocol over real sockets against an in-process
 * server started through `mod.ts`: the transcript, exact commands, integer
 * syntax, exact arithmetic, and a mode per connection that no other client
 * affects or delays. The line framing is in `framing_socket_test.ts`.
 * Every reply is compared byte for byte (LineClient checks the `\r\n`).
 */
import assert from "node:assert/strict";
import { calculatorProtocol } from "../mod.ts";
import {
  ask,
  BYE,
  HELP,
  NOT_INTEGERS,
  product,
  sum,
  TO_PRODUCT,
  TO_SUM,
  WELCOME,
} from "./support/calc_replies.ts";
import { withServer } from "./support/socket_harness.ts";

Deno.test("calc: the documented transcript, byte for byte", async () => {
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
      // Only spaces and tabs may surround an item (NO-BREAK SPACE may not).
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

/**
 * Pure unit tests of the protocol logic: the calculator (its reply table,
 * the integer grammar, exact arithmetic, mode isolation) and echo.
 * exact arithmetic, mode isolation).
 */
import assert from "node:assert/strict";
import {
  CalculatorReplies,
  CalculatorSession,
  EchoSession,
  evaluateIntegers,
  type LineSession,
} from "../protocol.ts";

Deno.test("calculator: the reply table, byte for byte", () => {
  const session = new CalculatorSession();
  assert.equal(session.greeting, "<welcome: starting in sum mode>");
  assert.equal(session.reply("sum"), "<switching to sum mode>");
  assert.equal(session.reply("1,2,4"), "Sum of input integers: '7'");
  assert.equal(session.reply("product"), "<switching to product mode>");
  assert.equal(session.reply("1,2,4"), "Product of input integers: '8'");
  assert.equal(
    session.reply("help"),
    "Commands: sum, product, quit, help. Or send integers separated by commas, e.g. 1,2,4",
  );
  assert.equal(
    session.reply("what"),
    "ERROR. Enter only integers separated by commas",
  );
  assert.equal(session.ended, false);
  assert.equal(session.reply("quit"), "connection closed");
  assert.equal(session.ended, true);
});

Deno.test("calculator: commands are exact and case-sensitive", () => {
  const session = new CalculatorSession();
  for (const line of ["Sum", " sum", "PRODUCT", "help!", "quit now", "sum,1"]) {
    assert.equal(session.reply(line), CalculatorReplies.inputError, line);
  }
  assert.equal(session.ended, false);
  assert.equal(session.mode, "sum");
});

Deno.test("calculator: the integer grammar follows Python's int() for ASCII", () => {
  const valid: [string, string][] = [
    ["7", "7"],
    ["1,2,4", "7"],
    [" 1 ,\t2\t, 4 ", "7"],
    ["+5,-3", "2"],
    ["1_000,2", "1002"],
    ["007,0_0", "7"],
    ["-0", "0"],
    ["1_2_3", "123"],
    ["-1,-2", "-3"],
  ];
  for (const [line, sum] of valid) {
    assert.equal(evaluateIntegers(line, "sum"), sum, line);
  }
  const invalid = [
    "",
    ",",
    "1,",
    ",1",
    "1,,2",
    "1 2",
    "0x10",
    "1.5",
    "--1",
    "+-1",
    "_1",
    "1_",
    "1__0",
    "+",
    "- 1",
    "1e3",
    "\u0661", // Arabic-Indic digit one: Python accepts it, the server does not
    "\uff11", // full-width digit one
    "1\r",
    "1\v",
    "one",
    "1;2",
  ];
  for (const line of invalid) {
    assert.equal(
      evaluateIntegers(line, "sum"),
      undefined,
      JSON.stringify(line),
    );
  }
});

Deno.test("calculator: arithmetic is exact at any size", () => {
  assert.equal(
    evaluateIntegers("99999999999,99999999999", "product"),
    "9999999999800000000001",
  );
  assert.equal(
    evaluateIntegers("9007199254740991,1", "sum"),
    "9007199254740992",
  );
  assert.equal(
    evaluateIntegers("9007199254740993,0", "sum"),
    "9007199254740993",
  );
  assert.equal(
    evaluateIntegers("-9007199254740991,-2", "sum"),
    "-9007199254740993",
  );
  assert.equal(
    evaluateIntegers("123456789012345678901234567890,1", "sum"),
    "123456789012345678901234567891",
  );
  assert.equal(evaluateIntegers("3,0,-5", "product"), "0");
  assert.equal(evaluateIntegers("-1,0", "product"), "0");
  assert.equal(evaluateIntegers("-2,3", "product"), "-6");
  assert.equal(
    evaluateIntegers("1000000_000000_000", "sum"),
    "1000000000000000",
  );
  // 2^200 by repeated doubling, compared with BigInt's own answer.
  const twos = Array.from({ length: 200 }, () => "2").join(",");
  assert.equal(evaluateIntegers(twos, "product"), (2n ** 200n).toString());
  const mixed = ["99999999999", "-7", "123456789012345678", "3"];
  const expected = mixed.reduce((p, x) => p * BigInt(x), 1n).toString();
  assert.equal(evaluateIntegers(mixed.join(","), "product"), expected);
  const manyBig = Array.from({ length: 1000 }, (_, i) => `${i + 1}`).join(",");
  let factorial = 1n;
  for (let i = 1n; i <= 1000n; i++) factorial *= i;
  assert.equal(evaluateIntegers(manyBig, "product"), factorial.toString());
});

Deno.test("calculator: the mode belongs to one session", () => {
  const a = new CalculatorSession();
  const b = new CalculatorSession();
  a.reply("product");
  assert.equal(a.reply("2,3"), "Product of input integers: '6'");
  assert.equal(b.reply("2,3"), "Sum of input integers: '5'");
});

Deno.test("echo: no greeting, every line back", () => {
  const session: LineSession = new EchoSession();
  assert.equal(session.greeting, undefined);
  assert.equal(session.reply("  hello"), "  hello");
  assert.equal(session.reply(""), "");
  assert.equal(session.ended, undefined);
});

/**
 * Pure unit tests of the protocol logic: framing (every framing rule and the
 * line limit) and the calculator (its reply table, the integer grammar,
 * exact arithmetic, mode isolation).
 */
import assert from "node:assert/strict";
import {
  CalculatorReplies,
  CalculatorSession,
  EchoSession,
  evaluateIntegers,
  type Frame,
  LINE_TOO_LONG,
  LineDecoder,
  type LineSession,
} from "../protocol.ts";

const utf8 = new TextEncoder();

function bytes(...parts: (string | number[])[]): Uint8Array {
  const chunks = parts.map((p) =>
    typeof p === "string" ? utf8.encode(p) : new Uint8Array(p)
  );
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Feeds `chunks` to a fresh decoder; `eof` also calls finish(). */
function decode(
  chunks: Uint8Array[],
  options: { max?: number; eof?: boolean } = {},
): Frame[] {
  const decoder = new LineDecoder(options.max ?? 65536);
  const frames: Frame[] = [];
  for (const chunk of chunks) decoder.push(chunk, frames);
  if (options.eof) decoder.finish(frames);
  return frames;
}

/** Every way of cutting `input` into two chunks gives `expected`. */
function assertAllSplits(input: Uint8Array, expected: Frame[], max?: number) {
  for (let cut = 0; cut <= input.length; cut++) {
    assert.deepEqual(
      decode([input.subarray(0, cut), input.subarray(cut)], { max }),
      expected,
      `split at ${cut}`,
    );
  }
}

Deno.test("decoder: LF and CRLF end lines; a lone CR is an ordinary character", () => {
  assert.deepEqual(decode([bytes("a\nb\r\nc\rd\n")]), ["a", "b", "c\rd"]);
});

Deno.test("decoder: trailing whitespace (space, tab, CR, VT, FF) is stripped, leading kept", () => {
  assert.deepEqual(decode([bytes("  x \t\r\v\f \r\n\t y\n")]), ["  x", "\t y"]);
  // Only that set: NO-BREAK SPACE is content.
  assert.deepEqual(decode([bytes("a\u00a0\n")]), ["a\u00a0"]);
});

Deno.test("decoder: one byte per chunk frames exactly like one chunk", () => {
  const input = bytes("sum\r\n1,2\n\u00e9\u20ac\u{1f600}\n");
  const oneByOne = decode([...input].map((b) => new Uint8Array([b])));
  assert.deepEqual(oneByOne, ["sum", "1,2", "\u00e9\u20ac\u{1f600}"]);
  assertAllSplits(input, ["sum", "1,2", "\u00e9\u20ac\u{1f600}"]);
});

Deno.test("decoder: invalid UTF-8 becomes U+FFFD and framing goes on", () => {
  assert.deepEqual(
    decode([bytes([0xff, 0x61, 0xe2, 0x82], "\n", [0xc3], "\nok\n")]),
    [
      "\ufffda\ufffd",
      "\ufffd",
      "ok",
    ],
  );
});

Deno.test("decoder: a leading byte-order mark is kept as text", () => {
  assert.deepEqual(decode([bytes("\ufeffx\n")]), ["\ufeffx"]);
});

Deno.test("decoder: hundreds of lines in one chunk keep their order", () => {
  const input = Array.from({ length: 500 }, (_, i) => `${i}\n`).join("");
  const frames = decode([bytes(input)]);
  assert.equal(frames.length, 500);
  assert.deepEqual(frames.slice(0, 3), ["0", "1", "2"]);
  assert.equal(frames[499], "499");
});

Deno.test("decoder: a final unterminated fragment is framed only at EOF", () => {
  assert.deepEqual(decode([bytes("1,2\n3,4")]), ["1,2"]);
  assert.deepEqual(decode([bytes("1,2\n3,4")], { eof: true }), ["1,2", "3,4"]);
  assert.deepEqual(decode([bytes(" \t ")], { eof: true }), [""]);
  assert.deepEqual(decode([bytes("x\n")], { eof: true }), ["x"]);
  assert.deepEqual(decode([], { eof: true }), []);
});

Deno.test("decoder: the limit counts raw bytes without the terminator", () => {
  const max = 8;
  assert.deepEqual(decode([bytes("12345678\n")], { max }), ["12345678"]);
  assert.deepEqual(decode([bytes("12345678\r\n")], { max }), ["12345678"]);
  assert.deepEqual(decode([bytes("123456789\n")], { max }), [LINE_TOO_LONG]);
  // Trailing whitespace counts: it is stripped only after the limit check.
  assert.deepEqual(decode([bytes("1234567  \n")], { max }), [LINE_TOO_LONG]);
  // A lone CR that is not part of the terminator counts too.
  assert.deepEqual(decode([bytes("12345678\rx\n")], { max }), [LINE_TOO_LONG]);
  // Multi-byte characters count by bytes: 3 euro signs are 9 bytes.
  assert.deepEqual(decode([bytes("\u20ac\u20ac\u20ac\n")], { max }), [
    LINE_TOO_LONG,
  ]);
  for (
    const input of ["12345678\r\n", "123456789\n1\n", "ab\n123456789012\ncd\n"]
  ) {
    const whole = decode([bytes(input)], { max });
    assertAllSplits(bytes(input), whole, max);
  }
});

Deno.test("decoder: an over-long line is answered once, in place, and the rest dropped", () => {
  const max = 4;
  const frames = decode([
    bytes("ok\n12"),
    bytes("345"),
    bytes("6789"),
    bytes("0\nnext\n"),
  ], { max });
  assert.deepEqual(frames, ["ok", LINE_TOO_LONG, "next"]);
  // Reported as soon as the limit is crossed, before the line's LF arrives.
  assert.deepEqual(decode([bytes("123456")], { max }), [LINE_TOO_LONG]);
  // At EOF while dropping: nothing more to answer.
  assert.deepEqual(decode([bytes("123456")], { max, eof: true }), [
    LINE_TOO_LONG,
  ]);
  // An unterminated final fragment over the limit is too long at EOF.
  assert.deepEqual(decode([bytes("1234\r")], { max, eof: true }), [
    LINE_TOO_LONG,
  ]);
});

Deno.test("decoder: memory stays bounded while a huge line streams in", () => {
  const decoder = new LineDecoder(1024);
  const frames: Frame[] = [];
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  for (let i = 0; i < 200; i++) decoder.push(chunk, frames); // 12.8 MB without LF
  assert.deepEqual(frames, [LINE_TOO_LONG]);
  assert.equal(decoder.hasPartialLine, false);
  decoder.push(bytes("\nsum\n"), frames);
  assert.deepEqual(frames, [LINE_TOO_LONG, "sum"]);
});

Deno.test("decoder: hasPartialLine tells whether a line is in progress", () => {
  const decoder = new LineDecoder(100);
  const frames: Frame[] = [];
  assert.equal(decoder.hasPartialLine, false);
  decoder.push(bytes("1,"), frames);
  assert.equal(decoder.hasPartialLine, true);
  decoder.push(bytes("2\n"), frames);
  assert.equal(decoder.hasPartialLine, false);
  assert.deepEqual(frames, ["1,2"]);
});

Deno.test("decoder: rejects a limit below one byte", () => {
  assert.throws(() => new LineDecoder(0), RangeError);
});

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

/** The framing rules written as plainly as possible, for comparison. */
function referenceFrames(
  input: Uint8Array,
  max: number,
  eof: boolean,
): Frame[] {
  const frames: Frame[] = [];
  let start = 0;
  const decodeLine = (raw: Uint8Array): Frame =>
    raw.length > max ? LINE_TOO_LONG : new TextDecoder("utf-8", {
      ignoreBOM: true,
    }).decode(raw).replace(/[ \t\r\v\f]+$/, "");
  for (let i = 0; i < input.length; i++) {
    if (input[i] !== 0x0a) continue;
    const end = i > start && input[i - 1] === 0x0d ? i - 1 : i;
    frames.push(decodeLine(input.subarray(start, end)));
    start = i + 1;
  }
  const rest = input.subarray(start);
  if (eof && rest.length > 0) frames.push(decodeLine(rest));
  // Without EOF an unfinished line is answered as soon as it is certainly
  // too long: over the limit by more than a possible CR of a CRLF.
  const certainlyTooLong = rest.length > max + 1 ||
    (rest.length === max + 1 && rest[max] !== 0x0d);
  if (!eof && certainlyTooLong) frames.push(LINE_TOO_LONG);
  return frames;
}

Deno.test("decoder: random bytes in random chunks frame like the plain reference", () => {
  let seed = 20261126;
  const random = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const alphabet = [
    0x0a,
    0x0d,
    0x20,
    0x09,
    0x0b,
    0x31,
    0x2c,
    0x61,
    0xc3,
    0xa9,
    0xe2,
    0x82,
    0xac,
    0xff,
    0x00,
  ];
  for (let round = 0; round < 400; round++) {
    const max = 1 + Math.floor(random() * 12);
    const input = new Uint8Array(Math.floor(random() * 80));
    for (let i = 0; i < input.length; i++) {
      input[i] = alphabet[Math.floor(random() * alphabet.length)];
    }
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < input.length;) {
      const size = 1 + Math.floor(random() * 9);
      chunks.push(input.subarray(at, at + size));
      at += size;
    }
    const eof = random() < 0.5;
    assert.deepEqual(
      decode(chunks, { max, eof }),
      referenceFrames(input, max, eof),
      `round ${round}: max ${max}, eof ${eof}, input ${
        JSON.stringify([...input])
      }`,
    );
  }
});

/**
 * Pure unit tests of the framer: every line-framing rule and the limit,
 * custom terminators, counted (raw) frames, and the pull contract: the
 * consumer may stop pulling at any frame and the decoder keeps what was not
 * framed, without holding on to the lent read buffer.
 */
import assert from "node:assert/strict";
import {
  type Frame,
  FrameEncoder,
  type FramingOptions,
  LINE_TOO_LONG,
} from "../src/framing.ts";
import { FrameDecoder } from "../src/frame_decoder.ts";
import { bytes } from "./support/socket_harness.ts";

/**
 * Feeds `chunks` through one reused read buffer, as a server does, and
 * scribbles over it after every release: a frame that still pointed into
 * the lent bytes would come out corrupted. `stopAfter` pulls at most that
 * many frames per read (the consumer stopping early); `eof` ends the stream.
 */
function decode(
  chunks: Uint8Array[],
  options: FramingOptions & {
    max?: number;
    eof?: boolean;
    stopAfter?: () => number;
  } = {},
): Frame[] {
  const decoder = new FrameDecoder({
    maxFrameBytes: options.max ?? options.maxFrameBytes ?? 65536,
    terminator: options.terminator,
  });
  const frames: Frame[] = [];
  const readBuffer = new Uint8Array(64 * 1024);
  const pull = (limit: number) => {
    for (let n = 0; n < limit; n++) {
      const frame = decoder.next();
      if (frame === undefined) return;
      frames.push(frame instanceof Uint8Array ? frame.slice() : frame);
    }
  };
  for (const chunk of chunks) {
    // A consumer that stopped early finishes what it holds before reading on.
    pull(Infinity);
    readBuffer.set(chunk);
    decoder.push(readBuffer.subarray(0, chunk.length));
    pull(options.stopAfter?.() ?? Infinity);
    decoder.release();
    readBuffer.fill(0x55);
  }
  pull(Infinity);
  if (options.eof) {
    decoder.end();
    pull(Infinity);
  }
  return frames;
}

/** Every way of cutting `input` into two chunks gives `expected`. */
function assertAllSplits(
  input: Uint8Array,
  expected: Frame[],
  options: FramingOptions & { max?: number } = {},
) {
  for (let cut = 0; cut <= input.length; cut++) {
    assert.deepEqual(
      decode([input.subarray(0, cut), input.subarray(cut)], options),
      expected,
      `split at ${cut}`,
    );
  }
}

Deno.test("framing: LF and CRLF end lines; a lone CR is an ordinary character", () => {
  assert.deepEqual(decode([bytes("a\nb\r\nc\rd\n")]), ["a", "b", "c\rd"]);
});

Deno.test("framing: trailing whitespace (space, tab, CR, VT, FF) is stripped, leading kept", () => {
  assert.deepEqual(decode([bytes("  x \t\r\v\f \r\n\t y\n")]), ["  x", "\t y"]);
  // Only that set: NO-BREAK SPACE is content.
  assert.deepEqual(decode([bytes("a\u00a0\n")]), ["a\u00a0"]);
});

Deno.test("framing: one byte per chunk frames exactly like one chunk", () => {
  const input = bytes("sum\r\n1,2\n\u00e9\u20ac\u{1f600}\n");
  const oneByOne = decode([...input].map((b) => new Uint8Array([b])));
  assert.deepEqual(oneByOne, ["sum", "1,2", "\u00e9\u20ac\u{1f600}"]);
  assertAllSplits(input, ["sum", "1,2", "\u00e9\u20ac\u{1f600}"]);
});

Deno.test("framing: invalid UTF-8 becomes U+FFFD and framing goes on", () => {
  assert.deepEqual(
    decode([bytes([0xff, 0x61, 0xe2, 0x82], "\n", [0xc3], "\nok\n")]),
    ["\ufffda\ufffd", "\ufffd", "ok"],
  );
});

Deno.test("framing: a leading byte-order mark is kept as text", () => {
  assert.deepEqual(decode([bytes("\ufeffx\n")]), ["\ufeffx"]);
});

Deno.test("framing: hundreds of lines in one chunk keep their order", () => {
  const input = Array.from({ length: 500 }, (_, i) => `${i}\n`).join("");
  const frames = decode([bytes(input)]);
  assert.equal(frames.length, 500);
  assert.deepEqual(frames.slice(0, 3), ["0", "1", "2"]);
  assert.equal(frames[499], "499");
});

Deno.test("framing: a final unterminated fragment is a frame only at the end of the stream", () => {
  assert.deepEqual(decode([bytes("1,2\n3,4")]), ["1,2"]);
  assert.deepEqual(decode([bytes("1,2\n3,4")], { eof: true }), ["1,2", "3,4"]);
  assert.deepEqual(decode([bytes(" \t ")], { eof: true }), [""]);
  assert.deepEqual(decode([bytes("x\n")], { eof: true }), ["x"]);
  assert.deepEqual(decode([], { eof: true }), []);
});

Deno.test("framing: the limit counts raw bytes without the terminator", () => {
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
    assertAllSplits(bytes(input), whole, { max });
  }
});

Deno.test("framing: an over-long line is answered once, in place, and the rest dropped", () => {
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
  // At the end of the stream while dropping: nothing more to answer.
  assert.deepEqual(decode([bytes("123456")], { max, eof: true }), [
    LINE_TOO_LONG,
  ]);
  // An unterminated final fragment over the limit is too long at the end.
  assert.deepEqual(decode([bytes("1234\r")], { max, eof: true }), [
    LINE_TOO_LONG,
  ]);
});

Deno.test("framing: memory stays bounded while a huge line streams in", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  const frames: Frame[] = [];
  for (let i = 0; i < 200; i++) { // 12.8 MB without LF
    decoder.push(chunk);
    for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
      frames.push(f);
    }
    decoder.release();
    assert.ok(decoder.bufferedBytes <= 1025, `${decoder.bufferedBytes} held`);
  }
  assert.deepEqual(frames, [LINE_TOO_LONG]);
  assert.equal(decoder.inFrame, true); // still dropping the rest
  decoder.push(bytes("\nsum\n"));
  assert.equal(decoder.next(), "sum");
  assert.equal(decoder.inFrame, false);
});

Deno.test("framing: inFrame tells whether a frame has begun", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 100 });
  assert.equal(decoder.inFrame, false);
  decoder.push(bytes("1,"));
  assert.equal(decoder.next(), undefined);
  assert.equal(decoder.inFrame, true);
  decoder.release();
  decoder.push(bytes("2\n"));
  assert.equal(decoder.next(), "1,2");
  assert.equal(decoder.next(), undefined);
  assert.equal(decoder.inFrame, false);
});

Deno.test("framing: a consumer that stops pulling keeps only the rest of one read", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 65536 });
  const read = new Uint8Array(64 * 1024);
  read.fill(0x0a); // 65,536 empty lines
  decoder.push(read);
  assert.equal(decoder.next(), "");
  decoder.release();
  read.fill(0x55); // the read buffer is reused: nothing may point into it
  assert.equal(decoder.bufferedBytes, 65535);
  let lines = 1;
  while (decoder.next() !== undefined) lines++;
  assert.equal(lines, 65536);
  assert.equal(decoder.bufferedBytes, 0);
});

Deno.test("framing: rejects a limit below one byte and an empty terminator", () => {
  assert.throws(() => new FrameDecoder({ maxFrameBytes: 0 }), RangeError);
  assert.throws(() => new FrameDecoder({ terminator: "" }), RangeError);
  assert.throws(() => new FrameEncoder({ terminator: "" }), RangeError);
});

Deno.test("framing: a custom terminator of several bytes, split anywhere", () => {
  const terminator = "\r<--EOM-->\r";
  const input = bytes(
    `head one\r\n tail${terminator}${terminator}ack 2${terminator}x`,
  );
  const expected = ["head one\r\n tail", "", "ack 2"];
  assert.deepEqual(decode([input], { terminator }), expected);
  assertAllSplits(input, expected, { terminator });
  assert.deepEqual(
    decode([...input].map((b) => new Uint8Array([b])), { terminator }),
    expected,
  );
  // At the end of the stream the fragment is a frame, as with lines.
  assert.deepEqual(decode([input], { terminator, eof: true }), [
    ...expected,
    "x",
  ]);
});

Deno.test("framing: a custom terminator frame over the limit is answered once and dropped", () => {
  const terminator = "<>";
  const max = 4;
  const input = bytes("ok<>123456789<<>next<>");
  const expected: Frame[] = ["ok", LINE_TOO_LONG, "next"];
  assert.deepEqual(decode([input], { terminator, max }), expected);
  assertAllSplits(input, expected, { terminator, max });
  // Exactly the limit, with the terminator split across reads.
  assertAllSplits(bytes("1234<>"), ["1234"], { terminator, max });
});

Deno.test("framing: a long frame with a custom terminator is searched once, not again at every read", () => {
  // 4 MiB in 1 KiB reads: searching the whole frame again at every read
  // would go over 8 GiB; once is 4 MiB.
  const terminator = "\r<--EOM-->\r";
  const frameBytes = 4 * 1024 * 1024;
  const decoder = new FrameDecoder({ terminator, maxFrameBytes: frameBytes });
  const read = new Uint8Array(1024).fill(0x61);
  const started = performance.now();
  for (let sent = 0; sent < frameBytes; sent += read.length) {
    decoder.push(read);
    assert.equal(decoder.next(), undefined);
    decoder.release();
  }
  decoder.push(bytes("\r<--EOM", "-->\r"));
  const frame = decoder.next();
  const elapsed = performance.now() - started;
  assert.equal(typeof frame === "string" && frame.length, frameBytes);
  assert.ok(elapsed < 2000, `framing 4 MiB took ${Math.round(elapsed)} ms`);
});

Deno.test("framing: readBytes takes the next N bytes raw, then lines again", () => {
  const input = bytes("set 5\r\n", [0x0a, 0xff, 0x0d, 0x00, 0x41], "get\n");
  const run = (chunks: Uint8Array[]) => {
    const decoder = new FrameDecoder({ maxFrameBytes: 16 });
    const out: Frame[] = [];
    for (const chunk of chunks) {
      decoder.push(chunk);
      for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
        out.push(f instanceof Uint8Array ? Array.from(f) as never : f);
        if (f === "set 5") decoder.readBytes(5);
      }
      decoder.release();
    }
    return out;
  };
  const expected = ["set 5", [0x0a, 0xff, 0x0d, 0x00, 0x41], "get"];
  for (let cut = 0; cut <= input.length; cut++) {
    assert.deepEqual(
      run([input.subarray(0, cut), input.subarray(cut)]),
      expected,
      `split at ${cut}`,
    );
  }
  assert.throws(() => new FrameDecoder({ maxFrameBytes: 4 }).readBytes(5));
});

Deno.test("framing: the encoder ends lines and refuses what would split them", () => {
  const encoder = new FrameEncoder();
  assert.equal(encoder.line("a\rb"), "a\rb\r\n"); // a lone CR is content
  assert.throws(() => encoder.line("a\nb"), /contains LF/);
  assert.throws(() => encoder.line("a\rb", { refuseCr: true }), /CR or LF/);
  assert.throws(
    () => encoder.line(null as never),
    /null: a line must be a string/,
  );
  assert.equal(new FrameEncoder({ lineEnding: "\n" }).line("x"), "x\n");
  const eom = new FrameEncoder({ terminator: "<>" });
  assert.throws(() => eom.line("a<>b"), /terminator/);
  assert.equal(eom.line("a\nb"), "a\nb<>");
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
  // Without the end an unfinished line is answered as soon as it is
  // certainly too long: over the limit by more than a possible CR of a CRLF.
  const certainlyTooLong = rest.length > max + 1 ||
    (rest.length === max + 1 && rest[max] !== 0x0d);
  if (!eof && certainlyTooLong) frames.push(LINE_TOO_LONG);
  return frames;
}

/** The same for a custom terminator: frames are the exact text between terminators. */
function referenceTerminated(
  input: Uint8Array,
  terminator: Uint8Array,
  max: number,
  eof: boolean,
): Frame[] {
  const text = new TextDecoder("latin1").decode(input);
  const term = new TextDecoder("latin1").decode(terminator);
  const parts = text.split(term);
  const rest = parts.pop()!;
  const asFrame = (part: string): Frame => {
    const raw = Uint8Array.from(part, (c) => c.charCodeAt(0));
    return raw.length > max
      ? LINE_TOO_LONG
      : new TextDecoder("utf-8", { ignoreBOM: true }).decode(raw);
  };
  const frames = parts.map(asFrame);
  if (eof && rest.length > 0) frames.push(asFrame(rest));
  if (!eof && rest.length >= max + terminator.length) {
    frames.push(LINE_TOO_LONG);
  }
  return frames;
}

function randomSource(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
}

function randomChunks(input: Uint8Array, random: () => number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < input.length;) {
    const size = 1 + Math.floor(random() * 9);
    chunks.push(input.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

Deno.test("framing: random bytes in random chunks, pulled with random stops, frame like the plain reference", () => {
  const random = randomSource(20261126);
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
  for (let round = 0; round < 600; round++) {
    const max = 1 + Math.floor(random() * 12);
    const input = new Uint8Array(Math.floor(random() * 80));
    for (let i = 0; i < input.length; i++) {
      input[i] = alphabet[Math.floor(random() * alphabet.length)];
    }
    const eof = random() < 0.5;
    const stops = random() < 0.5;
    assert.deepEqual(
      decode(randomChunks(input, random), {
        max,
        eof,
        stopAfter: stops ? () => Math.floor(random() * 3) : undefined,
      }),
      referenceFrames(input, max, eof),
      `round ${round}: max ${max}, eof ${eof}, input ${
        JSON.stringify([...input])
      }`,
    );
  }
});

Deno.test("framing: random bytes with a custom terminator frame like the plain reference", () => {
  const random = randomSource(7);
  const terminators = [
    bytes("<>"),
    bytes("\r<--EOM-->\r"),
    bytes("aa"),
    bytes([0xff]),
  ];
  const alphabet = [0x3c, 0x3e, 0x0d, 0x61, 0x2d, 0x45, 0xff, 0x0a];
  for (let round = 0; round < 600; round++) {
    const terminator = terminators[round % terminators.length];
    const max = 1 + Math.floor(random() * 10);
    const input = new Uint8Array(Math.floor(random() * 60));
    for (let i = 0; i < input.length; i++) {
      input[i] = alphabet[Math.floor(random() * alphabet.length)];
    }
    const eof = random() < 0.5;
    const got = decode(randomChunks(input, random), {
      terminator,
      max,
      eof,
      stopAfter: random() < 0.5 ? () => Math.floor(random() * 3) : undefined,
    });
    assert.deepEqual(
      got,
      referenceTerminated(input, terminator, max, eof),
      `round ${round}: terminator ${[
        ...terminator,
      ]}, max ${max}, eof ${eof}, input ${JSON.stringify([...input])}`,
    );
  }
});

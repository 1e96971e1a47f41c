/**
 * Pure unit tests of the PROXY header parser: the protocol's own examples
 * (v1 text, v2 binary) and worst cases, every early rejection, and a seeded
 * randomized round trip that feeds headers the way a connection reads them
 * (accumulated random-size chunks).
 */
import assert from "node:assert/strict";
import {
  parseProxyHeader,
  PROXY_HEADER_MAX_BYTES,
  type ProxyHeaderResult,
} from "../src/proxy_header.ts";
import { bytes } from "./support/socket_harness.ts";
import { prng } from "../bench/traffic.ts";

/** Byte by byte, as the protocol defines it. */
const SIGNATURE = bytes("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A");
const LOCAL = 0x20;
const PROXY = 0x21;
const TCP4 = 0x11;
const TCP6 = 0x21;
const UNIX_STREAM = 0x31;
const UNSPEC = 0x00;
const INCOMPLETE: ProxyHeaderResult = { status: "incomplete" };

type Part = string | number[] | Uint8Array;
const parse = (...parts: Part[]) => parseProxyHeader(bytes(...parts));

function done(
  version: 1 | 2,
  length: number,
  hostname?: string,
  port = 0,
): ProxyHeaderResult {
  const source = hostname === undefined ? undefined : { hostname, port };
  return { status: "complete", length, source, version, local: false };
}

/** A complete v2 LOCAL header: a health check, no address. */
function localDone(length: number): ProxyHeaderResult {
  return {
    status: "complete",
    length,
    source: undefined,
    version: 2,
    local: true,
  };
}

/** A v2 header: signature, the two command bytes, `length` (default: the body's), the body. */
function v2(command: number, family: number, body: Part = [], length?: number) {
  const rest = bytes(body);
  length ??= rest.length;
  return bytes(SIGNATURE, [command, family, length >> 8, length & 0xff], rest);
}

/** One TLV: type, big-endian length, value. */
function tlv(type: number, value: Part): Uint8Array {
  const v = bytes(value);
  return bytes([type, v.length >> 8, v.length & 0xff], v);
}

/** The 12-byte AF_INET block. */
function inet(src: number[], dst: number[], sport: number, dport: number) {
  return [...src, ...dst, sport >> 8, sport & 0xff, dport >> 8, dport & 0xff];
}

function assertInvalid(input: Part, reason?: RegExp) {
  const result = parse(input);
  assert.equal(result.status, "invalid", JSON.stringify(input));
  if (result.status !== "invalid") return;
  assert.match(result.reason, /^Cannot read PROXY (v1 |v2 )?header: [^\n]+$/);
  if (reason) assert.match(result.reason, reason);
}

/** Every proper prefix of `header` is incomplete; it alone or with a request after it gives `expected`. */
function assertPrefixes(header: Part, expected: ProxyHeaderResult) {
  const input = bytes(header);
  for (let cut = 0; cut < input.length; cut++) {
    assert.deepEqual(parse(input.subarray(0, cut)), INCOMPLETE, `cut ${cut}`);
  }
  assert.deepEqual(parse(input), expected);
  assert.deepEqual(parse(input, "GET / HTTP/1.1\r\n"), expected);
}

Deno.test("proxy header: empty input is incomplete; a plain client is refused at once", () => {
  assert.deepEqual(parse(), INCOMPLETE);
  assertInvalid("1,2\n", /neither the v1 nor the v2 signature/);
  assertInvalid("s");
  assertInvalid([0x16, 0x03, 0x01]); // a TLS ClientHello
  assertInvalid("PROXZ", /start with PROXY/);
  assertInvalid("proxy ");
  assertInvalid("PROXY\t");
  assertInvalid("\r\n\r\n\0\r\nQUIU", /wrong signature/);
  assert.equal(PROXY_HEADER_MAX_BYTES, 16 + 65535);
});

Deno.test("proxy v1: the TCP4 example, with the request that follows", () => {
  const header = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  assertPrefixes(header, done(1, header.length, "192.168.0.1", 56324));
  assert.deepEqual(
    parse("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
    done(1, 44, "0.0.0.0", 0),
  );
});

Deno.test("proxy v1: TCP6, its worst case, and one canonical spelling per address", () => {
  const ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const worst = `PROXY TCP6 ${ffff} ${ffff} 65535 65535\r\n`;
  assert.equal(worst.length, 104);
  assertPrefixes(worst, done(1, 104, ffff, 65535));
  for (
    const source of [
      "2001:db8::1",
      "2001:DB8::1",
      "2001:0db8:0000:0000:0000:0000:0000:0001",
      "2001:db8:0:0::1",
      "2001:db8::0.0.0.1",
    ]
  ) {
    const line = `PROXY TCP6 ${source} ::1 8080 443\r\n`;
    assert.deepEqual(parse(line), done(1, line.length, "2001:db8::1", 8080));
  }
  const mapped = "PROXY TCP6 ::FFFF:192.0.2.9 ::1 1 2\r\n";
  assert.deepEqual(parse(mapped), done(1, 37, "::ffff:192.0.2.9", 1));
});

Deno.test("proxy v1: UNKNOWN keeps the socket's address and ignores the rest of the line", () => {
  assertPrefixes("PROXY UNKNOWN\r\n", done(1, 15));
  const ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const worst = `PROXY UNKNOWN ${ffff} ${ffff} 65535 65535\r\n`;
  assert.equal(worst.length, 107);
  assertPrefixes(worst, done(1, 107));
  assert.deepEqual(parse("PROXY UNKNOWN what\rever\r\nsum\n"), done(1, 25));
});

Deno.test("proxy v1: 107 bytes with CRLF is the most; no CRLF within 107 bytes is invalid", () => {
  const line = (length: number) =>
    `PROXY UNKNOWN ${"x".repeat(length - 16)}\r\n`;
  assert.deepEqual(parse(line(107)), done(1, 107));
  const tooLong = bytes(line(108));
  assert.deepEqual(parse(tooLong.subarray(0, 106)), INCOMPLETE);
  assertInvalid(tooLong.subarray(0, 107), /no CRLF within 107 bytes/);
  assertInvalid(tooLong, /no CRLF within 107 bytes/);
  assertInvalid(bytes("PROXY TCP4 ", "1".repeat(200)));
});

Deno.test("proxy v1: every malformed line is invalid, with the field it names", () => {
  const a = "PROXY TCP4 1.2.3.4 5.6.7.8";
  const cases: [string, RegExp][] = [
    [`${a} 1 2\n`, /LF without CR/],
    ["PROXY UNKNOWN\n", /LF without CR/],
    [`${a} http 443\r\n`, /bad source port: "http"/],
    [`${a} 1 65536\r\n`, /bad destination port: "65536"/],
    [`${a} 65536 1\r\n`, /bad source port: "65536"/],
    [`${a} 080 1\r\n`, /bad source port: "080"/],
    [`${a} -1 1\r\n`, /bad source port/],
    [`${a} +1 1\r\n`, /bad source port/],
    [`${a} 1 \r\n`, /bad destination port: ""/],
    [`${a} 1 2\r\r\n`, /bad destination port: "2\\r"/],
    ["PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n", /bad source address: "010.0.0.1"/],
    ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", /bad source address/],
    ["PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", /bad source address/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8. 1 2\r\n", /bad destination address/],
    ["PROXY TCP4 ::1 ::1 1 2\r\n", /bad source address: "::1"/],
    ["PROXY TCP4 ::ffff:1.2.3.4 1.2.3.4 1 2\r\n", /bad source address/],
    ["PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", /bad source address: "1.2.3.4"/],
    ["PROXY TCP6 ::1 1.2.3.4 1 2\r\n", /bad destination address/],
    ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", /bad source address/],
    ["PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n", /bad source address/],
    ["PROXY TCP6 [::1] ::1 1 2\r\n", /bad source address/],
    ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", /bad protocol: "TCP5"/],
    ["PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", /bad protocol/],
    ["PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /bad protocol: ""/],
    ["PROXY \r\n", /bad protocol: ""/],
    ["PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", /bad source address: ""/],
    ["PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", /bad source address: "1.2.3.4\\t/],
    [`${a} 1 2 \r\n`, /more than five fields/],
    [`${a} 1 2 3\r\n`, /more than five fields/],
    [`${a} 1\r\n`, /fewer than five fields/],
    ["PROXY TCP4\r\n", /fewer than five fields/],
  ];
  for (const [line, reason] of cases) assertInvalid(line, reason);
});

Deno.test("proxy v1: a line is refused as soon as a field it already holds is wrong", () => {
  for (
    const partial of [
      "PROXY T",
      "PROXY UNK",
      "PROXY TCP4 1.2.3.4 ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
      "PROXY TCP6 2001:db8:",
      "PROXY UNKNOWN anything at all\r",
    ]
  ) {
    assert.deepEqual(parse(partial), INCOMPLETE, partial);
  }
  for (
    const partial of [
      "PROXY X",
      "PROXY TCP6X",
      "PROXY TCP4 1.2.3.400 ",
      "PROXY TCP4 1.2.3.4 a",
      "PROXY TCP4 1.2.3.4 ::1",
      "PROXY TCP6 2001:db8::g",
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
    ]
  ) {
    assertInvalid(partial);
  }
});

Deno.test("proxy v2: the signature is \\r\\n\\r\\n\\0\\r\\nQUIT\\n; any other byte there is refused at once", () => {
  assert.deepEqual(SIGNATURE, bytes("\r\n\r\n\0\r\nQUIT\n"));
  const header = v2(LOCAL, UNSPEC);
  for (let i = 0; i < SIGNATURE.length; i++) {
    const wrong = header.slice();
    wrong[i] ^= i === 0 ? 0x01 : 0x20;
    assert.deepEqual(parse(wrong.subarray(0, i)), INCOMPLETE);
    assertInvalid(wrong.subarray(0, i + 1), i === 0 ? /neither/ : /signature/);
    assertInvalid(wrong);
  }
});

Deno.test("proxy v2: LOCAL keeps the socket's address and skips whatever block it carries", () => {
  assertPrefixes(v2(LOCAL, UNSPEC), localDone(16));
  const block = bytes(inet([10, 0, 0, 1], [10, 0, 0, 2], 1, 2), tlv(4, [0]));
  assertPrefixes(v2(LOCAL, TCP4, block), localDone(16 + 16));
  // A receiver ignores a LOCAL header's family byte and address block,
  // whatever they say: even a block shorter than its family's.
  assert.deepEqual(parse(v2(LOCAL, TCP6, [1, 2])), localDone(18));
  assert.deepEqual(parse(v2(LOCAL, 0xff)), localDone(16));
});

Deno.test("proxy v2: PROXY over AF_INET and AF_INET6 names the source", () => {
  const four = inet([192, 0, 2, 1], [198, 51, 100, 7], 56324, 443);
  assertPrefixes(v2(PROXY, TCP4, four), done(2, 28, "192.0.2.1", 56324));
  const six = new Uint8Array(36);
  six.set([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
  six[31] = 1; // destination ::1
  six.set([0xff, 0xfe, 0x01, 0xbb], 32);
  assertPrefixes(v2(PROXY, TCP6, six), done(2, 52, "2001:db8::1:0:0:1", 65534));
  const mapped = new Uint8Array(36);
  mapped.set([0xff, 0xff, 203, 0, 113, 5], 10);
  // AF_INET6 with an UNSPEC transport
  assert.deepEqual(
    parse(v2(PROXY, 0x20, mapped)),
    done(2, 52, "::ffff:203.0.113.5"),
  );
});

Deno.test("proxy v2: PROXY over AF_UNIX or AF_UNSPEC keeps the socket's address", () => {
  const unix = new Uint8Array(216).fill(0x61);
  assertPrefixes(v2(PROXY, UNIX_STREAM, unix), done(2, 232));
  assertPrefixes(v2(PROXY, UNSPEC), done(2, 16));
  assert.deepEqual(parse(v2(PROXY, UNSPEC, [1, 2, 3])), done(2, 19));
});

Deno.test("proxy v2: a length shorter than the address block is refused at byte 16", () => {
  for (const [family, size] of [[TCP4, 12], [TCP6, 36], [UNIX_STREAM, 216]]) {
    const short = v2(PROXY, family, new Uint8Array(size), size - 1);
    assert.deepEqual(parse(short.subarray(0, 15)), INCOMPLETE);
    const reason = `length ${size - 1} is shorter than the ${size}-byte`;
    assertInvalid(short.subarray(0, 16), new RegExp(reason));
    assertInvalid(v2(PROXY, family, [], 0));
    const exact = v2(PROXY, family, new Uint8Array(size));
    assert.equal(parse(exact).status, "complete");
  }
});

Deno.test("proxy v2: TLVs after the address block are skipped; length covers them", () => {
  const block = bytes(
    inet([192, 0, 2, 44], [192, 0, 2, 1], 40000, 443),
    tlv(0x01, "h2"), // PP2_TYPE_ALPN
    tlv(0x02, "example.com"), // PP2_TYPE_AUTHORITY
    tlv(0x04, new Uint8Array(300)), // PP2_TYPE_NOOP
  );
  const header = v2(PROXY, TCP4, block);
  assertPrefixes(header, done(2, 16 + block.length, "192.0.2.44", 40000));
  const input = bytes(header, "sum\r\n");
  const result = parse(input);
  assert(result.status === "complete");
  assert.equal(
    new TextDecoder().decode(input.subarray(result.length)),
    "sum\r\n",
  );
});

Deno.test("proxy v2: a bad version, command, family or transport is refused at its byte", () => {
  // [byte 13, byte 14, the reason, how many bytes it takes to decide]
  const cases: [number, number, RegExp, number][] = [
    [0x11, TCP4, /version 1/, 13],
    [0x31, TCP4, /version 3/, 13],
    [0x01, TCP4, /version 0/, 13],
    [0x22, TCP4, /command 2/, 13],
    [0x2f, TCP4, /command 15/, 13],
    [PROXY, 0x12, /datagram/, 14], // UDP over IPv4
    [PROXY, 0x22, /datagram/, 14], // UDP over IPv6
    [PROXY, 0x13, /transport protocol 3/, 14],
    [PROXY, 0x41, /address family 4/, 14],
    [PROXY, 0xf1, /address family 15/, 14],
  ];
  for (const [command, family, reason, decidedAt] of cases) {
    const header = v2(command, family, new Uint8Array(36));
    assert.deepEqual(parse(header.subarray(0, decidedAt - 1)), INCOMPLETE);
    assertInvalid(header.subarray(0, decidedAt), reason);
    assertInvalid(header, reason);
  }
});

// Randomized: valid headers of every kind, then malformed ones, each fed the
// way a connection reads (the whole buffer so far, after every random-size read).

type Random = () => number;
const int = (random: Random, n: number) => Math.floor(random() * n);
const randomBytes = (random: Random, n: number) =>
  Array.from({ length: n }, () => int(random, 256));

/**
 * The canonical text, worked out independently of the parser: by the URL
 * parser, except that the canonical form (and Deno's own peer addresses)
 * write an IPv4-mapped address with its dotted quad, where a URL keeps hex.
 */
function canonicalIPv6(address: Uint8Array): string {
  const mapped = address.subarray(0, 10).every((b) => b === 0) &&
    address[10] === 0xff && address[11] === 0xff;
  if (mapped) return `::ffff:${address.subarray(12).join(".")}`;
  const groups = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push(((address[i] << 8) | address[i + 1]).toString(16));
  }
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

/** An IPv6 address with many zero groups (so `::` has runs to choose from), now and then IPv4-mapped. */
function randomIPv6(random: Random): Uint8Array {
  const address = new Uint8Array(16);
  if (random() < 0.1) {
    address.set([0xff, 0xff, ...randomBytes(random, 4)], 10);
    return address;
  }
  for (let i = 0; i < 16; i += 2) {
    const r = random();
    const group = r < 0.45 ? 0 : int(random, r < 0.6 ? 16 : 0x10000);
    address.set([group >> 8, group & 0xff], i);
  }
  return address;
}

/**
 * Any valid spelling of `address`: groups padded with zeros and in either
 * case at random, any one run of zero groups as `::` or none, sometimes the
 * last 32 bits as a dotted quad.
 */
function spellIPv6(address: Uint8Array, random: Random): string {
  const hexCount = random() < 0.25 ? 6 : 8;
  const groups: number[] = [];
  const pieces: string[] = [];
  for (let i = 0; i < hexCount; i++) {
    const group = (address[2 * i] << 8) | address[2 * i + 1];
    const hex = group.toString(16);
    const padded = "0".repeat(int(random, 5 - hex.length)) + hex;
    groups.push(group);
    pieces.push(random() < 0.5 ? padded.toUpperCase() : padded);
  }
  if (hexCount === 6) pieces.push(address.subarray(12).join("."));
  const zeros = groups.flatMap((g, i) => g === 0 ? [i] : []);
  if (zeros.length === 0 || random() < 0.3) return pieces.join(":");
  const start = zeros[int(random, zeros.length)];
  let end = start + 1;
  while (end < hexCount && groups[end] === 0 && random() < 0.8) end++;
  return `${pieces.slice(0, start).join(":")}::${pieces.slice(end).join(":")}`;
}

/** A valid v1 header and the result it must give. */
function randomV1(random: Random): [Uint8Array, ProxyHeaderResult] {
  const kind = int(random, 3);
  if (kind === 2) {
    // UNKNOWN and any bytes but LF up to the CRLF, within 107 bytes.
    const rest = randomBytes(random, int(random, 92)).map((b) =>
      b === 0x0a ? 0 : b
    );
    const header = bytes("PROXY UNKNOWN", rest, "\r\n");
    return [header, done(1, header.length)];
  }
  const [sport, dport] = [int(random, 0x10000), int(random, 0x10000)];
  let src: string, dst: string, hostname: string;
  if (kind === 0) {
    [src, dst] = [
      randomBytes(random, 4).join("."),
      randomBytes(random, 4).join("."),
    ];
    hostname = src;
  } else {
    const [source, destination] = [randomIPv6(random), randomIPv6(random)];
    [src, dst] = [spellIPv6(source, random), spellIPv6(destination, random)];
    hostname = canonicalIPv6(source);
    // Padded spellings can outgrow the 107-byte line; canonical ones cannot.
    if (src.length + dst.length > 78) {
      [src, dst] = [hostname, canonicalIPv6(destination)];
    }
  }
  const protocol = kind === 0 ? "TCP4" : "TCP6";
  const header = bytes(`PROXY ${protocol} ${src} ${dst} ${sport} ${dport}\r\n`);
  return [header, done(1, header.length, hostname, sport)];
}

/** A valid v2 header (any command, family and TLVs) and the result it must give. */
function randomV2(random: Random): [Uint8Array, ProxyHeaderResult] {
  const family = int(random, 4);
  const block = new Uint8Array(randomBytes(random, [0, 12, 36, 216][family]));
  if (family === 2) block.set(randomIPv6(random));
  const tlvs = Array.from({ length: int(random, 4) }, () => {
    const size = int(random, random() < 0.1 ? 3000 : 40);
    return tlv(int(random, 256), randomBytes(random, size));
  });
  const header = (command: number, familyByte: number) =>
    v2(command, familyByte, bytes(block, ...tlvs));
  // LOCAL ignores the family byte, so any value goes there.
  if (random() < 0.2) {
    const local = header(LOCAL, int(random, 256));
    return [local, localDone(local.length)];
  }
  const proxy = header(PROXY, (family << 4) | int(random, 2));
  const port = (at: number) => (block[at] << 8) | block[at + 1];
  const result = family === 1
    ? done(2, proxy.length, block.subarray(0, 4).join("."), port(8))
    : family === 2
    ? done(2, proxy.length, canonicalIPv6(block.subarray(0, 16)), port(32))
    : done(2, proxy.length);
  return [proxy, result];
}

/**
 * Feeds `input` the way a connection reads it: after each random-size read,
 * everything received so far. Returns each result with the bytes received.
 */
function reads(input: Uint8Array, random: Random) {
  const out: [number, ProxyHeaderResult][] = [];
  const most = random() < 0.5 ? 8 : 600;
  for (let received = 0; received < input.length;) {
    received = Math.min(input.length, received + 1 + int(random, most));
    out.push([received, parseProxyHeader(input.subarray(0, received))]);
  }
  return out;
}

type Want = ProxyHeaderResult | ProxyHeaderResult["status"];

/** After every random read of `input` the result is `want(received)`: a whole result, or just its status. */
function assertReads(
  input: Uint8Array,
  random: Random,
  context: string,
  want: (received: number) => Want,
) {
  for (const [received, result] of reads(input, random)) {
    const expected = want(received);
    const message = `${context}: ${received} of ${input.length} bytes`;
    if (typeof expected === "string") {
      assert.equal(result.status, expected, message);
    } else assert.deepEqual(result, expected, message);
  }
}

Deno.test("proxy header: random headers in random reads complete exactly when their last byte arrives", () => {
  const seed = Number(
    Deno.env.get("PROXY_HEADER_SEED") ?? Date.now() % 2 ** 31,
  );
  const random = prng(seed);
  for (let round = 0; round < 3000; round++) {
    const context = `PROXY_HEADER_SEED=${seed}, round ${round}`;
    const [header, expected] = random() < 0.5
      ? randomV1(random)
      : randomV2(random);
    const request = randomBytes(random, int(random, 64));
    const kind = round % 6;
    if (kind <= 1) {
      // Valid, followed by the client's first request bytes.
      assertReads(
        bytes(header, request),
        random,
        context,
        (received) => received < header.length ? INCOMPLETE : expected,
      );
    } else if (kind === 2) {
      // Truncated: still waiting, wherever it was cut.
      const input = header.subarray(0, int(random, header.length));
      assertReads(input, random, context, () => INCOMPLETE);
    } else if (kind === 3) {
      // One signature byte changed: refused as soon as that byte arrives (a
      // changed first byte may be the other version's, which the next refutes).
      const input = bytes(header, request);
      const at = int(random, header[0] === 0x50 ? 6 : 12);
      input[at] ^= 1 + int(random, 255);
      const other = at === 0 && (input[0] === 0x50 || input[0] === 0x0d);
      const decidedAt = other ? 2 : at + 1;
      assertReads(
        input,
        random,
        `${context}, byte ${at} changed`,
        (received) => received < decidedAt ? "incomplete" : "invalid",
      );
    } else if (kind === 4) {
      // A v2 length shorter than its family's address block: refused at byte 16.
      const family = 1 + int(random, 3);
      const size = [0, 12, 36, 216][family];
      const short = int(random, size);
      const input = v2(PROXY, (family << 4) | 1, new Uint8Array(size), short);
      assertReads(
        input,
        random,
        context,
        (received) => received < 16 ? "incomplete" : "invalid",
      );
    } else {
      // Garbage: alone, after "PROXY " (from the v1 alphabet), or after the v2
      // signature. It never throws, and once final it stays so (an invalid
      // reason may quote more of a field); a bare stranger never completes.
      const which = int(random, 3);
      const alphabet = bytes("TCP46UNKOWabcdefABCDEF0123456789.: \r\n");
      const tail = randomBytes(random, int(random, 200))
        .map((b) => which === 1 ? alphabet[b % alphabet.length] : b);
      const input = bytes([[], "PROXY ", SIGNATURE][which], tail);
      const last = parse(input);
      const settled = (r: ProxyHeaderResult) =>
        r.status === "invalid" ? r.status : r;
      let final = false;
      for (const [received, result] of reads(input, random)) {
        final ||= result.status !== "incomplete";
        if (final) {
          assert.deepEqual(
            settled(result),
            settled(last),
            `${context}: ${received}`,
          );
        }
      }
      if (which === 0) assert.notEqual(last.status, "complete", context);
    }
  }
});

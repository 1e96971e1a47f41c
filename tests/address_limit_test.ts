/**
 * Pure unit tests of the per-address limit: which addresses share a key
 * (IPv4 one by one, IPv6 per /64, IPv4-mapped as IPv4, any spelling alike),
 * the counting itself, and the IP address text parser it is built on.
 */
import assert from "node:assert/strict";
import {
  addressKey,
  AddressLimit,
  formatIPv6,
  parseIPv4,
  parseIPv6,
} from "../src/address_limit.ts";
import { prng } from "../bench/traffic.ts";

Deno.test("address key: IPv4 as is, IPv4-mapped as its IPv4, IPv6 as its /64", () => {
  assert.equal(addressKey("203.0.113.9"), "203.0.113.9");
  assert.equal(addressKey("0.0.0.0"), "0.0.0.0");
  assert.equal(addressKey("::ffff:203.0.113.9"), "203.0.113.9");
  assert.equal(addressKey("::FFFF:CB00:7109"), "203.0.113.9");
  assert.equal(addressKey("2001:db8:0:1::5"), "2001:db8:0:1::/64");
  assert.equal(addressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(addressKey("::1"), "::/64");
  // Only ::ffff:0:0/96 is IPv4: the IPv4-compatible and NAT64 forms are IPv6.
  assert.equal(addressKey("::203.0.113.9"), "::/64");
  assert.equal(addressKey("64:ff9b::203.0.113.9"), "64:ff9b::/64");
});

Deno.test("address key: every spelling of an IPv6 address, with or without a zone, is one key", () => {
  const spellings = [
    "2001:db8::1",
    "2001:DB8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "2001:db8:0:0::2",
    "2001:db8::ffff:ffff:ffff:ffff",
    "2001:db8::0.0.0.1",
    "2001:db8::1%eth0",
    "2001:db8::1%2",
  ];
  for (const hostname of spellings) {
    assert.equal(addressKey(hostname), "2001:db8::/64", hostname);
  }
  assert.equal(addressKey("fe80::1%eth0"), "fe80::/64");
  assert.equal(addressKey("::ffff:192.0.2.1%lo"), "192.0.2.1");
});

Deno.test("address key: text that is no IP address is its own key", () => {
  for (
    const text of ["", "localhost", "1.2.3", "010.0.0.1", "1::2::3", "%eth0"]
  ) {
    assert.equal(addressKey(text), text);
  }
});

Deno.test("address limit: IPv4 addresses count one by one", () => {
  const limit = new AddressLimit(2);
  assert.equal(limit.tryAcquire("192.0.2.1"), true);
  assert.equal(limit.tryAcquire("192.0.2.1"), true);
  assert.equal(limit.tryAcquire("192.0.2.1"), false);
  assert.equal(limit.tryAcquire("192.0.2.2"), true);
  assert.equal(limit.tryAcquire("192.0.2.1"), false);
  assert.equal(limit.size, 2);
});

Deno.test("address limit: one /64 shares a count; different /64s do not", () => {
  const limit = new AddressLimit(2);
  assert.equal(limit.tryAcquire("2001:db8:0:1::1"), true);
  assert.equal(limit.tryAcquire("2001:DB8:0:1:ffff:ffff:ffff:ffff"), true);
  assert.equal(limit.tryAcquire("2001:db8:0:1:0:0:0:3%eth0"), false);
  assert.equal(limit.tryAcquire("2001:db8:0:2::1"), true);
  assert.equal(limit.tryAcquire("2001:db9:0:1::1"), true);
  assert.equal(limit.size, 3);
});

Deno.test("address limit: an IPv4-mapped address counts as the IPv4 address", () => {
  const limit = new AddressLimit(2);
  assert.equal(limit.tryAcquire("192.0.2.1"), true);
  assert.equal(limit.tryAcquire("::ffff:192.0.2.1"), true);
  assert.equal(limit.tryAcquire("192.0.2.1"), false);
  assert.equal(limit.tryAcquire("::ffff:c000:201"), false);
  assert.equal(limit.size, 1);
  limit.release("::ffff:192.0.2.1");
  assert.equal(limit.tryAcquire("192.0.2.1"), true);
});

Deno.test("address limit: release frees a slot, and the map shrinks back to nothing", () => {
  const limit = new AddressLimit(1);
  const hosts = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8:1::1"];
  for (const host of hosts) assert.equal(limit.tryAcquire(host), true);
  assert.equal(limit.size, 4);
  assert.equal(limit.tryAcquire("2001:db8::2"), false);
  limit.release("2001:DB8::1");
  assert.equal(limit.size, 3);
  assert.equal(limit.tryAcquire("2001:db8::2"), true);
  limit.release("2001:db8::2");
  for (const host of hosts.slice(0, 2).concat(hosts.slice(3))) {
    limit.release(host);
  }
  assert.equal(limit.size, 0);
  // Many clients coming and going leave nothing behind.
  for (let i = 0; i < 1000; i++) {
    const host = `10.0.${i >> 8}.${i & 0xff}`;
    assert.equal(limit.tryAcquire(host), true);
    limit.release(host);
  }
  assert.equal(limit.size, 0);
});

Deno.test("address limit: releasing what is not held throws", () => {
  const limit = new AddressLimit(3);
  assert.throws(
    () => limit.release("192.0.2.1"),
    new Error("Cannot release a connection: none is held for 192.0.2.1"),
  );
  limit.tryAcquire("2001:db8::1");
  limit.release("2001:db8::1");
  assert.throws(
    () => limit.release("2001:db8::1"),
    /none is held for 2001:db8::\/64/,
  );
  assert.equal(limit.size, 0);
});

Deno.test("address limit: the limit must be an integer of at least 1", () => {
  for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 53]) {
    assert.throws(
      () => new AddressLimit(bad),
      new RangeError(
        `Cannot use per-address connection limit: received ${bad}`,
      ),
    );
  }
  assert.equal(new AddressLimit(1).tryAcquire("192.0.2.1"), true);
});

Deno.test("ip text: IPv4 is a strict dotted quad", () => {
  assert.deepEqual(
    parseIPv4("255.255.255.255"),
    new Uint8Array([255, 255, 255, 255]),
  );
  assert.deepEqual(parseIPv4("0.0.0.0"), new Uint8Array(4));
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.256",
      "01.2.3.4",
      "1.2.3.00",
      "1.2.3.-1",
      "1.2.3.+1",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1..3.4",
      "0x1.2.3.4",
      "1.2.3.1e2",
      "１.2.3.4",
    ]
  ) {
    assert.equal(parseIPv4(bad), undefined, bad);
  }
});

/** Sixteen bytes from eight 16-bit groups. */
function groups(...values: number[]): Uint8Array {
  return new Uint8Array(values.flatMap((g) => [g >> 8, g & 0xff]));
}

Deno.test("ip text: IPv6 accepts every valid spelling and nothing else", () => {
  const one = new Uint8Array(16);
  one[15] = 1;
  for (
    const text of [
      "::1",
      "0:0:0:0:0:0:0:1",
      "0000::0001",
      "::0.0.0.1",
      "0::0:1",
    ]
  ) {
    assert.deepEqual(parseIPv6(text), one, text);
  }
  assert.deepEqual(parseIPv6("::"), new Uint8Array(16));
  assert.deepEqual(parseIPv6("1::"), groups(1, 0, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(
    parseIPv6("1:2:3:4:5:6:7::"),
    groups(1, 2, 3, 4, 5, 6, 7, 0),
  );
  assert.deepEqual(
    parseIPv6("::2:3:4:5:6:7:8"),
    groups(0, 2, 3, 4, 5, 6, 7, 8),
  );
  assert.deepEqual(parseIPv6("1:2::7:8"), groups(1, 2, 0, 0, 0, 0, 7, 8));
  assert.deepEqual(
    parseIPv6("aBcD:Ef::1.2.3.4"),
    groups(0xabcd, 0xef, 0, 0, 0, 0, 0x102, 0x304),
  );
  assert.deepEqual(
    parseIPv6("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"),
    new Uint8Array(16).fill(0xff),
  );
  for (
    const bad of [
      "",
      ":",
      ":::",
      "1",
      "1.2.3.4",
      ":1::",
      "1::2:",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "12345::",
      "g::",
      "::1.2.3.4:5",
      "1.2.3.4::",
      "::1.2.3",
      "::256.0.0.1",
      "::01.0.0.1",
      "1:2:3:4:5:6:7:1.2.3.4",
      "::1%eth0",
      "[::1]",
      " ::1",
      "0000:0000:0000:0000:0000:0000:0000:0000:0",
    ]
  ) {
    assert.equal(parseIPv6(bad), undefined, bad);
  }
});

Deno.test("ip text: canonical IPv6 is lowercase, unpadded, with the first longest zero run as ::", () => {
  const canonical = (text: string) => formatIPv6(parseIPv6(text)!);
  assert.equal(
    canonical("2001:0DB8:0000:0000:0000:0000:0000:0001"),
    "2001:db8::1",
  );
  assert.equal(canonical("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1"); // first of equal runs
  assert.equal(canonical("2001:0:0:1:0:0:0:1"), "2001:0:0:1::1"); // the longest run
  assert.equal(canonical("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1"); // never one group
  assert.equal(canonical("0:0:0:0:0:0:0:0"), "::");
  assert.equal(canonical("1:0:0:0:0:0:0:0"), "1::");
  assert.equal(canonical("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canonical("::ffff:c000:280"), "::ffff:192.0.2.128");
  assert.equal(canonical("::c000:280"), "::c000:280");
});

Deno.test("ip text: random addresses format as the URL parser writes them and parse back", () => {
  const random = prng(5952);
  for (let round = 0; round < 2000; round++) {
    const address = new Uint8Array(16);
    for (let i = 0; i < 16; i += 2) {
      if (random() < 0.5) continue; // long zero runs, ties, single zeros
      address[i] = Math.floor(random() * 256);
      address[i + 1] = Math.floor(random() * 256);
    }
    const text = formatIPv6(address);
    assert.deepEqual(parseIPv6(text), address, text);
    // The URL parser writes the same canonical text, but an IPv4-mapped address in hex.
    if (text.includes(".")) continue;
    assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname);
  }
});

/**
 * The per-address limit: one counter per client address key, so that a single
 * host (or a single IPv6 /64, which one subscriber usually owns whole) cannot
 * take every slot. Also the IP address text parser and formatter, so that a
 * PROXY header's source and a socket's own address are spelled and keyed
 * alike.
 *
 * Pure: no sockets, no timers.
 *
 * @module
 */

/**
 * The four bytes of a dotted-quad IPv4 address, or undefined when `text` is
 * not one. Strict: exactly four decimal parts of 0 to 255 without leading
 * zeros, because `010` reads as octal in some parsers and as decimal in others.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIPv4 } from "./address_limit.ts";
 * assert.deepEqual(parseIPv4("192.0.2.10"), new Uint8Array([192, 0, 2, 10]));
 * assert.equal(parseIPv4("192.0.2.010"), undefined);
 * assert.equal(parseIPv4("192.0.2.256"), undefined);
 * ```
 */
export function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const octet = parseOctet(parts[i]);
    if (octet === undefined) return undefined;
    bytes[i] = octet;
  }
  return bytes;
}

function parseOctet(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,2})$/.test(text)) return undefined;
  const value = Number(text);
  return value <= 255 ? value : undefined;
}

/**
 * The sixteen bytes of an IPv6 address in any valid text form (upper or lower
 * case, groups with leading zeros, `::` for one or more zero groups, a dotted
 * IPv4 tail), or undefined when `text` is not one. A zone (`%eth0`) is not
 * part of the address text: strip it first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIPv6 } from "./address_limit.ts";
 * const loopback = new Uint8Array(16);
 * loopback[15] = 1;
 * assert.deepEqual(parseIPv6("::1"), loopback);
 * assert.deepEqual(parseIPv6("0:0:0:0:0:0:0.0.0.1"), loopback);
 * assert.equal(parseIPv6("1::2::3"), undefined);
 * assert.equal(parseIPv6("12345::"), undefined);
 * ```
 */
export function parseIPv6(text: string): Uint8Array | undefined {
  // The longest valid form: six four-digit groups and a dotted IPv4 tail.
  if (text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  const head = splitGroups(halves[0], !compressed);
  const tail = compressed ? splitGroups(halves[1], true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const count = head.length + tail.length;
  // `::` stands for at least one zero group.
  if (compressed ? count > 7 : count !== 8) return undefined;
  const bytes = new Uint8Array(16);
  head.forEach((group, i) => writeGroup(bytes, i, group));
  tail.forEach((group, i) => writeGroup(bytes, 8 - tail.length + i, group));
  return bytes;
}

/**
 * The 16-bit groups of one side of `::`; a dotted IPv4 tail counts as two and
 * is allowed only where the address ends (`last`).
 */
function splitGroups(text: string, last: boolean): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
      groups.push(parseInt(part, 16));
      continue;
    }
    if (!last || i !== parts.length - 1) return undefined;
    const ipv4 = parseIPv4(part);
    if (ipv4 === undefined) return undefined;
    groups.push((ipv4[0] << 8) | ipv4[1], (ipv4[2] << 8) | ipv4[3]);
  }
  return groups;
}

function writeGroup(bytes: Uint8Array, index: number, group: number): void {
  bytes[2 * index] = group >> 8;
  bytes[2 * index + 1] = group & 0xff;
}

/** True for ::ffff:0:0/96, the IPv4-mapped IPv6 addresses. */
function isIPv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * The canonical text of a 16-byte IPv6 address: lowercase hex without leading
 * zeros, the first longest run of two or more zero groups as `::`, and an
 * IPv4-mapped address as `::ffff:` and its dotted quad, the form Deno itself
 * reports for such a peer. One address, one string.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatIPv6, parseIPv6 } from "./address_limit.ts";
 * const canonical = (text: string) => formatIPv6(parseIPv6(text)!);
 * assert.equal(canonical("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
 * assert.equal(canonical("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
 * assert.equal(canonical("::FFFF:c000:0201"), "::ffff:192.0.2.1");
 * ```
 */
export function formatIPv6(bytes: Uint8Array): string {
  if (isIPv4Mapped(bytes)) return `::ffff:${bytes.subarray(12, 16).join(".")}`;
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) {
    groups.push(((bytes[2 * i] << 8) | bytes[2 * i + 1]).toString(16));
  }
  let bestStart = -1;
  let bestLength = 1; // a single zero group is never compressed
  for (let start = 0; start < 8;) {
    let end = start;
    while (end < 8 && groups[end] === "0") end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end + 1;
  }
  if (bestStart < 0) return groups.join(":");
  return `${groups.slice(0, bestStart).join(":")}::${
    groups.slice(bestStart + bestLength).join(":")
  }`;
}

/**
 * The key a client address is counted under: IPv4 as is; an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) as its IPv4; any other IPv6 address as its /64
 * prefix (canonical, e.g. "2001:db8:0:1::/64"), its zone dropped. Text that is
 * no IP address is its own key, so counting never fails.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addressKey } from "./address_limit.ts";
 * assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
 * assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
 * assert.equal(addressKey("2001:DB8:0:1::5"), "2001:db8:0:1::/64");
 * assert.equal(addressKey("fe80::1%eth0"), "fe80::/64");
 * ```
 */
export function addressKey(hostname: string): string {
  if (parseIPv4(hostname) !== undefined) return hostname;
  const zone = hostname.indexOf("%");
  const bytes = parseIPv6(zone < 0 ? hostname : hostname.slice(0, zone));
  if (bytes === undefined) return hostname;
  if (isIPv4Mapped(bytes)) return bytes.subarray(12, 16).join(".");
  bytes.fill(0, 8);
  return `${formatIPv6(bytes)}/64`;
}

/**
 * At most `maxPerAddress` connections per {@linkcode addressKey}. One object
 * owns every count; a key's entry goes when its count reaches zero, so the map
 * holds only addresses with an open connection, never closed clients.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressLimit } from "./address_limit.ts";
 * const limit = new AddressLimit(1);
 * assert.equal(limit.tryAcquire("2001:db8::1"), true);
 * assert.equal(limit.tryAcquire("2001:db8::2"), false); // the same /64
 * assert.equal(limit.tryAcquire("192.0.2.1"), true);
 * limit.release("2001:db8::1");
 * limit.release("192.0.2.1");
 * assert.equal(limit.size, 0);
 * ```
 */
export class AddressLimit {
  /** The most connections one address key holds at once. */
  readonly #max: number;
  /** Open connections per key; a key is present only while its count is above zero. */
  #counts = new Map<string, number>();

  constructor(maxPerAddress: number) {
    if (!Number.isSafeInteger(maxPerAddress) || maxPerAddress < 1) {
      throw new RangeError(
        `Cannot use per-address connection limit: received ${maxPerAddress}`,
      );
    }
    this.#max = maxPerAddress;
  }

  /** Keys currently holding at least one connection (for tests and metrics). */
  get size(): number {
    return this.#counts.size;
  }

  /** Counts one more connection from `hostname` if its key is below the limit. */
  tryAcquire(hostname: string): boolean {
    const key = addressKey(hostname);
    const count = this.#counts.get(key) ?? 0;
    if (count >= this.#max) return false;
    this.#counts.set(key, count + 1);
    return true;
  }

  /** Gives back one connection from `hostname`. */
  release(hostname: string): void {
    const key = addressKey(hostname);
    const count = this.#counts.get(key);
    if (count === undefined) {
      throw new Error(`Cannot release a connection: none is held for ${key}`);
    }
    if (count === 1) this.#counts.delete(key);
    else this.#counts.set(key, count - 1);
  }
}

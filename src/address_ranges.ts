/**
 * Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`): the
 * balancers whose PROXY headers the server believes.
 *
 * @module
 */
import { parseIPv4, parseIPv6 } from "./address_limit.ts";

interface Range {
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

/** The address as 4 (IPv4, also IPv4-mapped IPv6) or 16 bytes, or undefined. */
function addressBytes(text: string): Uint8Array | undefined {
  const v4 = parseIPv4(text);
  if (v4 !== undefined) return v4;
  const zone = text.indexOf("%");
  const v6 = parseIPv6(zone < 0 ? text : text.slice(0, zone));
  if (v6 === undefined) return undefined;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) &&
    v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

/**
 * A set of address ranges. Throws a `RangeError` naming the first entry that
 * is not `ADDRESS` or `ADDRESS/PREFIX`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressRanges } from "./address_ranges.ts";
 * const balancers = AddressRanges.parse("10.0.0.0/8, 2001:db8::/32,127.0.0.1");
 * assert.equal(balancers.contains("10.1.2.3"), true);
 * assert.equal(balancers.contains("::ffff:10.1.2.3"), true);
 * assert.equal(balancers.contains("2001:db8:1::7"), true);
 * assert.equal(balancers.contains("127.0.0.2"), false);
 * assert.throws(() => AddressRanges.parse("10.0.0.0/33"), RangeError);
 * ```
 */
export class AddressRanges {
  readonly #ranges: readonly Range[];

  private constructor(ranges: Range[]) {
    this.#ranges = ranges;
  }

  /** Parses comma-separated ranges (a list of strings is joined first). */
  static parse(text: string | readonly string[]): AddressRanges {
    const entries = (typeof text === "string" ? text : text.join(","))
      .split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
    if (entries.length === 0) {
      throw new RangeError("Cannot use an empty list of address ranges");
    }
    return new AddressRanges(entries.map((entry) => {
      const slash = entry.indexOf("/");
      const bytes = addressBytes(slash < 0 ? entry : entry.slice(0, slash));
      const prefixText = slash < 0 ? undefined : entry.slice(slash + 1);
      const bits = bytes === undefined ? 0 : bytes.length * 8;
      const prefix = prefixText === undefined
        ? bits
        : /^\d{1,3}$/.test(prefixText)
        ? Number(prefixText)
        : NaN;
      if (bytes === undefined || !(prefix >= 0 && prefix <= bits)) {
        throw new RangeError(
          `Cannot parse address range: expected ADDRESS or ADDRESS/PREFIX, received "${entry}"`,
        );
      }
      return { bytes, prefix };
    }));
  }

  /** True when `hostname` (an IP address) lies in one of the ranges. */
  contains(hostname: string): boolean {
    const bytes = addressBytes(hostname);
    if (bytes === undefined) return false;
    return this.#ranges.some((range) =>
      range.bytes.length === bytes.length && matches(bytes, range)
    );
  }
}

function matches(bytes: Uint8Array, range: Range): boolean {
  const whole = range.prefix >> 3;
  for (let i = 0; i < whole; i++) {
    if (bytes[i] !== range.bytes[i]) return false;
  }
  const rest = range.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (bytes[whole] & mask) === (range.bytes[whole] & mask);
}

/**
 * The PROXY protocol header (versions 1 and 2) that a TCP balancer such as
 * HAProxy sends before the client's own bytes, naming the client it relays.
 *
 * Pure: no sockets, no timers. The caller accumulates bytes and calls
 * {@linkcode parseProxyHeader} after each read until the answer is final.
 *
 * @module
 */

import { formatIPv6, parseIPv4, parseIPv6 } from "./address_limit.ts";

/**
 * The client address a PROXY header names, or undefined when the socket's own
 * address stays (v1 UNKNOWN, v2 LOCAL, v2 AF_UNSPEC or AF_UNIX).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseProxyHeader, type ProxySource } from "./proxy_header.ts";
 * const header = "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
 * const result = parseProxyHeader(new TextEncoder().encode(header));
 * const expected: ProxySource = { hostname: "192.0.2.1", port: 56324 };
 * assert.deepEqual(result.status === "complete" && result.source, expected);
 * ```
 */
export interface ProxySource {
  hostname: string;
  port: number;
}

/**
 * What the bytes received so far say: more are needed, they can never start a
 * valid header, or the header is complete and occupies the first `length`
 * bytes (what follows belongs to the client stream).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseProxyHeader, type ProxyHeaderResult } from "./proxy_header.ts";
 * const result: ProxyHeaderResult = parseProxyHeader(
 *   new TextEncoder().encode("sum\n"),
 * );
 * assert.equal(result.status, "invalid");
 * assert.match(result.status === "invalid" ? result.reason : "", /signature/);
 * ```
 */
export type ProxyHeaderResult =
  /** More bytes are needed; nothing is wrong so far. */
  | { status: "incomplete" }
  /** Never a valid header whatever follows; `reason` is one short line for a warning log. */
  | { status: "invalid"; reason: string }
  | {
    status: "complete";
    /** Bytes the header occupies. */
    length: number;
    source: ProxySource | undefined;
    version: 1 | 2;
    /** A v2 LOCAL header: the balancer's own connection (a health check). */
    local: boolean;
  };

/**
 * The most bytes a complete header can take (v2: 16 + 65535); a caller
 * buffers at most this much.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PROXY_HEADER_MAX_BYTES } from "./proxy_header.ts";
 * assert.equal(PROXY_HEADER_MAX_BYTES, 65551);
 * ```
 */
export const PROXY_HEADER_MAX_BYTES: number = 16 + 0xffff;

/** The longest v1 line, CRLF included. */
const V1_MAX_BYTES = 107;
const V1_PREFIX = "PROXY ";
const V2_SIGNATURE = new TextEncoder().encode("\r\n\r\n\0\r\nQUIT\n");
/** Signature, version and command, family and protocol, length. */
const V2_FIXED_BYTES = 16;
/** Address block sizes by family: AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX. */
const V2_ADDRESS_BYTES = [0, 12, 36, 216];

const INCOMPLETE: ProxyHeaderResult = { status: "incomplete" };

function invalid(version: 1 | 2, detail: string): ProxyHeaderResult {
  return {
    status: "invalid",
    reason: `Cannot read PROXY v${version} header: ${detail}`,
  };
}

/**
 * Parses the PROXY header at the start of `bytes` (everything received so
 * far). Answers "invalid" as soon as the bytes cannot begin a valid header, so
 * a client that speaks without one is turned away at its first read. Never
 * throws; reads at most the first 107 bytes (v1) or the fixed part and the
 * address block (v2), however much has arrived.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseProxyHeader } from "./proxy_header.ts";
 * const bytes = new TextEncoder().encode(
 *   "PROXY TCP6 2001:DB8::1 2001:db8::2 4000 443\r\nsum\r\n",
 * );
 * assert.deepEqual(parseProxyHeader(bytes.subarray(0, 20)), {
 *   status: "incomplete",
 * });
 * assert.deepEqual(parseProxyHeader(bytes), {
 *   status: "complete",
 *   length: 45,
 *   source: { hostname: "2001:db8::1", port: 4000 },
 *   version: 1,
 *   local: false,
 * });
 * ```
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyHeaderResult {
  if (bytes.length === 0) return INCOMPLETE;
  if (bytes[0] === V1_PREFIX.charCodeAt(0)) return parseV1(bytes);
  if (bytes[0] === V2_SIGNATURE[0]) return parseV2(bytes);
  return {
    status: "invalid",
    reason: "Cannot read PROXY header: neither the v1 nor the v2 signature",
  };
}

/**
 * Version 1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, or
 * `PROXY UNKNOWN` and anything up to the CRLF. The line ends at its first LF.
 */
function parseV1(bytes: Uint8Array): ProxyHeaderResult {
  // Latin-1: one character per byte, so string indices are byte offsets.
  const text = String.fromCharCode(
    ...bytes.subarray(0, Math.min(bytes.length, V1_MAX_BYTES)),
  );
  const prefix = text.slice(0, V1_PREFIX.length);
  if (!V1_PREFIX.startsWith(prefix)) {
    return invalid(1, "the line does not start with PROXY and a space");
  }
  const lf = text.indexOf("\n");
  if (lf >= 0 && text[lf - 1] !== "\r") {
    return invalid(1, "LF without CR");
  }
  if (lf < 0 && text.length === V1_MAX_BYTES) {
    return invalid(1, `no CRLF within ${V1_MAX_BYTES} bytes`);
  }
  // A CR with nothing after it yet must be the line's end: every field is whole.
  const crEnds = lf < 0 && text.endsWith("\r");
  const end = lf >= 0 ? lf - 1 : crEnds ? text.length - 1 : text.length;
  const body = text.slice(V1_PREFIX.length, end);
  if (body.startsWith("UNKNOWN")) {
    // The receiver ignores whatever UNKNOWN is followed by, up to the CRLF.
    return lf < 0 ? INCOMPLETE : {
      status: "complete",
      length: lf + 1,
      source: undefined,
      version: 1,
      local: false,
    };
  }
  const fields = body.split(" ");
  const problem = checkV1Fields(fields, lf >= 0 || crEnds);
  if (problem !== undefined) return invalid(1, problem);
  if (lf < 0) return INCOMPLETE;
  const [protocol, source, , port] = fields;
  const hostname = protocol === "TCP6"
    ? formatIPv6(parseIPv6(source)!)
    : source;
  return {
    status: "complete",
    length: lf + 1,
    source: { hostname, port: Number(port) },
    local: false,
    version: 1,
  };
}

const V1_FIELD_NAMES = [
  "protocol",
  "source address",
  "destination address",
  "source port",
  "destination port",
];

/**
 * What is wrong with the fields of a TCP4 or TCP6 line, if anything. Every
 * field is checked in full once the space or CR after it has arrived; the one
 * still arriving is checked only for its characters and length (the 107-byte
 * limit and the caller's deadline bound that wait anyway).
 */
function checkV1Fields(fields: string[], ended: boolean): string | undefined {
  const ipv6 = fields[0] === "TCP6";
  for (let i = 0; i < Math.min(fields.length, 5); i++) {
    const field = fields[i];
    const whole = ended || i < fields.length - 1;
    let ok: boolean;
    if (i === 0) {
      ok = whole
        ? field === "TCP4" || field === "TCP6"
        : ["TCP4", "TCP6", "UNKNOWN"].some((p) => p.startsWith(field));
    } else if (i <= 2) {
      if (whole) {
        ok = (ipv6 ? parseIPv6(field) : parseIPv4(field)) !== undefined;
      } else {
        ok = ipv6
          ? /^[0-9A-Fa-f:.]{0,45}$/.test(field)
          : /^[0-9.]{0,15}$/.test(field);
      }
    } else {
      // Any prefix of a valid port is itself valid or empty.
      ok = isPort(field) || (!whole && field === "");
    }
    if (!ok) return `bad ${V1_FIELD_NAMES[i]}: ${JSON.stringify(field)}`;
  }
  if (fields.length > 5) return "more than five fields after PROXY";
  if (ended && fields.length < 5) return "fewer than five fields after PROXY";
  return undefined;
}

/**
 * A decimal port, 0 to 65535. The v1 grammar has no leading zeros (`080` is
 * rejected), so one port has one spelling.
 */
function isPort(text: string): boolean {
  return /^(0|[1-9][0-9]{0,4})$/.test(text) && Number(text) <= 0xffff;
}

/**
 * Version 2: the 12-byte signature, version and command, family and
 * protocol, a big-endian length of the rest, the address block and TLVs.
 * Each fixed byte is judged as soon as it arrives.
 */
function parseV2(bytes: Uint8Array): ProxyHeaderResult {
  const signed = Math.min(bytes.length, V2_SIGNATURE.length);
  for (let i = 0; i < signed; i++) {
    if (bytes[i] !== V2_SIGNATURE[i]) {
      return invalid(2, "wrong signature");
    }
  }
  if (bytes.length <= 12) return INCOMPLETE;
  const version = bytes[12] >> 4;
  if (version !== 2) return invalid(2, `version ${version}`);
  const command = bytes[12] & 0x0f;
  // LOCAL (health checks by the balancer itself): the family byte, address
  // block and TLVs are all ignored, as the protocol asks of a receiver.
  const local = command === 0;
  if (!local && command !== 1) return invalid(2, `command ${command}`);
  if (bytes.length <= 13) return INCOMPLETE;
  const family = bytes[13] >> 4;
  const transport = bytes[13] & 0x0f;
  if (!local) {
    if (family >= V2_ADDRESS_BYTES.length) {
      return invalid(2, `address family ${family}`);
    }
    if (transport === 2) {
      return invalid(2, "datagram transport on a TCP server");
    }
    if (transport > 2) return invalid(2, `transport protocol ${transport}`);
  }
  if (bytes.length < V2_FIXED_BYTES) return INCOMPLETE;
  const rest = uint16(bytes, 14);
  const addressBytes = local ? 0 : V2_ADDRESS_BYTES[family];
  if (rest < addressBytes) {
    return invalid(
      2,
      `length ${rest} is shorter than the ${addressBytes}-byte address block`,
    );
  }
  const length = V2_FIXED_BYTES + rest;
  if (bytes.length < length) return INCOMPLETE;
  return {
    status: "complete",
    length,
    source: v2Source(bytes, family, local),
    version: 2,
    local,
  };
}

/** The source of a complete v2 header with a PROXY command, if it names one. */
function v2Source(
  bytes: Uint8Array,
  family: number,
  local: boolean,
): ProxySource | undefined {
  if (local) return undefined;
  const at = V2_FIXED_BYTES;
  if (family === 1) {
    return {
      hostname: bytes.subarray(at, at + 4).join("."),
      port: uint16(bytes, at + 8),
    };
  }
  if (family === 2) {
    return {
      hostname: formatIPv6(bytes.subarray(at, at + 16)),
      port: uint16(bytes, at + 32),
    };
  }
  return undefined;
}

/** The big-endian 16-bit number at `at`, as the v2 header writes lengths and ports. */
function uint16(bytes: Uint8Array, at: number): number {
  return (bytes[at] << 8) | bytes[at + 1];
}

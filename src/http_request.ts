/**
 * The little of HTTP/1.1 the admin endpoint speaks: it reads one request
 * head (request line and header fields, no body) from the bytes received so
 * far, and writes one complete response that closes the connection. No I/O
 * here; the admin server feeds it bytes and sends what it returns.
 *
 * @module
 */

/** The largest request head accepted; a longer one is a bad request. */
export const MAX_REQUEST_HEAD_BYTES = 8192;

/** What a client asked for: the request line of one request. */
export interface RequestHead {
  /** The method as sent (case matters in HTTP: `get` is not `GET`). */
  method: string;
  /** The path of the request target, without its query. */
  path: string;
}

/** The state of a request head after the bytes received so far. */
export type HeadParse =
  | { kind: "incomplete" }
  | { kind: "invalid"; reason: string }
  | { kind: "complete"; head: RequestHead };

/** One response; the connection closes after it. */
export interface HttpResponse {
  status: number;
  /** Header fields, lowercase names; `content-length` and `connection` are added. */
  headers: Record<string, string>;
  body: string;
}

/** A method or header name: an RFC 9110 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a request target is made of: visible ASCII, no spaces. */
const VISIBLE_ASCII = /^[!-~]+$/;
/** A header field line: a token, a colon, then visible characters, spaces or tabs. */
const FIELD_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Reads the request head at the start of `received`: `incomplete` until
 * the empty line that ends it has arrived, `invalid` when it breaks the
 * syntax or has not ended within `maxBytes`, else the method and path.
 * Bytes after the head (a body, a second request) are ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseRequestHead } from "./http_request.ts";
 * const bytes = (text: string) => new TextEncoder().encode(text);
 *
 * assert.deepEqual(parseRequestHead(bytes("GET /metrics HTTP/1.1\r\nHost: x\r\n")), { kind: "incomplete" });
 * assert.deepEqual(parseRequestHead(bytes("GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n")), {
 *   kind: "complete",
 *   head: { method: "GET", path: "/healthz" },
 * });
 * assert.equal(parseRequestHead(bytes("hello\r\n\r\n")).kind, "invalid");
 * assert.equal(parseRequestHead(bytes("GET / HTTP/1.1\r\nX: " + "a".repeat(9000)), 8192).kind, "invalid");
 * ```
 */
export function parseRequestHead(
  received: Uint8Array,
  maxBytes: number = MAX_REQUEST_HEAD_BYTES,
): HeadParse {
  const end = endOfHead(received.subarray(0, maxBytes));
  if (end === -1) {
    return received.length >= maxBytes
      ? { kind: "invalid", reason: `request head over ${maxBytes} bytes` }
      : { kind: "incomplete" };
  }
  // Latin-1 maps every byte to one character: no byte can hide a line end.
  const [requestLine, ...fieldLines] = latin1(received.subarray(0, end))
    .split(/\r?\n/);
  const badField = fieldLines.find((line) => !FIELD_LINE.test(line));
  if (badField !== undefined) {
    return { kind: "invalid", reason: "malformed header field" };
  }
  return parseRequestLine(requestLine);
}

/** `METHOD SP target SP HTTP/1.x`, the target in origin form or absolute form. */
function parseRequestLine(line: string): HeadParse {
  const parts = line.split(" ");
  if (parts.length !== 3) {
    return { kind: "invalid", reason: "malformed request line" };
  }
  const [method, target, version] = parts;
  if (!TOKEN.test(method)) return { kind: "invalid", reason: "bad method" };
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    return { kind: "invalid", reason: "unsupported HTTP version" };
  }
  // Resolved the way a URL is (dot segments removed), as browsers and
  // proxies see it; the host of an absolute target is not checked.
  const url = target.startsWith("/")
    ? URL.parse(`http://admin${target}`)
    : /^https?:\/\//i.test(target)
    ? URL.parse(target)
    : null;
  if (url === null || !VISIBLE_ASCII.test(target)) {
    return { kind: "invalid", reason: "bad request target" };
  }
  return { kind: "complete", head: { method, path: url.pathname } };
}

/**
 * Where the text of a head ends (before the line end that precedes the
 * empty line closing it), or -1 while that empty line has not arrived. A bare LF counts as a line end, as RFC 9112
 * allows. Native searches only, so a client that sends its head a byte at
 * a time costs little per byte.
 */
function endOfHead(bytes: Uint8Array): number {
  const LF = 10, CR = 13;
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, lf + 1)) {
    const ended = bytes[lf + 1] === LF ||
      (bytes[lf + 1] === CR && bytes[lf + 2] === LF);
    if (ended) return lf > 0 && bytes[lf - 1] === CR ? lf - 1 : lf;
  }
  return -1;
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  503: "Service Unavailable",
};

const encoder = new TextEncoder();

/**
 * The bytes of `response`, status line to body, with `content-length` and
 * `connection: close` added. For a `HEAD` request (`omitBody`), the same
 * head without the body.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatResponse } from "./http_request.ts";
 * const response = { status: 200, headers: { "content-type": "text/plain" }, body: "ok" };
 * assert.equal(
 *   new TextDecoder().decode(formatResponse(response)),
 *   "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
 * );
 * assert.match(new TextDecoder().decode(formatResponse(response, { omitBody: true })), /\r\n\r\n$/);
 * ```
 */
export function formatResponse(
  response: HttpResponse,
  options: { omitBody?: boolean } = {},
): Uint8Array {
  const body = encoder.encode(response.body);
  const fields = {
    ...response.headers,
    "content-length": String(body.length),
    connection: "close",
  };
  const head =
    `HTTP/1.1 ${response.status} ${REASONS[response.status] ?? "Unknown"}\r\n` +
    Object.entries(fields).map(([name, value]) => `${name}: ${value}\r\n`)
      .join("") +
    "\r\n";
  const headBytes = encoder.encode(head);
  if (options.omitBody) return headBytes;
  const bytes = new Uint8Array(headBytes.length + body.length);
  bytes.set(headBytes);
  bytes.set(body, headBytes.length);
  return bytes;
}

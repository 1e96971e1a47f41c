/**
 * The admin endpoint's request reader and response writer, without sockets:
 * what counts as a complete, incomplete or broken request head, and the
 * exact bytes of a response.
 */
import assert from "node:assert/strict";
import {
  formatResponse,
  type HeadParse,
  MAX_REQUEST_HEAD_BYTES,
  parseRequestHead,
} from "../src/http_request.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const parse = (text: string): HeadParse => parseRequestHead(bytes(text));

Deno.test("http request: complete heads give method and path", () => {
  const cases: [string, string, string][] = [
    ["GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/healthz"],
    ["HEAD /metrics HTTP/1.0\r\n\r\n", "HEAD", "/metrics"],
    ["GET /healthz?probe=1&x=2 HTTP/1.1\r\n\r\n", "GET", "/healthz"],
    ["GET /a/../healthz HTTP/1.1\r\n\r\n", "GET", "/healthz"],
    ["GET http://h:1/metrics?q HTTP/1.1\r\n\r\n", "GET", "/metrics"],
    [
      "POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
      "POST",
      "/healthz",
    ],
    ["get /healthz HTTP/1.1\n\n", "get", "/healthz"],
    ["GET /healthz HTTP/1.1\r\nX-Empty:\r\nA: b\tc\r\n\r\n", "GET", "/healthz"],
  ];
  for (const [text, method, path] of cases) {
    assert.deepEqual(parse(text), {
      kind: "complete",
      head: { method, path },
    }, JSON.stringify(text));
  }
});

Deno.test("http request: a head is incomplete until its empty line", () => {
  const full = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
  for (let n = 0; n < full.length; n++) {
    assert.deepEqual(parse(full.slice(0, n)), { kind: "incomplete" }, `${n}`);
  }
  assert.equal(parse(full).kind, "complete");
});

Deno.test("http request: broken heads are invalid", () => {
  const broken = [
    "\r\n\r\n",
    "hello\r\n\r\n",
    "GET /healthz\r\n\r\n",
    "GET  /healthz HTTP/1.1\r\n\r\n",
    "GET /healthz HTTP/1.1 extra\r\n\r\n",
    "GET /healthz HTTP/2.0\r\n\r\n",
    "GET healthz HTTP/1.1\r\n\r\n",
    "GET * HTTP/1.1\r\n\r\n",
    "G\u00e9T /healthz HTTP/1.1\r\n\r\n",
    "GET /h\u00e9 HTTP/1.1\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nNo colon\r\n\r\n",
    "GET /healthz HTTP/1.1\r\n Folded: x\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nA: b\x00c\r\n\r\n",
  ];
  for (const text of broken) {
    assert.equal(parse(text).kind, "invalid", JSON.stringify(text));
  }
});

Deno.test("http request: the head must end within the size bound", () => {
  const head = (fill: number) =>
    `GET /healthz HTTP/1.1\r\nX: ${"a".repeat(fill)}\r\n\r\n`;
  const overhead = head(0).length;
  const fits = head(MAX_REQUEST_HEAD_BYTES - overhead);
  assert.equal(fits.length, MAX_REQUEST_HEAD_BYTES);
  assert.equal(parse(fits).kind, "complete");
  assert.equal(
    parse(head(MAX_REQUEST_HEAD_BYTES - overhead + 1)).kind,
    "invalid",
  );
  // Without its end yet: incomplete below the bound, invalid at it.
  const open = fits.slice(0, -4);
  assert.equal(parse(open).kind, "incomplete");
  assert.equal(parse(open + "aaaa").kind, "invalid");
  assert.equal(
    parseRequestHead(bytes("GET / HTTP/1.1\r\n"), 10).kind,
    "invalid",
  );
});

Deno.test("http request: a response's bytes, and a HEAD response without its body", () => {
  const response = {
    status: 405,
    headers: { "content-type": "text/plain", allow: "GET, HEAD" },
    body: "method not allowed\n",
  };
  const head = "HTTP/1.1 405 Method Not Allowed\r\n" +
    "content-type: text/plain\r\nallow: GET, HEAD\r\n" +
    "content-length: 19\r\nconnection: close\r\n\r\n";
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.equal(decode(formatResponse(response)), head + response.body);
  assert.equal(decode(formatResponse(response, { omitBody: true })), head);
  // Length in bytes, not characters.
  const utf8 = formatResponse({ status: 200, headers: {}, body: "é" });
  assert.match(decode(utf8), /content-length: 2\r\n/);
});

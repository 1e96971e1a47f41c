/** Unit tests of the escaping and the two line formats in `src/log_format.ts`. */
import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import {
  escapeLogText,
  logJsonFormatter,
  logTextFormatter,
} from "../src/log_format.ts";

/** Any character a log line must not carry raw. */
const RAW_UNSAFE =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function record(
  message: unknown[],
  properties: Record<string, unknown> = {},
): LogRecord {
  return {
    category: ["lineserver"],
    level: "warning",
    timestamp: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    rawMessage: "test",
    message,
    properties,
  };
}

Deno.test("escapeLogText: every C0 control, DEL and every C1 control is escaped", () => {
  for (let code = 0; code <= 0x9f; code++) {
    const isControl = code < 0x20 || code >= 0x7f;
    const escaped = escapeLogText(`a${String.fromCharCode(code)}b`);
    if (!isControl) {
      assert.equal(escaped, `a${String.fromCharCode(code)}b`);
      continue;
    }
    const named: Record<number, string> = { 9: "\\t", 10: "\\n", 13: "\\r" };
    const expected = named[code] ?? `\\x${code.toString(16).padStart(2, "0")}`;
    assert.equal(escaped, `a${expected}b`, `U+${code.toString(16)}`);
  }
});

Deno.test("escapeLogText: terminal escape sequences lose their ESC or CSI, text stays readable", () => {
  assert.equal(escapeLogText("\x1b[2K\x1b[1Afake"), "\\x1b[2K\\x1b[1Afake");
  assert.equal(
    escapeLogText("\x1b]0;pwned\x07title"),
    "\\x1b]0;pwned\\x07title",
  );
  // The one-character CSI of C1 and NEL (which some terminals break lines on).
  assert.equal(escapeLogText("\u009b2J\u0085next"), "\\x9b2J\\x85next");
  // Colours too: a client does not get to paint the log.
  assert.equal(escapeLogText("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
});

Deno.test("escapeLogText: line and paragraph separators and lone surrogates are escaped", () => {
  assert.equal(escapeLogText("a\u2028b\u2029c"), "a\\u2028b\\u2029c");
  assert.equal(escapeLogText("end\ud83d"), "end\\ud83d");
  assert.equal(escapeLogText("\ude00start"), "\\ude00start");
  // A low then a high surrogate is not a pair: both are lone.
  assert.equal(escapeLogText("\ude00\ud83d"), "\\ude00\\ud83d");
  // A pair is one character and stays.
  assert.equal(
    escapeLogText("ok \u{1f600} \ud83d\ude00"),
    "ok \u{1f600} \u{1f600}",
  );
  assert.equal(escapeLogText("\ufffd from bad UTF-8"), "\ufffd from bad UTF-8");
});

Deno.test("escapeLogText: ordinary text, non-ASCII included, is unchanged; escaping twice changes nothing", () => {
  for (
    const text of [
      "",
      "connection opened 127.0.0.1:5000",
      "[2001:db8::1]:443",
      "straße Ωμέγα 日本語 \u00a0\u00ff",
      'bad source address: "1.2.3.4\\u001b"',
    ]
  ) {
    assert.equal(escapeLogText(text), text);
  }
  const hostile = "\x00\x1b[2K\x7f\u0080\u009f\u2028\ud800\n\t\\x1b";
  const once = escapeLogText(hostile);
  assert.doesNotMatch(once, RAW_UNSAFE);
  assert.equal(escapeLogText(once), once);
});

Deno.test("text lines: values unquoted and escaped, other values inspected, one line per record", () => {
  const line = logTextFormatter(
    record(["closing ", "192.0.2.1:9\x1b[2K\r\nFAKE", " after ", 12, " ms: ", {
      why: "x\u009b",
    }, ""]),
  );
  assert.equal(
    line,
    '2026-01-02T03:04:05.006Z WARN  closing 192.0.2.1:9\\x1b[2K\\r\\nFAKE after 12 ms: { why: "x\\x9b" }\n',
  );
  // A stack trace is one line too.
  const stack = logTextFormatter(
    record(["failed: ", "Error: boom\n    at f (file:///x.ts:1:1)", ""]),
  );
  assert.equal(stack.split("\n").length, 2);
  assert.match(stack, /failed: Error: boom\\n {4}at f/);
});

Deno.test("JSON lines: parse, carry no raw control character, and show every string escaped", () => {
  const hostile = "a\x1b[2K\u0085\u2028\ud800z";
  const line = logJsonFormatter(
    record(["bad header from ", "192.0.2.1:9", ": ", hostile, ""], {
      peer: "192.0.2.1:9",
      reason: hostile,
      nested: { list: [hostile] },
      count: 3,
      "key\u0085": true,
    }),
  );
  assert.ok(line.endsWith("}\n"));
  assert.doesNotMatch(line.slice(0, -1), RAW_UNSAFE);
  const object = JSON.parse(line);
  const escaped = "a\\x1b[2K\\x85\\u2028\\ud800z";
  assert.equal(object.time, "2026-01-02T03:04:05.006Z");
  assert.equal(object.level, "warning");
  assert.equal(object.logger, "lineserver");
  assert.equal(object.message, `bad header from 192.0.2.1:9: ${escaped}`);
  assert.equal(object.reason, escaped);
  assert.deepEqual(object.nested, { list: [escaped] });
  assert.equal(object.count, 3);
  // A property name is not escaped as a value, but the line still carries no C1.
  assert.equal(object["key\u0085"], true);
});

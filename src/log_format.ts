/**
 * How a log record becomes one line of text: the escaping that keeps
 * client-chosen text from acting on a terminal or a log reader, and the two
 * line formats of the command (`text` and `json`).
 *
 * Every value a message interpolates may come from a client (a peer address
 * from a PROXY header, a request line, the reason a header was refused), so
 * the formatters escape the whole message, never the call sites: a call site
 * added tomorrow is covered too.
 *
 * @module
 */

/**
 * The fields of a LogTape log record that the formatters and
 * {@linkcode foldingSink} read and write: every LogTape `LogRecord` has them,
 * so these functions take LogTape's records and LogTape takes theirs.
 * (Declared here rather than imported: the doc linter of Deno 2.9 counts a
 * type from another package as private.)
 */
export interface LogRecordFields {
  /** The logger's category, e.g. `["lineserver"]`. */
  readonly category: readonly string[];
  /** The record's level. */
  readonly level: "trace" | "debug" | "info" | "warning" | "error" | "fatal";
  /** The template's text parts at even indices, the values between them at odd ones. */
  readonly message: readonly unknown[];
  /** The template as written at the call site, e.g. `connection opened {peer}`. */
  readonly rawMessage: string | TemplateStringsArray;
  /** When it was logged, in milliseconds since the epoch. */
  readonly timestamp: number;
  /** The values the template names, and any others given. */
  readonly properties: Record<string, unknown>;
}

/**
 * What may not reach a log line as it is: every C0 control character (tab,
 * line feed and carriage return included, so one record is one line), DEL,
 * every C1 control (U+0080–U+009F, among them the one-character CSI U+009B),
 * the line and paragraph separators U+2028/U+2029 (line breaks to
 * JavaScript and to some log viewers), and UTF-16 surrogates that are not
 * part of a pair (they cannot be written as UTF-8).
 */
const UNSAFE =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const NAMED_ESCAPES: Record<string, string> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

function escapeCharacter(character: string): string {
  const named = NAMED_ESCAPES[character];
  if (named !== undefined) return named;
  const code = character.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/**
 * `text` with every character that could act on a terminal or split a log
 * line written as an escape: `\n`, `\r`, `\t`, `\xHH` for the other C0
 * controls, DEL and the C1 controls, `\uHHHH` for U+2028, U+2029 and lone
 * surrogates. Everything else, other non-ASCII text included, is kept.
 *
 * A backslash is kept as it is, so text that a producer has already escaped
 * (a field quoted with `JSON.stringify`, say) is not escaped twice, and
 * escaping twice changes nothing. The price: a client can write the four
 * characters `\x1b` itself, which read like an escaped ESC, but they cannot
 * do what an ESC does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeLogText } from "./log_format.ts";
 *
 * assert.equal(escapeLogText("\x1b[2Kfake\r\nline\t1"), "\\x1b[2Kfake\\r\\nline\\t1");
 * assert.equal(escapeLogText("\u009b2J \x7f \u2028"), "\\x9b2J \\x7f \\u2028");
 * assert.equal(escapeLogText("lone \ud800 pair \u{1f600}"), "lone \\ud800 pair \u{1f600}");
 * assert.equal(escapeLogText("straße, 127.0.0.1:8080"), "straße, 127.0.0.1:8080");
 * const once = escapeLogText("\x00\x9b");
 * assert.equal(escapeLogText(once), once);
 * ```
 */
export function escapeLogText(text: string): string {
  return text.replace(UNSAFE, escapeCharacter);
}

/** The characters `JSON.stringify` leaves as they are but a log line must not carry. */
const UNSAFE_IN_JSON = /[\x7f-\x9f\u2028\u2029]/g;

const LEVEL_NAMES: Record<LogRecordFields["level"], string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/**
 * The message with its values as plain text (strings unquoted, other values
 * as `Deno.inspect` shows them), escaped: the template's own text too, for
 * messages built with `${...}` instead of placeholders.
 */
function renderMessage(record: LogRecordFields): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    text += i % 2 === 0 || typeof part === "string"
      ? String(part)
      : Deno.inspect(part);
  }
  return escapeLogText(text);
}

/**
 * The command's `text` log line: time, level, message with its values
 * unquoted, all escaped (see {@linkcode escapeLogText}). Give it to a LogTape
 * sink of your own (`getConsoleSink({ formatter: logTextFormatter })`) for
 * lines that read like the command's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logTextFormatter } from "./log_format.ts";
 *
 * const line = logTextFormatter({
 *   category: ["lineserver"],
 *   level: "warning",
 *   timestamp: Date.UTC(2026, 10, 26, 2, 33, 17, 123),
 *   rawMessage: "closing {peer}: {reason}",
 *   message: ["closing ", "192.0.2.7:4000", ": ", "bad \x1b[2K\u009b", ""],
 *   properties: { peer: "192.0.2.7:4000", reason: "bad \x1b[2K\u009b" },
 * });
 * assert.equal(
 *   line,
 *   "2026-11-26T02:33:17.123Z WARN  closing 192.0.2.7:4000: bad \\x1b[2K\\x9b\n",
 * );
 * ```
 */
export function logTextFormatter(record: LogRecordFields): string {
  const time = new Date(record.timestamp).toISOString();
  return `${time} ${LEVEL_NAMES[record.level].padEnd(5)} ${
    renderMessage(record)
  }\n`;
}

/** Escapes every string value, however deeply nested, as the message's values are. */
function escapeStrings(_key: string, value: unknown): unknown {
  return typeof value === "string" ? escapeLogText(value) : value;
}

/**
 * The command's `json` log line: one object with `time`, `level`, `logger`,
 * `message` (as the text line shows it), then the record's properties. Every
 * string in it is escaped as in the text line, so a field and the message
 * show a value alike, and the line itself carries no control character,
 * neither the C1 controls nor U+2028/U+2029 that `JSON.stringify` leaves raw.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logJsonFormatter } from "./log_format.ts";
 *
 * const line = logJsonFormatter({
 *   category: ["lineserver"],
 *   level: "info",
 *   timestamp: 0,
 *   rawMessage: "line from {peer}: {line}",
 *   message: ["line from ", "192.0.2.7:4000", ": ", "a\u2028b\u0085", ""],
 *   properties: { peer: "192.0.2.7:4000", line: "a\u2028b\u0085" },
 * });
 * assert.ok(!/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(line.slice(0, -1)));
 * const object = JSON.parse(line);
 * assert.equal(object.message, "line from 192.0.2.7:4000: a\\u2028b\\x85");
 * assert.equal(object.line, "a\\u2028b\\x85");
 * assert.equal(object.logger, "lineserver");
 * ```
 */
export function logJsonFormatter(record: LogRecordFields): string {
  const json = JSON.stringify(
    {
      time: new Date(record.timestamp).toISOString(),
      level: record.level,
      logger: record.category.join("."),
      message: renderMessage(record),
      ...record.properties,
    },
    escapeStrings,
  );
  // Only a property name can still hold one of these: names are not values.
  return json.replace(
    UNSAFE_IN_JSON,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  ) + "\n";
}

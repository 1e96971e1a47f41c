/**
 * Log setup: LogTape with one synchronous stderr sink, as text or JSON lines.
 *
 * Synchronous writes keep log lines in order with the events and complete
 * before the process exits (no buffered tail is lost at `Deno.exit`).
 *
 * @module
 */
import {
  configureSync,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";

/** The `--log-level` choices. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;
/** The `--log-format` choices. */
export const LOG_FORMATS = ["text", "json"] as const;

/** How log lines are written: `text` (one readable line) or `json` (one object per line). */
export type LogFormat = typeof LOG_FORMATS[number];

/** The server's own events. */
export const serverLogger: Logger = getLogger(["lineserver"]);
/**
 * Lines that are printed whatever the log level (`listening on HOST:PORT`),
 * because scripts and tests read them to find the port.
 */
export const announceLogger: Logger = getLogger(["lineserver", "announce"]);

const LEVEL_NAMES: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/** Renders the message with its values as plain text (strings unquoted). */
function renderMessage(record: LogRecord): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    text += i % 2 === 0 || typeof part === "string"
      ? String(part)
      : Deno.inspect(part);
  }
  return text;
}

/** `2026-11-26T02:33:17.123Z INFO  listening on 127.0.0.1:8080` */
function formatText(record: LogRecord): string {
  const time = new Date(record.timestamp).toISOString();
  return `${time} ${LEVEL_NAMES[record.level].padEnd(5)} ${
    renderMessage(record)
  }\n`;
}

/** One JSON object per line: time, level, logger, message, then the properties. */
function formatJson(record: LogRecord): string {
  return JSON.stringify({
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
    logger: record.category.join("."),
    message: renderMessage(record),
    ...record.properties,
  }) + "\n";
}

/**
 * `n` and `noun`, the noun in the plural unless `n` is 1: log lines read
 * `1 line` and `2 lines`. For nouns whose plural adds an `s`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { plural } from "./logging.ts";
 *
 * assert.equal(plural(1, "line"), "1 line");
 * assert.equal(plural(0, "connection"), "0 connections");
 * assert.equal(plural(59, "connection"), "59 connections");
 * ```
 */
export function plural(n: number, noun: string): string {
  return `${n} ${n === 1 ? noun : `${noun}s`}`;
}

/**
 * An error as one line: the first line of its message, for the one-line
 * errors of the command line and of a worker that cannot start.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firstLine } from "./logging.ts";
 * assert.equal(firstLine(new Error("Bad file\n  details")), "Bad file");
 * assert.equal(firstLine("plain"), "plain");
 * ```
 */
export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0];
}

/** An error as logged for a fault: its stack when it has one, so the log shows where. */
export function errorWithStack(error: unknown): string {
  return error instanceof Error
    ? (error.stack ?? String(error))
    : String(error);
}

const encoder = new TextEncoder();

function writeStderr(text: string) {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
}

/**
 * Routes the `lineserver` loggers to stderr at `level` in `format`, as the
 * command does. It replaces the process's whole LogTape configuration.
 *
 * @example
 * ```ts ignore
 * configureLogging({ level: "info", format: "json" });
 * ```
 */
export function configureLogging(
  options: { level: LogLevel; format: LogFormat },
): void {
  const format = options.format === "json" ? formatJson : formatText;
  resetSync();
  configureSync({
    sinks: { stderr: (record) => writeStderr(format(record)) },
    loggers: [
      {
        category: ["lineserver"],
        lowestLevel: options.level,
        sinks: ["stderr"],
      },
      {
        category: ["lineserver", "announce"],
        lowestLevel: "info",
        sinks: ["stderr"],
        parentSinks: "override",
      },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stderr"],
      },
    ],
  });
}

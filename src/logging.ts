/**
 * Log setup: LogTape with one stderr sink, as text or JSON lines, that never
 * makes the server wait for stderr.
 *
 * The sink is three layers, each in its own module: floods folded into one
 * line a second (log_folding.ts), each record formatted and escaped into one
 * line (log_format.ts), lines written in the background through a bounded
 * queue that drops and counts what stderr cannot take (log_writer.ts). The
 * last lines of the process get out through {@linkcode flushLogs}, which
 * `server.ts` awaits, for a bounded time, before it exits.
 *
 * @module
 */
import {
  configureSync,
  getLogger,
  type Logger,
  type LogLevel,
  resetSync,
} from "@logtape/logtape";
import {
  logJsonFormatter,
  type LogRecordFields,
  logTextFormatter,
} from "./log_format.ts";
import { type FoldingSink, foldingSink } from "./log_folding.ts";
import { NonBlockingWriter } from "./log_writer.ts";
import { settleWithin } from "./deadline.ts";

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

/**
 * How many log lines this process has dropped, in shared memory so that
 * worker threads (`--workers`) add to the same count as the main thread.
 */
let droppedLines = new BigInt64Array(new SharedArrayBuffer(8));

/**
 * Log lines dropped so far in this process, by every thread: lines stderr
 * could not take in time, and lines whose write failed. For
 * `lineserver_log_lines_dropped_total`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logLinesDropped } from "./logging.ts";
 * assert.equal(logLinesDropped(), 0);
 * ```
 */
export function logLinesDropped(): number {
  return Number(Atomics.load(droppedLines, 0));
}

/**
 * The shared memory that holds {@linkcode logLinesDropped}'s count, for a
 * worker thread's `configureLogging({ dropCounter })`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logDropCounter } from "./logging.ts";
 * assert.equal(logDropCounter().byteLength, 8);
 * ```
 */
export function logDropCounter(): SharedArrayBuffer {
  return droppedLines.buffer as SharedArrayBuffer;
}

/** The format of the configured log lines, also of the writer's notice of dropped lines. */
let formatLine: (record: LogRecordFields) => string = logTextFormatter;
/** The configured sink's folding layer, to write its summaries before exit. */
let folding: FoldingSink | undefined;

function droppedLinesRecord(dropped: number): LogRecordFields {
  return {
    category: ["lineserver", "logging"],
    level: "warning",
    timestamp: Date.now(),
    rawMessage: "{dropped} log lines dropped: stderr was not read fast enough",
    message: [
      `${plural(dropped, "log line")} dropped: stderr was not read fast enough`,
    ],
    properties: { dropped },
  };
}

/** Everything the process writes to stderr, in order, without waiting for it. */
const stderrWriter = new NonBlockingWriter(
  (bytes) => Deno.stderr.write(bytes),
  {
    droppedNotice: (dropped) => formatLine(droppedLinesRecord(dropped)),
    onDrop: (count) => Atomics.add(droppedLines, 0, BigInt(count)),
  },
);

/**
 * Writes `text` and a line feed to stderr as it is (not a log record), in
 * order with the log lines and, like them, without waiting: the command's
 * one-line errors. (A synchronous write, such as `console.error`, would
 * block while stderr is full, and also while a log write waits for it.)
 *
 * @example
 * ```ts ignore
 * writeStderrLine("lineserver: Unknown option: --bogus");
 * ```
 */
export function writeStderrLine(text: string): void {
  stderrWriter.write(`${text}\n`);
}

/**
 * Writes the log's last lines: the summaries of folded records due, then
 * waits until everything queued for stderr is written, or `timeoutMs` has
 * passed (stderr may never be read). True when everything was written.
 * Await it before `Deno.exit`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flushLogs } from "./logging.ts";
 * assert.equal(await flushLogs(1000), true);
 * ```
 */
export function flushLogs(timeoutMs = 1000): Promise<boolean> {
  folding?.flush();
  return settleWithin(stderrWriter.idle(), timeoutMs);
}

/**
 * Routes the `lineserver` loggers to stderr at `level` in `format`, as the
 * command does. It replaces the process's whole LogTape configuration. A
 * worker thread passes the main thread's {@linkcode logDropCounter}.
 *
 * @example
 * ```ts ignore
 * configureLogging({ level: "info", format: "json" });
 * ```
 */
export function configureLogging(
  options: {
    level: LogLevel;
    format: LogFormat;
    dropCounter?: SharedArrayBuffer;
  },
): void {
  if (options.dropCounter !== undefined) {
    droppedLines = new BigInt64Array(options.dropCounter);
  }
  formatLine = options.format === "json" ? logJsonFormatter : logTextFormatter;
  resetLogging();
  folding = foldingSink((record) => stderrWriter.write(formatLine(record)));
  configureSync({
    sinks: { stderr: folding },
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

/**
 * Undoes {@linkcode configureLogging}: LogTape's configuration is reset and
 * the sink disposed of (its folded summaries written, its timer stopped).
 * Lines already queued are still written; {@linkcode flushLogs} waits for them.
 *
 * @example
 * ```ts
 * import { configureLogging, flushLogs, resetLogging } from "./logging.ts";
 * configureLogging({ level: "error", format: "text" });
 * resetLogging();
 * await flushLogs();
 * ```
 */
export function resetLogging(): void {
  resetSync();
  folding = undefined;
}

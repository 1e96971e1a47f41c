/**
 * Folding floods: when a client can make the server log the same event as
 * fast as it can connect (a refusal, an invalid PROXY header), the log
 * shows the first few of each second and one line that counts the rest.
 *
 * @module
 */
import type { Clock } from "./timeout_tracker.ts";
import type { LogRecordFields } from "./log_format.ts";

/** The length of a folding window. */
const WINDOW_MS = 1000;

/**
 * Most kinds of record followed at once. Past it a new kind is written
 * unfolded: only messages built with `${...}` instead of placeholders come
 * in that many kinds, and the writer's own bound still holds for them.
 */
const MAX_KINDS = 1000;

/** Options of {@linkcode foldingSink}. */
export interface FoldingSinkOptions {
  /**
   * Records of one kind (the same category, level and message template)
   * written per second; the rest of that second is counted. Default 5.
   */
  perSecond?: number;
  /**
   * Which records may be folded. Default: warnings and errors, and the
   * refusals of clients (a record whose `outcome` property begins with
   * `refused`), which a client can repeat as fast as it can connect. Not
   * the lines of each connection opened and closed, whatever their rate.
   */
  foldable?: (record: LogRecordFields) => boolean;
  /** Time and timers; the default is real time, with a timer that does not keep the process alive. */
  clock?: Clock;
}

/** A sink from {@linkcode foldingSink}. */
export interface FoldingSink extends Disposable {
  /** Takes one record: writes it to the inner sink, or counts it. */
  (record: LogRecordFields): void;
  /** Writes the summary of every window with folded records now, not at its end. */
  flush(): void;
}

/**
 * The default of {@linkcode FoldingSinkOptions.foldable}: what a client can
 * repeat at will. Never the lines of each connection opened and closed,
 * which the log promises one by one (and which the queue of the command's
 * writer bounds if they come too fast).
 */
function isFloodable(record: LogRecordFields): boolean {
  const level = record.level;
  if (level === "warning" || level === "error" || level === "fatal") {
    return true;
  }
  const outcome = record.properties.outcome;
  return typeof outcome === "string" && outcome.startsWith("refused");
}

/** The real clock; its one timer is unref'd, so logging never keeps a process alive. */
const unrefClock: Clock = {
  now: () => performance.now(),
  schedule(callback, ms) {
    const timer = setTimeout(callback, ms);
    Deno.unrefTimer(timer);
    return () => clearTimeout(timer);
  },
};

/** One kind of record in its current window. */
interface Window {
  readonly start: number;
  readonly level: LogRecordFields["level"];
  readonly category: readonly string[];
  readonly template: string;
  written: number;
  folded: number;
  /** Folded records by their `outcome` property, in order of first appearance. */
  readonly byOutcome: Map<string, number>;
}

function templateOf(record: LogRecordFields): string {
  const raw = record.rawMessage;
  return typeof raw === "string" ? raw : raw.join("{}");
}

/**
 * Wraps `inner` so that of each kind of foldable record (the same category,
 * level and message template) at most `perSecond` are written in a second
 * (counted from the first); the rest are counted, and when the second ends
 * one line of the same level says how many, by outcome when they have an
 * `outcome` property:
 * `5 more "connection refused {peer}: {outcome}" in the last second: refused_busy 3, refused_per_ip 2`.
 * The line's properties are `folded`, `template` and `outcomes`.
 *
 * Disposing of it (LogTape does, when it is reconfigured or reset) writes
 * the summaries due, stops its timer and disposes of `inner` if it can be.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { configureSync, getLogger, type LogRecord, resetSync } from "@logtape/logtape";
 * import { foldingSink } from "./log_folding.ts";
 *
 * const written: LogRecord[] = [];
 * configureSync({
 *   sinks: { folded: foldingSink((record) => written.push(record), { perSecond: 2 }) },
 *   loggers: [
 *     { category: "example", lowestLevel: "info", sinks: ["folded"] },
 *     { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
 *   ],
 * });
 * const logger = getLogger("example");
 * for (let i = 0; i < 5; i++) {
 *   logger.info("connection refused {peer}: {outcome}", {
 *     peer: `192.0.2.${i}:4000`,
 *     outcome: i < 4 ? "refused_busy" : "refused_per_ip",
 *   });
 * }
 * assert.equal(written.length, 2);
 * resetSync(); // disposes the sink: the summary is written now
 * assert.equal(
 *   written[2].message.join(""),
 *   '3 more "connection refused {peer}: {outcome}" in the last second: refused_busy 2, refused_per_ip 1',
 * );
 * ```
 */
export function foldingSink(
  inner: (record: LogRecordFields) => void,
  options: FoldingSinkOptions = {},
): FoldingSink {
  const perSecond = options.perSecond ?? 5;
  const foldable = options.foldable ?? isFloodable;
  const clock = options.clock ?? unrefClock;
  /** Windows in the order they started, so those that ended are at the front. */
  const windows = new Map<string, Window>();
  let cancelTimer: (() => void) | undefined;

  const summarize = (window: Window) => {
    if (window.folded === 0) return;
    const counts = [...window.byOutcome].map(([outcome, n]) =>
      `${outcome} ${n}`
    );
    inner({
      category: window.category,
      level: window.level,
      timestamp: Date.now(),
      rawMessage: "{folded} more {template} in the last second",
      message: [
        `${window.folded} more "${window.template}" in the last second${
          counts.length > 0 ? `: ${counts.join(", ")}` : ""
        }`,
      ],
      properties: {
        folded: window.folded,
        template: window.template,
        outcomes: Object.fromEntries(window.byOutcome),
      },
    });
  };

  /** Ends the windows over by `now`: summaries in the order the windows began. */
  const endWindows = (now: number) => {
    for (const [key, window] of windows) {
      if (window.start + WINDOW_MS > now) break;
      windows.delete(key);
      summarize(window);
    }
  };

  const armTimer = () => {
    const first = windows.values().next().value;
    if (cancelTimer !== undefined || first === undefined) return;
    cancelTimer = clock.schedule(() => {
      cancelTimer = undefined;
      endWindows(clock.now());
      armTimer();
    }, Math.max(0, first.start + WINDOW_MS - clock.now()));
  };

  const stopTimer = () => {
    cancelTimer?.();
    cancelTimer = undefined;
  };

  const endAll = () => {
    stopTimer();
    const ending = [...windows.values()];
    windows.clear();
    for (const window of ending) summarize(window);
  };

  const sink = (record: LogRecordFields) => {
    if (!foldable(record)) return inner(record);
    const now = clock.now();
    endWindows(now);
    const template = templateOf(record);
    const key = `${record.level}\0${record.category.join("\0")}\0${template}`;
    let window = windows.get(key);
    if (window === undefined) {
      if (windows.size >= MAX_KINDS) return inner(record);
      window = {
        start: now,
        level: record.level,
        category: record.category,
        template,
        written: 0,
        folded: 0,
        byOutcome: new Map(),
      };
      windows.set(key, window);
      armTimer();
    }
    if (window.written < perSecond) {
      window.written++;
      return inner(record);
    }
    window.folded++;
    const outcome = record.properties.outcome;
    if (outcome !== undefined) {
      const name = String(outcome);
      window.byOutcome.set(name, (window.byOutcome.get(name) ?? 0) + 1);
    }
  };

  return Object.assign(sink, {
    flush: endAll,
    [Symbol.dispose]() {
      endAll();
      (inner as Partial<Disposable>)[Symbol.dispose]?.();
    },
  });
}

/**
 * Unit tests of `foldingSink` (src/log_folding.ts) on a manual clock: which
 * records are written, which are counted, and the summary lines.
 */
import assert from "node:assert/strict";
import type { LogLevel, LogRecord } from "@logtape/logtape";
import { foldingSink } from "../src/log_folding.ts";
import { ManualClock } from "./support/manual_clock.ts";

const REFUSED = "connection refused {peer}: {outcome}";
const PROXY = "closing {peer}: invalid PROXY header: {reason}";

function record(
  template: string,
  properties: Record<string, unknown>,
  level: LogLevel = "info",
): LogRecord {
  return {
    category: ["lineserver"],
    level,
    timestamp: Date.now(),
    rawMessage: template,
    message: [template],
    properties,
  };
}

function refusal(i: number, outcome = "refused_busy"): LogRecord {
  return record(REFUSED, { peer: `192.0.2.${i % 250}:${1000 + i}`, outcome });
}

function badHeader(i: number): LogRecord {
  return record(
    PROXY,
    { peer: `192.0.2.9:${1000 + i}`, reason: "wrong signature" },
    "warning",
  );
}

/** A folding sink over an array, on a manual clock. */
function setUp(perSecond?: number) {
  const clock = new ManualClock();
  const written: LogRecord[] = [];
  const sink = foldingSink((r) => written.push(r), { perSecond, clock });
  return { clock, written, sink };
}

function text(r: LogRecord): string {
  return r.message.join("");
}

Deno.test("folding: 5 refusals a second are written, the rest counted by outcome in one summary at the second's end", () => {
  const { clock, written, sink } = setUp();
  for (let i = 0; i < 1200; i++) sink(refusal(i));
  clock.advance(400);
  for (let i = 0; i < 34; i++) sink(refusal(i, "refused_per_ip"));
  assert.equal(written.length, 5);
  assert.ok(written.every((r) => r.rawMessage === REFUSED));
  clock.advance(599);
  assert.equal(written.length, 5, "nothing before the second is over");
  clock.advance(1);
  assert.equal(written.length, 6);
  const summary = written[5];
  assert.equal(
    text(summary),
    `1229 more "${REFUSED}" in the last second: refused_busy 1195, refused_per_ip 34`,
  );
  assert.equal(summary.level, "info");
  assert.deepEqual(summary.category, ["lineserver"]);
  assert.deepEqual(summary.properties, {
    folded: 1229,
    template: REFUSED,
    outcomes: { refused_busy: 1195, refused_per_ip: 34 },
  });
  // The timer is done; the next second starts afresh with 5 written.
  assert.equal(clock.timers.size, 0);
  for (let i = 0; i < 7; i++) sink(refusal(i));
  assert.equal(written.length, 11);
  clock.advance(1000);
  assert.equal(
    text(written[11]),
    `2 more "${REFUSED}" in the last second: refused_busy 2`,
  );
  sink[Symbol.dispose]();
});

Deno.test("folding: the PROXY warning folds too; its summary has no outcomes", () => {
  const { clock, written, sink } = setUp();
  for (let i = 0; i < 100; i++) sink(badHeader(i));
  clock.advance(1000);
  assert.equal(written.length, 6);
  assert.equal(text(written[5]), `95 more "${PROXY}" in the last second`);
  assert.equal(written[5].level, "warning");
  assert.deepEqual(written[5].properties.outcomes, {});
  sink[Symbol.dispose]();
});

Deno.test("folding: kinds are apart by template and level; each has its own 5 and its own summary", () => {
  const { clock, written, sink } = setUp(2);
  for (let i = 0; i < 4; i++) {
    sink(refusal(i));
    sink(badHeader(i));
    sink(record(PROXY, { peer: "x", reason: "y" }, "error"));
  }
  assert.equal(written.length, 6);
  clock.advance(1000);
  const summaries = written.slice(6).map(text);
  assert.deepEqual(summaries, [
    `2 more "${REFUSED}" in the last second: refused_busy 2`,
    `2 more "${PROXY}" in the last second`,
    `2 more "${PROXY}" in the last second`,
  ]);
  assert.deepEqual(written.slice(6).map((r) => r.level), [
    "info",
    "warning",
    "error",
  ]);
  sink[Symbol.dispose]();
});

Deno.test("folding: a connection's own lines are never folded, whatever their rate", () => {
  const { clock, written, sink } = setUp();
  for (let i = 0; i < 100; i++) {
    sink(record("connection opened {peer}", { peer: `192.0.2.1:${i}` }));
    sink(
      record("connection closed {peer} after {durationMs} ms, {reason}", {
        peer: `192.0.2.1:${i}`,
        reason: "quit",
      }),
    );
    sink(record("line from {peer}: {line}", { line: "x" }, "debug"));
  }
  assert.equal(written.length, 300);
  assert.equal(clock.timers.size, 0, "no window, no timer");
  sink[Symbol.dispose]();
});

Deno.test("folding: a summary is written before the next second's first record, in order", () => {
  const { clock, written, sink } = setUp(1);
  sink(badHeader(1));
  sink(badHeader(2));
  // The second ends with no timer run (a busy event loop runs it late):
  // the next record ends the window first.
  const late = [...clock.timers.values()];
  clock.timers.clear();
  clock.advance(1500);
  sink(badHeader(3));
  assert.deepEqual(written.map(text), [
    PROXY,
    `1 more "${PROXY}" in the last second`,
    PROXY,
  ]);
  // The late timer finds nothing left to say for that window.
  for (const timer of late) timer.callback();
  assert.equal(written.length, 3);
  sink[Symbol.dispose]();
});

Deno.test("folding: flush and dispose write what is pending now; dispose stops the timer and disposes the inner sink", () => {
  const clock = new ManualClock();
  const written: LogRecord[] = [];
  let innerDisposed = 0;
  const inner = Object.assign((r: LogRecord) => void written.push(r), {
    [Symbol.dispose]: () => void innerDisposed++,
  });
  const sink = foldingSink(inner, { clock });
  for (let i = 0; i < 8; i++) sink(refusal(i));
  sink.flush();
  assert.equal(
    text(written[5]),
    `3 more "${REFUSED}" in the last second: refused_busy 3`,
  );
  assert.equal(clock.timers.size, 0);
  // After a flush a new second begins.
  for (let i = 0; i < 7; i++) sink(refusal(i));
  assert.equal(written.length, 11);
  sink[Symbol.dispose]();
  assert.equal(
    text(written[11]),
    `2 more "${REFUSED}" in the last second: refused_busy 2`,
  );
  assert.equal(clock.timers.size, 0);
  assert.equal(innerDisposed, 1);
});

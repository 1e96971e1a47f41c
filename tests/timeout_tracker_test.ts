/** Unit tests of the single-timer timeout tracker, on a manual clock. */
import assert from "node:assert/strict";
import { TimeoutTracker } from "../src/timeout_tracker.ts";
import { ManualClock } from "./support/manual_clock.ts";

function tracker(timeoutMs: number) {
  const clock = new ManualClock();
  const expired: string[] = [];
  const timeouts = new TimeoutTracker<string>(
    timeoutMs,
    (target) => expired.push(`${target}@${clock.now()}`),
    clock,
  );
  return { clock, expired, timeouts };
}

Deno.test("timeout tracker: silent targets expire at their deadline, in order; restarted ones are spared", () => {
  const { clock, expired, timeouts } = tracker(80);
  timeouts.start("a");
  clock.advance(10);
  timeouts.start("b");
  timeouts.start("c");
  for (let i = 0; i < 4; i++) {
    clock.advance(40);
    timeouts.start("b"); // b keeps talking
  }
  assert.deepEqual(expired, ["a@1080", "c@1090"]);
  assert.equal(clock.timers.size, 1, "b's clock still runs");
  timeouts.stop("b");
  assert.equal(
    clock.timers.size,
    0,
    "no timer is left once nothing is tracked",
  );
});

Deno.test("timeout tracker: nothing expires a moment before the deadline", () => {
  const { clock, expired, timeouts } = tracker(100);
  timeouts.start("a");
  clock.advance(99);
  assert.deepEqual(expired, []);
  clock.advance(1);
  assert.deepEqual(expired, ["a@1100"]);
  clock.advance(1000);
  assert.deepEqual(expired, ["a@1100"], "an expired target is not tracked");
});

Deno.test("timeout tracker: a stopped target never expires", () => {
  const { clock, expired, timeouts } = tracker(30);
  timeouts.start("a");
  timeouts.start("b");
  timeouts.stop("a");
  clock.advance(1000);
  assert.deepEqual(expired, ["b@1030"]);
});

Deno.test("timeout tracker: at most one timer is armed, however many targets", () => {
  const { clock, timeouts } = tracker(50);
  for (let i = 0; i < 100; i++) timeouts.start(`t${i}`);
  assert.equal(clock.timers.size, 1);
});

Deno.test("timeout tracker: rejects a timeout that is not positive", () => {
  assert.throws(() => new TimeoutTracker(0, () => {}), RangeError);
});

Deno.test("timeout tracker: an onExpire that throws does not stop the other timeouts, due now or later", () => {
  const clock = new ManualClock();
  const expired: string[] = [];
  const timeouts = new TimeoutTracker<string>(100, (target) => {
    expired.push(`${target}@${clock.now()}`);
    if (target === "throws") throw new Error("onExpire failed on purpose");
  }, clock);
  timeouts.start("first");
  timeouts.start("throws");
  timeouts.start("same deadline");
  clock.advance(50);
  timeouts.start("later");
  // The error is not swallowed: it leaves the timer's callback, as an
  // exception thrown by a timer's callback would, once every due target has expired.
  assert.throws(() => clock.advance(50), /onExpire failed on purpose/);
  assert.deepEqual(expired, [
    "first@1100",
    "throws@1100",
    "same deadline@1100",
  ]);
  assert.equal(clock.timers.size, 1, "the timer is armed for the next target");
  clock.advance(50);
  assert.deepEqual(expired.slice(3), ["later@1150"]);
  timeouts.start("after");
  clock.advance(100);
  assert.deepEqual(expired.slice(4), ["after@1250"]);
});

Deno.test("timeout tracker: an onExpire that restarts its target leaves one timer armed, none once stopped", () => {
  const clock = new ManualClock();
  const expired: string[] = [];
  const timeouts = new TimeoutTracker<string>(100, (target) => {
    expired.push(`${target}@${clock.now()}`);
    timeouts.start(target);
  }, clock);
  timeouts.start("repeating");
  clock.advance(50);
  timeouts.start("other");
  clock.advance(50);
  assert.deepEqual(expired, ["repeating@1100"]);
  assert.equal(clock.timers.size, 1);
  timeouts.stop("repeating");
  timeouts.stop("other");
  assert.equal(
    clock.timers.size,
    0,
    "no timer is left once nothing is tracked",
  );
});

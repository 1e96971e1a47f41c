/** Unit tests of the server's single-timer idle tracker. */
import assert from "node:assert/strict";
import { IdleTracker } from "../src/idle_tracker.ts";
import { delay } from "./support/deadline.ts";

function target(log: string[], name: string) {
  return { onIdleTimeout: () => log.push(name) };
}

Deno.test("idle tracker: silent targets expire in order, active ones are spared", async () => {
  const tracker = new IdleTracker(80);
  const log: string[] = [];
  const a = target(log, "a");
  const b = target(log, "b");
  const c = target(log, "c");
  tracker.touch(a);
  tracker.touch(b);
  tracker.touch(c);
  for (let i = 0; i < 4; i++) {
    await delay(40);
    tracker.touch(b); // b keeps talking
  }
  assert.deepEqual(log, ["a", "c"]);
  tracker.remove(b); // the last target: no timer may be left behind
});

Deno.test("idle tracker: expiry happens near the timeout, not before", async () => {
  const tracker = new IdleTracker(100);
  const started = Date.now();
  const expiredAt = await new Promise<number>((resolve) =>
    tracker.touch({ onIdleTimeout: () => resolve(Date.now()) })
  );
  const elapsed = expiredAt - started;
  assert.ok(elapsed >= 100 && elapsed < 600, `expired after ${elapsed} ms`);
});

Deno.test("idle tracker: a removed target never expires", async () => {
  const tracker = new IdleTracker(30);
  const log: string[] = [];
  const a = target(log, "a");
  tracker.touch(a);
  tracker.remove(a);
  await delay(60);
  assert.deepEqual(log, []);
});

Deno.test("idle tracker: rejects a timeout that is not positive", () => {
  assert.throws(() => new IdleTracker(0), RangeError);
});

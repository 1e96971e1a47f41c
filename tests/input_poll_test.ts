/**
 * The input poll: callbacks run in order once the event loop has looked for
 * input, through the loopback datagram while a server holds the socket and
 * through timers without it (no socket, or no permission to bind one). The
 * socket is closed when the last user closes it (the sanitizers check).
 */
import assert from "node:assert/strict";
import { InputPoll } from "../src/input_poll.ts";
import { withTimeout } from "./support/deadline.ts";

function afterAll(poll: InputPoll, count: number): Promise<number[]> {
  const order: number[] = [];
  return new Promise((resolve) => {
    for (let i = 0; i < count; i++) {
      poll.after(() => {
        order.push(i);
        if (order.length === count) resolve(order);
      });
    }
  });
}

Deno.test("input poll: callbacks run in order, through the datagram socket while it is open", async () => {
  const poll = new InputPoll();
  await poll.open();
  await poll.open(); // a second server shares it
  assert.ok(poll.bound, "the datagram socket is open");
  try {
    const order = await withTimeout(afterAll(poll, 3), 2000, "the callbacks");
    assert.deepEqual(order, [0, 1, 2]);
    // A callback may ask for the next look.
    const again = new Promise<void>((resolve) =>
      poll.after(() => poll.after(resolve))
    );
    await withTimeout(again, 2000, "the callback queued from a callback");
    await poll.close(); // one user left: still open
    assert.ok(poll.bound);
    assert.deepEqual(
      await withTimeout(afterAll(poll, 2), 2000, "the callbacks"),
      [0, 1],
    );
  } finally {
    await poll.close();
  }
  assert.equal(poll.bound, false, "the last user closed the socket");
});

Deno.test("input poll: without a socket, timers do the same", async () => {
  const poll = new InputPoll();
  assert.deepEqual(
    await withTimeout(afterAll(poll, 2), 2000, "the callbacks"),
    [0, 1],
  );
});

Deno.test({
  name:
    "input poll: without permission to bind on 127.0.0.1 it neither prompts nor fails, and timers do",
  permissions: { net: ["127.0.0.1:7"] },
  async fn() {
    const poll = new InputPoll();
    await poll.open();
    assert.equal(poll.bound, false);
    try {
      assert.deepEqual(
        await withTimeout(afterAll(poll, 2), 2000, "the callbacks"),
        [0, 1],
      );
    } finally {
      await poll.close();
    }
  },
});

/**
 * Unit tests of `NonBlockingWriter` (src/log_writer.ts) over a fake stream
 * that the test lets read, or not.
 */
import assert from "node:assert/strict";
import { NonBlockingWriter } from "../src/log_writer.ts";

const decoder = new TextDecoder();

/**
 * A stream whose reader is stuck until `read()` lets one write through (or
 * `unwedge()` lets all through). Each write may take at most `chunk` bytes.
 */
class FakeStream {
  readonly writes: string[] = [];
  #waiting: (() => void)[] = [];
  #wedged = true;
  failing = false;

  constructor(readonly chunk = Infinity) {}

  write = async (bytes: Uint8Array): Promise<number> => {
    if (this.#wedged) await new Promise<void>((r) => this.#waiting.push(r));
    if (this.failing) throw new Error("broken pipe");
    const n = Math.min(bytes.length, this.chunk);
    this.writes.push(decoder.decode(bytes.subarray(0, n)));
    return n;
  };

  unwedge() {
    this.#wedged = false;
    for (const wake of this.#waiting.splice(0)) wake();
  }

  get text(): string {
    return this.writes.join("");
  }
}

const notice = (n: number) => `[${n} dropped]\n`;

Deno.test("writer: a line is queued at once and never waited for; lines come out in order", async () => {
  const stream = new FakeStream();
  const writer = new NonBlockingWriter(stream.write, {
    droppedNotice: notice,
  });
  const lines = Array.from({ length: 100 }, (_, i) => `line ${i}\n`);
  for (const line of lines) assert.equal(writer.write(line), true);
  assert.equal(
    stream.writes.length,
    0,
    "nothing written while the reader is stuck",
  );
  stream.unwedge();
  await writer.idle();
  assert.equal(stream.text, lines.join(""));
  // The first line went alone, the rest queued behind it went in one write.
  assert.equal(stream.writes.length, 2);
  assert.equal(writer.dropped, 0);
});

Deno.test("writer: past its byte bound it drops and counts, and says so where the gap is once writing resumes", async () => {
  const dropped: number[] = [];
  const stream = new FakeStream();
  const writer = new NonBlockingWriter(stream.write, {
    maxQueuedBytes: 100,
    droppedNotice: notice,
    onDrop: (n) => dropped.push(n),
  });
  const accepted: string[] = [];
  for (let i = 0; i < 1000; i++) {
    const line = `line ${String(i).padStart(4, "0")}\n`; // 10 bytes
    if (writer.write(line)) accepted.push(line);
  }
  assert.equal(accepted.length, 10, "100 bytes held: 10 lines of 10 bytes");
  assert.equal(writer.dropped, 990);
  assert.equal(dropped.length, 990);
  stream.unwedge();
  await writer.idle();
  assert.equal(stream.text, accepted.join("") + "[990 dropped]\n");
  // Writing again, new lines are accepted, after the notice.
  assert.equal(writer.write("after\n"), true);
  await writer.idle();
  assert.ok(stream.text.endsWith("[990 dropped]\nafter\n"));
});

Deno.test("writer: once dropping, even a line that would fit is dropped until a write makes progress", async () => {
  const stream = new FakeStream();
  const writer = new NonBlockingWriter(stream.write, {
    maxQueuedBytes: 10,
    droppedNotice: notice,
  });
  assert.equal(writer.write("123456\n"), true);
  assert.equal(writer.write("12345678\n"), false);
  assert.equal(
    writer.write("1\n"),
    false,
    "it would fit, but comes after a gap",
  );
  stream.unwedge();
  await writer.idle();
  assert.equal(stream.text, "123456\n[2 dropped]\n");
});

Deno.test("writer: a line longer than the bound is written when nothing else is held", async () => {
  const stream = new FakeStream();
  const writer = new NonBlockingWriter(stream.write, {
    maxQueuedBytes: 10,
    droppedNotice: notice,
  });
  const long = "x".repeat(50) + "\n";
  assert.equal(writer.write(long), true);
  assert.equal(writer.write("y\n"), false);
  stream.unwedge();
  await writer.idle();
  assert.equal(stream.text, long + "[1 dropped]\n");
});

Deno.test("writer: partial writes continue where they stopped; the notice follows the whole batch", async () => {
  const stream = new FakeStream(7);
  const writer = new NonBlockingWriter(stream.write, {
    maxQueuedBytes: 30,
    droppedNotice: notice,
  });
  writer.write("first line\n");
  writer.write("second line\n");
  writer.write("third line is too long\n");
  stream.unwedge();
  await writer.idle();
  assert.equal(stream.text, "first line\nsecond line\n[1 dropped]\n");
  assert.ok(stream.writes.every((w) => w.length <= 7));
});

Deno.test("writer: failed writes lose their lines, counted, without a notice that would fail again", async () => {
  const stream = new FakeStream();
  stream.failing = true;
  const writer = new NonBlockingWriter(stream.write, {
    droppedNotice: notice,
  });
  writer.write("a\n");
  writer.write("b\nc\n");
  stream.unwedge();
  await writer.idle();
  assert.equal(writer.dropped, 3);
  assert.equal(stream.writes.length, 0);
  // The reader is back: the next line is written, with no stale notice.
  stream.failing = false;
  writer.write("d\n");
  await writer.idle();
  assert.equal(stream.text, "d\n");
});

Deno.test("writer: idle() is immediate with nothing queued, and waits for every line queued before it", async () => {
  const stream = new FakeStream();
  const writer = new NonBlockingWriter(stream.write, {
    droppedNotice: notice,
  });
  await writer.idle();
  writer.write("one\n");
  let idle = false;
  const waiting = writer.idle().then(() => idle = true);
  await Promise.resolve();
  assert.equal(idle, false);
  stream.unwedge();
  await waiting;
  assert.equal(stream.text, "one\n");
});

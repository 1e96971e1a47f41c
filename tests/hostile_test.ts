/**
 * Hostile input: several clients at once send random bytes (NUL,
 * 0xFF, lone CR, broken UTF-8, lines far over the limit, lines at the limit,
 * bursts of LF) for a few seconds. Every complete line still gets exactly one
 * reply in order, over-long lines are answered in their place, a normal
 * client is served promptly throughout and exactly afterwards, and the
 * server's resident memory stays bounded.
 *
 * Seeded: the seed is printed; rerun with HOSTILE_SEED=<seed> to reproduce.
 */
import assert from "node:assert/strict";
import { delay, withTimeout } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  connectGreeted,
  hasProc,
  rssBytes,
  WELCOME,
} from "./support/hardening.ts";
import { prng } from "../bench/traffic.ts";

const MAX_LINE = 1024;
const CLIENTS = 6;
const DURATION_MS = 3000;
const MiB = 1024 * 1024;
const LF = 10;
const CR = 13;
const LINE_TOO_LONG = `ERROR. Line too long (max ${MAX_LINE} bytes)`;
const encoder = new TextEncoder();

/** Every reply the calculator may give to arbitrary input (besides the welcome). */
const ALLOWED = [
  /^ERROR\. Enter only integers separated by commas$/,
  /^Sum of input integers: '-?\d+'$/,
  /^Product of input integers: '-?\d+'$/,
  /^<switching to (sum|product) mode>$/,
  /^Commands: sum, product, quit, help\. Or send integers separated by commas, e\.g\. 1,2,4$/,
];

/** Random bytes; `q` is avoided so no random line can ever be `quit`. */
function randomBytes(
  rand: () => number,
  length: number,
  lf = true,
): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    let byte = Math.floor(rand() * 256);
    if (byte === 0x71) byte = 0x51;
    if (!lf && byte === LF) byte = 0x20;
    out[i] = byte;
  }
  return out;
}

/**
 * One piece of hostile traffic: `parts` are written one after another with a
 * short pause between them (so that they arrive in separate reads), the whole
 * `repeat` times in a row.
 */
interface Piece {
  parts: Uint8Array[];
  repeat: number;
}

function hostilePiece(rand: () => number, monsterSent: boolean): Piece {
  const int = (n: number) => Math.floor(rand() * n);
  const one = (...parts: (Uint8Array | string)[]): Piece => ({
    parts: parts.map((p) => typeof p === "string" ? encoder.encode(p) : p),
    repeat: 1,
  });
  switch (int(9)) {
    case 0: // random bytes, LFs included at random
      return one(randomBytes(rand, 1 + int(8192)));
    case 1: // NUL and 0xFF runs
      return one(
        Uint8Array.from(
          { length: 1 + int(3000) },
          () => [0, 0xff, 0, LF, CR, 0xfe][int(6)],
        ),
      );
    case 2: // lone CRs inside and around numbers
      return one(
        ["1\r2\n", "\r\r\r\n", "1,2\r\r\n", "\r1,2\n", "3\r,4\n"][int(5)],
      );
    case 3: // a line far over the limit (no LF inside), sometimes ended
      return one(
        Uint8Array.from([
          ...randomBytes(rand, MAX_LINE + 1 + int(200_000), false),
          ...(int(2) ? [LF] : []),
        ]),
      );
    case 4: // a burst of LF (empty lines)
      return one(new Uint8Array(1 + int(3000)).fill(LF));
    case 5: { // lines right at the limit, with LF or CRLF, maybe split before the LF
      const length = MAX_LINE - 1 + int(3);
      const body = new Uint8Array(length).fill(0x37); // "7777..."
      const line = Uint8Array.from([...body, ...(int(2) ? [CR, LF] : [LF])]);
      return int(2) ? one(line) : one(
        line.subarray(0, line.length - 1),
        line.subarray(line.length - 1),
      );
    }
    case 6: // valid and broken UTF-8, a character split across two reads
      return one(
        Uint8Array.of(0x31, 0xe2, 0x82),
        Uint8Array.of([0xac, 0xff, 0xc0][int(3)], 0xf0, 0x9f, LF),
      );
    case 7: // well-formed requests mixed in
      return one(
        [
          "1,2,4\n",
          "product\n",
          "sum\n",
          "help\n",
          "-5,+5\r\n",
          "1_000,2\n",
        ][int(6)],
      );
    default: // once per client: a monster line of ~8 MB (dropped as it arrives)
      if (monsterSent) return one("\n");
      return { parts: [randomBytes(rand, 65536, false)], repeat: 128 };
  }
}

/**
 * What the server must answer, computed from what was sent: one reply per LF,
 * `tooLong[i]` says whether line i exceeds the limit (raw bytes, terminator
 * and a CR right before the LF excluded).
 */
class ExpectedReplies {
  tooLong: boolean[] = [];
  #lineBytes = 0;
  #lastWasCr = false;

  feed(bytes: Uint8Array) {
    for (const byte of bytes) {
      if (byte === LF) {
        const raw = this.#lineBytes - (this.#lastWasCr ? 1 : 0);
        this.tooLong.push(raw > MAX_LINE);
        this.#lineBytes = 0;
        this.#lastWasCr = false;
      } else {
        this.#lineBytes++;
        this.#lastWasCr = byte === CR;
      }
    }
  }
}

/** Reads every reply line until EOF, checking CRLF, and returns them. */
async function collectReplies(conn: Deno.TcpConn): Promise<string[]> {
  const lines: string[] = [];
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(65536);
  let partial = "";
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) break;
      throw error;
    }
    if (n === null) break;
    partial += decoder.decode(buffer.subarray(0, n), { stream: true });
    const parts = partial.split("\n");
    partial = parts.pop()!;
    for (const part of parts) {
      if (!part.endsWith("\r")) {
        throw new Error(`Reply not ended by CRLF: ${JSON.stringify(part)}`);
      }
      lines.push(part.slice(0, -1));
    }
  }
  if (partial !== "") {
    throw new Error(
      `Unterminated bytes before EOF: ${JSON.stringify(partial)}`,
    );
  }
  return lines;
}

/** Runs one hostile client for `DURATION_MS`, then checks every reply. */
async function hostileClient(port: number, seed: number, id: number) {
  const rand = prng(seed + id * 7919);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const expected = new ExpectedReplies();
  const replies = collectReplies(conn);
  replies.catch(() => {}); // awaited below; avoid an early unhandled rejection
  try {
    const send = async (bytes: Uint8Array) => {
      expected.feed(bytes);
      let rest = bytes;
      while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
    };
    const started = Date.now();
    let monsterSent = false;
    while (Date.now() - started < DURATION_MS) {
      const piece = hostilePiece(rand, monsterSent);
      if (piece.repeat > 1) monsterSent = true;
      for (let i = 0; i < piece.repeat; i++) {
        for (const [n, part] of piece.parts.entries()) {
          if (n > 0) await delay(2);
          await send(part);
        }
      }
      if (rand() < 0.1) await delay(Math.floor(rand() * 5));
    }
    await send(Uint8Array.of(LF)); // end whatever line is open
    await conn.closeWrite();
    const got = await withTimeout(replies, 15000, `client ${id}: all replies`);

    assert.equal(got[0], WELCOME, `client ${id}: first line`);
    const answers = got.slice(1);
    assert.equal(
      answers.length,
      expected.tooLong.length,
      `client ${id}: one reply per line (seed ${seed})`,
    );
    for (const [i, answer] of answers.entries()) {
      if (expected.tooLong[i]) {
        assert.equal(
          answer,
          LINE_TOO_LONG,
          `client ${id}, line ${i} (seed ${seed})`,
        );
      } else {
        assert.ok(
          ALLOWED.some((pattern) => pattern.test(answer)),
          `client ${id}, line ${i}: unexpected reply ${
            JSON.stringify(answer)
          } (seed ${seed})`,
        );
      }
    }
    return expected.tooLong.length;
  } finally {
    conn.close();
    await replies.catch(() => {});
  }
}

/** The calculator transcript, each reply within 2 s. */
async function normalTranscript(client: LineClient) {
  const steps: [string, string][] = [
    ["1,2,4\n", "Sum of input integers: '7'"],
    ["product\r\n", "<switching to product mode>"],
    ["3,4\n", "Product of input integers: '12'"],
    ["sum\n", "<switching to sum mode>"],
    ["hello\n", "ERROR. Enter only integers separated by commas"],
  ];
  for (const [request, reply] of steps) {
    await client.send(request);
    assert.equal(await client.readLine(2000), reply);
  }
}

Deno.test({
  name:
    "hostile input: random bytes from many clients; exact replies; bounded memory",
  ignore: !hasProc(),
  async fn() {
    const seed = Number(Deno.env.get("HOSTILE_SEED") ?? Date.now() % 2 ** 31);
    console.log(`hostile seed ${seed} (rerun: HOSTILE_SEED=${seed})`);
    const server = await ServerProcess.start([
      "--port",
      "0",
      "--max-line-bytes",
      String(MAX_LINE),
      "--log-level",
      "warning",
    ]);
    const pid = server.child.pid;
    let attack: Promise<number[]> | undefined;
    try {
      const warm = await connectGreeted(server.port);
      try {
        await normalTranscript(warm);
      } finally {
        warm.close();
      }
      const baseline = await rssBytes(pid);
      let peak = baseline;

      let running = true;
      attack = Promise.all(
        Array.from(
          { length: CLIENTS },
          (_, id) => hostileClient(server.port, seed, id),
        ),
      ).finally(() => running = false);
      attack.catch(() => {}); // awaited below

      // Meanwhile a normal client is served promptly.
      const during = await connectGreeted(server.port);
      try {
        while (running) {
          await normalTranscript(during);
          peak = Math.max(peak, await rssBytes(pid));
          await delay(100);
        }
      } finally {
        during.close();
      }
      const lines = await attack;
      peak = Math.max(peak, await rssBytes(pid));

      // Afterwards: the exact transcript, up to quit and EOF.
      const after = await connectGreeted(server.port);
      try {
        await normalTranscript(after);
        await after.send("quit\n");
        assert.equal(await after.readToEnd(2000), "connection closed\r\n");
      } finally {
        after.close();
      }
      const growth = peak - baseline;
      console.log(
        `hostile: ${lines.reduce((a, b) => a + b, 0)} lines answered; ` +
          `RSS growth ${(growth / MiB).toFixed(1)} MiB`,
      );
      assert.ok(
        growth < 100 * MiB,
        `server RSS grew by ${(growth / MiB).toFixed(1)} MiB (seed ${seed})`,
      );
      assert.equal(server.exited, undefined);
      assert.doesNotMatch(
        server.stderr,
        /^\s+at /m,
        "a stack trace was logged",
      );
    } finally {
      await server.stop();
      await attack?.catch(() => {});
    }
  },
});

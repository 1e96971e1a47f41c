/**
 * Chat fan-out: how many chat lines per second one server delivers when a
 * few members talk to a room of many.
 *
 * The server runs in a child process (this same file, with `--serve`), so
 * that the clients' work is not counted against it. 100 members join; a few
 * of them (the senders) pipeline messages in batches; every member counts
 * the lines it receives. The senders hold back whenever any member is more
 * than a window of lines behind, so that no member is ever close to the
 * server's 1 MiB slow-consumer bound: what is measured is delivery, not
 * disconnection. Loopback only, bounded in time and in count. Prints one
 * line of JSON.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read bench/chat_fanout.ts [--members=100] [--senders=4] [--seconds=3]
 * ```
 *
 * @module
 */
import { createChatProtocol, startServer } from "../mod.ts";

const HOST = "127.0.0.1";
/** Messages per write of a sender (pipelined). */
const BATCH = 50;
/** Most lines any member may be behind before the senders wait (about 40 bytes each). */
const WINDOW = 4000;
/** The run stops after this many messages, whatever the time. */
const MAX_MESSAGES = 2_000_000;
/** How long setup and the final drain may take before the run fails. */
const SETUP_TIMEOUT_MS = 20_000;
const LF = 10;

interface Options {
  members: number;
  senders: number;
  seconds: number;
}

function parseOptions(args: string[]): Options {
  const options: Options = { members: 100, senders: 4, seconds: 3 };
  for (const arg of args) {
    const match = /^--(members|senders|seconds)=(\d+(?:\.\d+)?)$/.exec(arg);
    if (!match) throw new Error(`Cannot parse option: received ${arg}`);
    options[match[1] as keyof Options] = Number(match[2]);
  }
  if (!(options.senders >= 1 && options.senders < options.members)) {
    throw new Error("Cannot run: expected 1 <= senders < members");
  }
  if (!(options.seconds > 0 && options.seconds <= 60)) {
    throw new Error("Cannot run: expected 0 < seconds <= 60");
  }
  return options;
}

/** The child: a chat server on a free port; prints the port, stops when stdin closes. */
async function serve(): Promise<void> {
  const server = await startServer({
    hostname: HOST,
    port: 0,
    protocol: createChatProtocol(),
  });
  console.log(`port ${server.addr.port}`);
  for await (const _ of Deno.stdin.readable) {
    // Nothing is expected; the parent closes stdin to stop us.
  }
  await server.shutdown();
}

/** One member: counts the lines it receives, writes what it is told to. */
class Member {
  readonly conn: Deno.TcpConn;
  /** Lines received since it connected (its welcome included). */
  received = 0;
  /** Messages it has sent (senders only). */
  sent = 0;
  ended = false;
  readonly reading: Promise<void>;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.reading = this.#read();
  }

  async #read() {
    const buffer = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        for (let i = 0; i < n; i++) if (buffer[i] === LF) this.received++;
      }
    } catch {
      // A reset: counted as ended below.
    }
    this.ended = true;
  }

  async write(bytes: Uint8Array) {
    while (bytes.length > 0) {
      bytes = bytes.subarray(await this.conn.write(bytes));
    }
  }
}

/** Polls `condition` every millisecond; fails after `timeoutMs`. */
async function until(
  what: string,
  condition: () => boolean,
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

async function measure(options: Options) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-net=${HOST}`, import.meta.filename!, "--serve"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const members: Member[] = [];
  try {
    const port = await readPort(child.stdout);
    for (let i = 0; i < options.members; i++) {
      members.push(new Member(await Deno.connect({ hostname: HOST, port })));
    }
    // Member i gets its welcome and the joins of everyone after it.
    const expectedAtStart = (i: number) => options.members - i;
    await until(
      "every member to hear every join",
      () => members.every((m, i) => m.received === expectedAtStart(i)),
      SETUP_TIMEOUT_MS,
    );
    const base = members.map((m) => m.received);
    const senders = members.slice(0, options.senders);
    let messages = 0;
    /** Lines member i is owed but has not received yet. */
    const behind = (i: number) =>
      messages - members[i].sent - (members[i].received - base[i]);
    const mostBehind = () => {
      let most = 0;
      for (let i = 0; i < members.length; i++) {
        most = Math.max(most, behind(i));
      }
      return most;
    };

    const started = performance.now();
    const stopAt = started + options.seconds * 1000;
    const delivered = () =>
      members.reduce((sum, m, i) => sum + m.received - base[i], 0);
    let stopped = false;
    const sending = senders.map(async (sender, s) => {
      let next = 0;
      while (!stopped && messages < MAX_MESSAGES) {
        if (mostBehind() + BATCH * options.senders > WINDOW) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          continue;
        }
        let text = "";
        for (let k = 0; k < BATCH; k++) text += `s${s} m${next++} fan-out\n`;
        sender.sent += BATCH;
        messages += BATCH;
        await sender.write(new TextEncoder().encode(text));
      }
    });
    await until(
      "the run to end",
      () => performance.now() >= stopAt || messages >= MAX_MESSAGES,
      options.seconds * 1000 + SETUP_TIMEOUT_MS,
    );
    const elapsedMs = performance.now() - started;
    const deliveredInRun = delivered();
    stopped = true;
    await Promise.all(sending);
    // Everything sent must arrive; a member that ended was disconnected.
    await until(
      "every line to be delivered",
      () => members.every((m, i) => m.ended || behind(i) === 0),
      SETUP_TIMEOUT_MS,
    );
    return {
      benchmark: "chat_fanout",
      members: options.members,
      senders: options.senders,
      seconds: Math.round(elapsedMs) / 1000,
      messagesSent: messages,
      linesDelivered: deliveredInRun,
      linesPerSecond: Math.round(deliveredInRun / (elapsedMs / 1000)),
      messagesPerSecond: Math.round(
        deliveredInRun / (options.members - 1) / (elapsedMs / 1000),
      ),
      membersDisconnected: members.filter((m) => m.ended).length,
    };
  } finally {
    for (const member of members) {
      try {
        member.conn.close();
      } catch {
        // Already closed.
      }
    }
    await Promise.allSettled(members.map((m) => m.reading));
    await child.stdin.close();
    await child.status;
  }
}

/** Reads `port N` from the child's stdout, then lets the rest drain. */
async function readPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("The chat server exited before listening");
    text += value;
  }
  await reader.cancel();
  const match = /^port (\d+)$/m.exec(text);
  if (!match) throw new Error(`Cannot read the port: received ${text}`);
  return Number(match[1]);
}

if (import.meta.main) {
  if (Deno.args[0] === "--serve") {
    await serve();
  } else {
    console.log(JSON.stringify(await measure(parseOptions(Deno.args))));
  }
}

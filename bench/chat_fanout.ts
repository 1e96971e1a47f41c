/**
 * Chat fan-out: how many chat lines per second the room delivers when a few
 * members talk to many, and how long a line takes to arrive; for the room
 * of one process and for one room over two instances on Redis, in the same
 * run.
 *
 * Each server runs in a child process (this same file, with `--serve`), so
 * that the clients' work is not counted against it; with Redis, a
 * `redis-server` without persistence on a free port. Members join one at a
 * time, spread over the instances; a few of them (the senders, spread too)
 * send messages; every member counts the lines it receives, and a few
 * (the probes) read each message's send time to measure delivery latency.
 *
 * Two measurements per room: the most it delivers (senders pipeline in
 * batches, holding back whenever any member is more than a window of lines
 * behind, so that nobody nears the 1 MiB slow-consumer bound: delivery is
 * measured, not disconnection), then latency at a fixed offered rate, 10%
 * of what the room over Redis delivered. Loopback only, bounded in time and
 * count. Prints one line of JSON per measurement.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-run --allow-read bench/chat_fanout.ts [--members=100] [--senders=4] [--seconds=3] [--rooms=local,redis] [--rate=MESSAGES_PER_S]
 * ```
 *
 * @module
 */
import { createChatProtocol, startServer } from "../mod.ts";
import { RedisChatRoom } from "../src/chat_redis.ts";
import { clockTicks, coreBusy, cpuSnapshot } from "./machine.ts";
import { Member, percentile, type Room, startRoom } from "./chat_rooms.ts";

/** Messages per write of a sender at full speed (pipelined). */
const BATCH = 50;
/** Most lines any member may be behind before the senders wait (about 40 bytes each). */
const WINDOW = 4000;
/** A run stops after this many messages, whatever the time. */
const MAX_MESSAGES = 2_000_000;
/** How long setup and the final drain may take before the run fails. */
const SETUP_TIMEOUT_MS = 30_000;
/** Members that time every message they receive. */
const PROBES = 8;
/** The offered rate of the latency runs, as a share of the Redis room's most. */
const LATENCY_LOAD = 0.1;

interface Options {
  /** Members per instance. */
  members: number;
  senders: number;
  seconds: number;
  rooms: ("local" | "redis")[];
  /** Offered messages/s of the latency runs; 0: 10% of the Redis room's most. */
  rate: number;
}

function parseOptions(args: string[]): Options {
  const options: Options = {
    members: 100,
    senders: 4,
    seconds: 3,
    rooms: ["local", "redis"],
    rate: 0,
  };
  for (const arg of args) {
    const number = /^--(members|senders|seconds|rate)=(\d+(?:\.\d+)?)$/.exec(
      arg,
    );
    const rooms = /^--rooms=((?:local|redis)(?:,(?:local|redis))*)$/.exec(arg);
    if (number) options[number[1] as "members"] = Number(number[2]);
    else if (rooms) options.rooms = rooms[1].split(",") as Options["rooms"];
    else throw new Error(`Cannot parse option: received ${arg}`);
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
async function serve(redisUrl?: string): Promise<void> {
  const room = redisUrl === undefined
    ? undefined
    : await RedisChatRoom.connect({ url: redisUrl, room: "bench" });
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    protocol: createChatProtocol({ room }),
  });
  console.log(`port ${server.addr.port}`);
  for await (const _ of Deno.stdin.readable) {
    // Nothing is expected; the parent closes stdin to stop us.
  }
  await server.shutdown();
  await room?.close();
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

/**
 * One measurement on a room whose members have joined: at full speed when
 * `rate` is undefined, else `rate` messages per second in all.
 */
async function measure(
  room: Room,
  members: Member[],
  options: Options,
  rate?: number,
) {
  const base = members.map((m) => m.received);
  for (const member of members) {
    member.sent = 0;
    member.latencies.length = 0;
  }
  // Senders are spread over the instances: member i is on instance i % n.
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
  const processes = [
    ...room.pids.instances,
    ...(room.pids.redis ? [room.pids.redis] : []),
    Deno.pid,
  ];
  const cpuBefore = await cpuSnapshot(processes);
  const started = performance.now();
  const stopAt = started + options.seconds * 1000;
  let stopped = false;
  const sending = senders.map(async (sender, s) => {
    let next = 0;
    /** Messages this sender owes to the offered rate so far. */
    const due = () =>
      Math.floor((performance.now() - started) / 1000 * rate! / senders.length);
    while (!stopped && messages < MAX_MESSAGES) {
      const count = rate === undefined ? BATCH : Math.min(due() - next, BATCH);
      const held = rate === undefined
        ? mostBehind() + BATCH * senders.length > WINDOW
        : count <= 0;
      if (held) {
        await new Promise((resolve) => setTimeout(resolve, rate ? 1 : 0));
        continue;
      }
      let text = "";
      const now = Math.round(performance.now() * 1000);
      for (let k = 0; k < count; k++) text += `s${s} m${next++} ${now} fan\n`;
      sender.sent += count;
      messages += count;
      await sender.write(new TextEncoder().encode(text));
    }
  });
  await until(
    "the run to end",
    () => performance.now() >= stopAt || messages >= MAX_MESSAGES,
    options.seconds * 1000 + SETUP_TIMEOUT_MS,
  );
  const elapsedMs = performance.now() - started;
  const cpuAfter = await cpuSnapshot(processes);
  const ticks = await clockTicks();
  const share = (x: number) => Math.round(x * 100) / 100;
  /** Share of one CPU each process used in the window. */
  const busy = cpuAfter.processTicks.map((after, i) =>
    share((after - cpuBefore.processTicks[i]) / ticks / (elapsedMs / 1000))
  );
  const delivered = members.reduce(
    (sum, m, i) => sum + m.received - base[i],
    0,
  );
  stopped = true;
  await Promise.all(sending);
  // Everything sent must arrive; a member that ended was disconnected.
  await until(
    "every line to be delivered",
    () => members.every((m, i) => m.ended || behind(i) === 0),
    SETUP_TIMEOUT_MS,
  );
  const latencies = members.flatMap((m) => m.latencies).sort((a, b) => a - b);
  const round = (ms: number) => Math.round(ms * 1000) / 1000;
  return {
    benchmark: "chat_fanout",
    room: room.kind,
    instances: room.ports.length,
    members: members.length,
    senders: senders.length,
    offeredMessagesPerSecond: rate ?? "max",
    seconds: Math.round(elapsedMs) / 1000,
    messagesSent: messages,
    linesDelivered: delivered,
    linesPerSecond: Math.round(delivered / (elapsedMs / 1000)),
    messagesPerSecond: Math.round(messages / (elapsedMs / 1000)),
    latencyMs: {
      samples: latencies.length,
      p50: round(percentile(latencies, 0.5)),
      p99: round(percentile(latencies, 0.99)),
      max: round(latencies.at(-1) ?? NaN),
    },
    cpu: {
      instances: busy.slice(0, room.pids.instances.length),
      redis: room.pids.redis ? busy[room.pids.instances.length] : undefined,
      clients: busy.at(-1),
      // Every core's busy share, whoever used it (softirq included).
      cores: coreBusy(cpuBefore, cpuAfter).map(share),
    },
    membersDisconnected: members.filter((m) => m.ended).length,
  };
}

/** Starts a room, joins its members, measures at full speed and at `rate`. */
async function run(
  kind: "local" | "redis",
  options: Options,
  rate: (full: number) => number,
): Promise<number> {
  await using room = await startRoom(kind, import.meta.filename!);
  const members: Member[] = [];
  try {
    const total = options.members * room.ports.length;
    for (let i = 0; i < total; i++) {
      const port = room.ports[i % room.ports.length];
      const member = await Member.connect(port, i < PROBES + options.senders);
      members.push(member);
      // Joined one at a time, so that member i hears exactly the joins after it.
      await until("a welcome", () => member.received === 1, SETUP_TIMEOUT_MS);
    }
    await until(
      "every member to hear every join",
      () => members.every((m, i) => m.received === total - i),
      SETUP_TIMEOUT_MS,
    );
    const full = await measure(room, members, options);
    console.log(JSON.stringify(full));
    const paced = await measure(
      room,
      members,
      options,
      rate(full.messagesPerSecond),
    );
    console.log(JSON.stringify(paced));
    return full.messagesPerSecond;
  } finally {
    for (const member of members) member.close();
    await Promise.allSettled(members.map((m) => m.reading));
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "--serve") {
    await serve(Deno.args[1]);
  } else {
    const options = parseOptions(Deno.args);
    // Latency at 10% of what the Redis room delivers, for both rooms alike.
    let redisRate: number | undefined;
    for (const kind of [...options.rooms].reverse()) {
      const most = await run(
        kind,
        options,
        (full) =>
          options.rate ||
          Math.max(1, Math.round(LATENCY_LOAD * (redisRate ?? full))),
      );
      if (kind === "redis") redisRate = most;
    }
  }
}

/**
 * One chat room across instances, with real components: `redis-server`
 * (Debian package `redis-server`) on a free loopback port without
 * persistence, two or three `server.ts` processes with
 * `--protocol chat --chat-redis`, and HAProxy in front for one test.
 * Every rule of the room holds across instances; an instance that shuts
 * down, dies, or loses Redis is handled as the operations guide says.
 *
 * Every wait is on something observable (a line, a log line) and bounded.
 */
import assert from "node:assert/strict";
import { withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { BulkReader } from "./support/bulk_reader.ts";
import { redisMissingReason, RedisProcess } from "./support/redis.ts";
import { ServerProcess, startWithAdmin } from "./support/server_process.ts";
import {
  distinctFreePorts,
  haproxyMissingReason,
  HaproxyProcess,
} from "./support/haproxy.ts";

const missing = await redisMissingReason();
if (missing) console.error(`chat_redis_test.ts: ignoring: ${missing}`);

const UNAVAILABLE = "ERROR. Chat is unavailable, try again later";
const SHUTTING_DOWN = "<server shutting down>";

/**
 * A test that needs redis-server (and any `alsoMissing` tool); reported as
 * ignored, with why, when one is missing.
 */
function redisTest(
  name: string,
  fn: () => Promise<void>,
  alsoMissing?: string,
) {
  const why = missing ?? alsoMissing;
  Deno.test({
    name: why ? `${name} (ignored: ${why})` : name,
    ignore: why !== undefined,
    fn,
  });
}

/** A member: its connection and the name it was welcomed with. */
interface Member {
  client: LineClient;
  name: string;
}

/** Redis, instances of one room on it, and every client opened, closed afterwards. */
interface Room {
  redis: RedisProcess;
  instances: ServerProcess[];
  /** Connects a member to instance `i`; checks that each of `others` hears it join. */
  enter(i: number, others?: Member[]): Promise<Member>;
}

/**
 * Runs `body` with Redis and `count` chat instances on it (started with
 * `args` more, and `denoFlags`); stops them all after.
 */
async function withRoom(
  count: number,
  body: (room: Room) => Promise<void>,
  options: { args?: string[]; denoFlags?: string[] } = {},
): Promise<void> {
  await using redis = await RedisProcess.start();
  const clients: LineClient[] = [];
  const instances = await Promise.all(
    Array.from(
      { length: count },
      () =>
        startWithAdmin([
          "--protocol",
          "chat",
          "--chat-redis",
          redis.url,
          ...options.args ?? [],
        ], { denoFlags: options.denoFlags }),
    ),
  );
  try {
    await body({
      redis,
      instances,
      async enter(i, others = []) {
        const client = await LineClient.connect(instances[i].port);
        clients.push(client);
        const welcome = await client.readLine();
        const name = /^<welcome: you are (guest\d+)>$/.exec(welcome)?.[1];
        assert.ok(name, welcome);
        for (const other of others) {
          assert.equal(await other.client.readLine(), `* ${name} joined`);
        }
        return { client, name };
      },
    });
  } finally {
    for (const client of clients) client.close();
    await Promise.all(instances.map((instance) => instance.stop()));
  }
}

/** Sends `line`, reads `count` lines. */
async function ask(member: Member, line: string, count = 1) {
  await member.client.send(`${line}\n`);
  return await member.client.readLines(count);
}

/** Renames `member`; each of `others` hears it. */
async function rename(member: Member, name: string, others: Member[]) {
  assert.deepEqual(await ask(member, `/nick ${name}`), [
    `<you are now ${name}>`,
  ]);
  for (const other of others) {
    assert.equal(
      await other.client.readLine(),
      `* ${member.name} is now ${name}`,
    );
  }
  member.name = name;
}

/** `/who` as `member` sees it: nothing else was pending for it. */
async function who(member: Member): Promise<string[]> {
  await member.client.send("/who\n");
  const count = /^\* (\d+) online$/.exec(await member.client.readLine());
  assert.ok(count, "a /who answer first: a line was pending");
  return await member.client.readLines(Number(count[1]));
}

/** Reads lines until one satisfies `wanted`; returns it and the lines before it. */
async function readUntil(
  member: Member,
  wanted: (line: string) => boolean,
  timeoutMs = 5000,
): Promise<{ line: string; before: string[] }> {
  const deadline = Date.now() + timeoutMs;
  const before: string[] = [];
  while (true) {
    const line = await member.client.readLine(
      Math.max(1, deadline - Date.now()),
    );
    if (wanted(line)) return { line, before };
    before.push(line);
  }
}

redisTest(
  "chat across instances: a conversation over three instances, /nick, /who and /quit, each line heard once",
  async () => {
    await withRoom(3, async ({ enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      const cat = await enter(2, [ann, bob]);
      await rename(ann, "ann", [bob, cat]);
      await rename(bob, "Bob", [ann, cat]);
      await ann.client.send("hello from 0\n");
      await cat.client.send("hello from 2\n");
      assert.equal(await bob.client.readLine(), "ann: hello from 0");
      assert.equal(await bob.client.readLine(), `${cat.name}: hello from 2`);
      assert.equal(await cat.client.readLine(), "ann: hello from 0");
      assert.equal(await ann.client.readLine(), `${cat.name}: hello from 2`);
      // Names are unique in the room without regard to case.
      assert.deepEqual(await ask(cat, "/nick ANN"), [
        "ERROR. Name ANN is taken",
      ]);
      assert.deepEqual(await ask(cat, "/nick guest1"), [
        "ERROR. Name guest1 is taken",
      ]);
      // A relayed line is cleaned on its way through Redis too.
      await bob.client.send("x\ry\n");
      assert.equal(await ann.client.readLine(), "Bob: x\ufffdy");
      assert.equal(await cat.client.readLine(), "Bob: x\ufffdy");
      const everyone = ["* Bob", "* ann", `* ${cat.name}`];
      for (const member of [ann, bob, cat]) {
        assert.deepEqual(await who(member), everyone);
      }
      assert.deepEqual(await ask(bob, "/quit"), ["connection closed"]);
      await bob.client.expectClosed();
      assert.equal(await ann.client.readLine(), "* Bob left");
      assert.equal(await cat.client.readLine(), "* Bob left");
      // Once: /who is the next answer, and Bob's name is free.
      assert.deepEqual(await who(ann), ["* ann", `* ${cat.name}`]);
      await rename(cat, "bob", [ann]);
    });
  },
);

redisTest(
  "chat across instances: guest numbers and names stay unique under concurrent joins and renames on different instances",
  async () => {
    await withRoom(3, async ({ enter }) => {
      const perInstance = 8;
      const members = await Promise.all(
        Array.from({ length: 3 * perInstance }, (_, i) => enter(i % 3)),
      );
      const names = members.map((m) => m.name);
      assert.equal(new Set(names).size, names.length, names.join(" "));
      // Everyone wants the same name, in various cases, at once.
      const wanted = ["champion", "Champion", "CHAMPION"];
      await Promise.all(
        members.map((m, i) => m.client.send(`/nick ${wanted[i % 3]}\n`)),
      );
      const answers = await Promise.all(members.map((m) =>
        readUntil(
          m,
          (line) =>
            line.startsWith("<you are now") || line.startsWith("ERROR."),
        )
      ));
      const winners = answers.filter(({ line }) => line.startsWith("<you"));
      assert.equal(winners.length, 1, answers.map((a) => a.line).join("\n"));
      // The room agrees: every member once, one champion.
      const listed = await (async () => {
        const observer = members[0];
        await observer.client.send("/who\n");
        const { before } = await readUntil(
          observer,
          (line) => line === `* ${members.length} online`,
        );
        assert.ok(before.every((line) => line.startsWith("* ")), before.join());
        return await observer.client.readLines(members.length);
      })();
      const lower = listed.map((line) => line.toLowerCase());
      assert.equal(new Set(lower).size, members.length, listed.join(" "));
      assert.equal(lower.filter((line) => line === "* champion").length, 1);
    });
  },
);

redisTest(
  "chat across instances: one sender's lines arrive whole and in order on every instance, under load",
  async () => {
    await withRoom(3, async ({ enter }) => {
      const first = await enter(0);
      const second = await enter(1, [first]);
      const readers = [first, second];
      for (let i = 0; i < 3; i++) readers.push(await enter(i, readers));
      const lines = 3000;
      const payload = "p".repeat(60);
      const batch = (sender: number, from: number, to: number) => {
        let text = "";
        for (let k = from; k < to; k++) text += `${sender} ${k} ${payload}\n`;
        return text;
      };
      const sending = [first, second].map(async (sender, s) => {
        for (let k = 0; k < lines; k += 500) {
          await sender.client.send(batch(s, k, k + 500));
        }
      });
      // Each sender hears the other; each reader hears both.
      const expect = (member: Member, senders: number[]) =>
        (async () => {
          const bulk = new BulkReader(member.client.conn);
          const next = senders.map(() => 0);
          for (let n = 0; n < senders.length * lines; n++) {
            const line = await bulk.readLine(10_000);
            const match = /^(guest\d+): (\d) (\d+) p+$/.exec(line);
            assert.ok(match, line);
            const s = Number(match[2]);
            assert.equal(match[1], [first, second][s].name);
            assert.equal(Number(match[3]), next[senders.indexOf(s)]++, line);
          }
        })();
      await withTimeout(
        Promise.all([
          ...sending,
          expect(first, [1]),
          expect(second, [0]),
          ...readers.slice(2).map((reader) => expect(reader, [0, 1])),
        ]),
        30_000,
        "every line delivered",
      );
    });
  },
);

redisTest(
  "chat across instances: an instance shutting down says goodbye to its members; the others hear them leave, and their names are free",
  async () => {
    await withRoom(2, async ({ instances, enter }) => {
      const stay = await enter(1);
      const going = [await enter(0, [stay])];
      going.push(await enter(0, [stay, going[0]]));
      await rename(going[0], "leaver", [stay, going[1]]);
      instances[0].signal("SIGTERM");
      for (const member of going) {
        assert.equal(await member.client.readToEnd(), `${SHUTTING_DOWN}\r\n`);
      }
      assert.equal((await instances[0].waitForExit()).code, 0);
      const heard = await stay.client.readLines(2);
      assert.deepEqual(
        heard.sort(),
        ["* leaver left", `* ${going[1].name} left`].sort(),
      );
      assert.deepEqual(await who(stay), [`* ${stay.name}`]);
      await rename(stay, "leaver", []);
    });
  },
);

redisTest(
  "chat across instances: the members of a killed instance are announced as left within 15 s, and their names are free",
  async () => {
    await withRoom(2, async ({ instances, enter }) => {
      const stay = await enter(1);
      const doomed = [await enter(0, [stay])];
      doomed.push(await enter(0, [stay, doomed[0]]));
      await rename(doomed[0], "ghost", [stay, doomed[1]]);
      const killedAt = Date.now();
      instances[0].child.kill("SIGKILL");
      const heard = await stay.client.readLines(2, 15_000);
      const after = Date.now() - killedAt;
      assert.deepEqual(
        heard.sort(),
        ["* ghost left", `* ${doomed[1].name} left`].sort(),
      );
      assert.ok(after < 15_000, `${after} ms`);
      console.log(`left lines ${after} ms after SIGKILL`);
      assert.deepEqual(await who(stay), [`* ${stay.name}`]);
      await rename(stay, "ghost", []);
    });
  },
);

redisTest(
  "chat across instances: Redis lost while running: members stay, lines are answered with an error; once Redis is back the instances rejoin",
  async () => {
    await withRoom(2, async ({ redis, instances, enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      const cat = await enter(1, [ann, bob]);
      await rename(ann, "ann", [bob, cat]);
      await redis.stop();
      for (const instance of instances) {
        await instance.waitForStderr(/out of reach/, 10_000);
      }
      assert.deepEqual(await ask(bob, "a line"), [UNAVAILABLE]);
      assert.deepEqual(await ask(bob, "/who"), [UNAVAILABLE]);
      assert.deepEqual(await ask(ann, "/nick anne"), [UNAVAILABLE]);
      // A newcomer cannot be named: told so, and closed.
      const late = await LineClient.connect(instances[0].port);
      assert.equal(await late.readToEnd(), `${UNAVAILABLE}\r\n`);
      late.close();
      // A member leaving meanwhile is announced once the room is back.
      assert.deepEqual(await ask(cat, "/quit"), ["connection closed"]);
      await redis.restart();
      for (const instance of instances) {
        await instance.waitForStderr(/reached again: rejoined/, 10_000);
      }
      // Redis came back empty; each instance registered its members again,
      // which nobody hears as a join: nobody heard them leave.
      for (const member of [ann, bob]) {
        assert.equal(await member.client.readLine(), `* ${cat.name} left`);
        assert.deepEqual(await who(member), ["* ann", `* ${bob.name}`]);
      }
      await bob.client.send("back again\n");
      assert.equal(await ann.client.readLine(), `${bob.name}: back again`);
      assert.deepEqual(await ask(bob, "/nick ANN"), [
        "ERROR. Name ANN is taken",
      ]);
      // The guest counter went past the guests still in the room.
      const newcomer = await enter(0, [ann, bob]);
      assert.notEqual(newcomer.name, bob.name);
    });
  },
);

redisTest(
  "chat across instances: an instance cut off for good is taken for dead; when it comes back its members are announced back",
  async () => {
    await withRoom(2, async ({ instances, enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      await rename(ann, "ann", [bob]);
      // Stopped, the instance says nothing: to the others it is dead.
      instances[0].child.kill("SIGSTOP");
      const stoppedAt = Date.now();
      try {
        assert.equal(await bob.client.readLine(15_000), "* ann left");
        assert.ok(Date.now() - stoppedAt < 15_000);
        assert.deepEqual(await who(bob), [`* ${bob.name}`]);
      } finally {
        instances[0].child.kill("SIGCONT");
      }
      // Its next heartbeat finds it taken for dead: it rejoins.
      assert.equal(await bob.client.readLine(10_000), "* ann joined");
      assert.deepEqual(await who(ann), ["* ann", `* ${bob.name}`]);
      await ann.client.send("still here\n");
      assert.equal(await bob.client.readLine(), "ann: still here");
    });
  },
);

redisTest(
  "chat across instances: --chat-room keeps rooms apart on one Redis",
  async () => {
    await using redis = await RedisProcess.start();
    const start = (room: string) =>
      ServerProcess.start([
        "--port",
        "0",
        "--protocol",
        "chat",
        "--chat-redis",
        redis.url,
        "--chat-room",
        room,
      ]);
    await using first = await start("first");
    await using second = await start("second");
    using alice = await LineClient.connect(first.port);
    using bob = await LineClient.connect(second.port);
    assert.match(await alice.readLine(), /^<welcome: you are guest1>$/);
    // Guests are numbered per room.
    assert.match(await bob.readLine(), /^<welcome: you are guest1>$/);
    await bob.send("/who\n");
    assert.deepEqual(await bob.readLines(2), ["* 1 online", "* guest1"]);
    await alice.send("/who\n");
    assert.deepEqual(await alice.readLines(2), ["* 1 online", "* guest1"]);
  },
);

redisTest(
  "chat across instances: --workers 2 with --chat-redis: every worker is an instance of the one room",
  async () => {
    await withRoom(1, async ({ enter }) => {
      const members: Member[] = [];
      for (let i = 0; i < 6; i++) members.push(await enter(0, members));
      await members[5].client.send("to all\n");
      for (const member of members.slice(0, 5)) {
        assert.equal(
          await member.client.readLine(),
          `${members[5].name}: to all`,
        );
      }
      assert.equal((await who(members[0])).length, 6);
    }, { args: ["--workers", "2"], denoFlags: ["--allow-read"] });
  },
);

redisTest(
  "chat across instances: Redis unreachable at start is one stderr line naming the URL, exit 1",
  async () => {
    const [port] = distinctFreePorts(1);
    const url = `redis://127.0.0.1:${port}`;
    for (const workers of ["1", "2"]) {
      await using server = ServerProcess.spawn([
        "--port",
        "0",
        "--protocol",
        "chat",
        "--chat-redis",
        url,
        "--workers",
        workers,
      ], { denoFlags: ["--allow-read"] });
      const { code } = await server.waitForExit(15_000);
      const { stderr } = server;
      assert.equal(code, 1, stderr);
      const lines = stderr.trim().split("\n");
      assert.equal(lines.length, 1, stderr);
      assert.ok(lines[0].includes(url), lines[0]);
    }
  },
);

const noHaproxy = await haproxyMissingReason();
if (noHaproxy) console.error(`chat_redis_test.ts: HAProxy test: ${noHaproxy}`);

redisTest(
  "chat across instances: behind HAProxy, members on both instances are one room (health checks do not join it)",
  async () => {
    const [front, stats] = distinctFreePorts(2);
    await withRoom(2, async ({ instances }) => {
      const config = new URL("../deploy/haproxy-chat.cfg", import.meta.url);
      await using haproxy = await HaproxyProcess.start(
        {
          LINESERVER_FRONTEND: `127.0.0.1:${front}`,
          LINESERVER_1: `127.0.0.1:${instances[0].port}`,
          LINESERVER_1_ADMIN: String(instances[0].adminPort),
          LINESERVER_2: `127.0.0.1:${instances[1].port}`,
          LINESERVER_2_ADMIN: String(instances[1].adminPort),
        },
        stats,
        10_000,
        config.pathname,
      );
      await haproxy.waitForStatus("lineservers/ls1", "UP");
      await haproxy.waitForStatus("lineservers/ls2", "UP");
      const members: Member[] = [];
      try {
        for (let i = 0; i < 4; i++) {
          const client = await LineClient.connect(front);
          const member = { client, name: "" };
          members.push(member);
          member.name = /you are (guest\d+)/.exec(await client.readLine())![1];
          for (const other of members.slice(0, -1)) {
            assert.equal(
              await other.client.readLine(),
              `* ${member.name} joined`,
            );
          }
        }
        // leastconn spread them over both instances.
        for (const instance of instances) {
          assert.match(instance.stderr, /connection opened/);
        }
        await members[0].client.send("through haproxy\n");
        for (const member of members.slice(1)) {
          assert.equal(
            await member.client.readLine(),
            `${members[0].name}: through haproxy`,
          );
        }
        assert.deepEqual(
          await who(members[3]),
          members.map((m) => `* ${m.name}`).sort(),
        );
      } finally {
        for (const member of members) member.client.close();
      }
    }, { args: ["--proxy-protocol"] });
  },
  noHaproxy,
);

/**
 * One chat room across instances, with real components: `redis-server`
 * (Debian package `redis-server`) on a free loopback port without
 * persistence, two or three `server.ts` processes with
 * `--protocol chat --chat-redis`, and HAProxy in front for one test. Every
 * rule of the room holds across instances. (Failures: see
 * chat_redis_failure_test.ts.)
 *
 * Every wait is on something observable (a line, a log line) and bounded.
 */
import assert from "node:assert/strict";
import { withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { BulkReader } from "./support/bulk_reader.ts";
import { RedisProcess } from "./support/redis.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  distinctFreePorts,
  haproxyMissingReason,
  HaproxyProcess,
} from "./support/haproxy.ts";
import {
  ask,
  type Member,
  missing,
  readUntil,
  redisTest,
  rename,
  who,
  withRoom,
} from "./support/chat_room.ts";

if (missing) console.error(`chat_redis_test.ts: ignoring: ${missing}`);

redisTest(
  "chat across instances: a conversation over three instances, /nick, /who and /quit, each line heard once",
  async () => {
    await withRoom(3, async ({ enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      const cat = await enter(2, [ann, bob]);
      await rename(ann, "ann", [bob, cat]);
      await rename(bob, "Bob", [ann, cat]);
      // Lines of two senders have no order between them: one at a time.
      await ann.client.send("hello from 0\n");
      assert.equal(await bob.client.readLine(), "ann: hello from 0");
      assert.equal(await cat.client.readLine(), "ann: hello from 0");
      await cat.client.send("hello from 2\n");
      assert.equal(await bob.client.readLine(), `${cat.name}: hello from 2`);
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
    await withRoom(2, async ({ instances }) => {
      // Chosen once Redis and the instances listen: a port free before
      // they started may be one of theirs now.
      const [front, stats] = distinctFreePorts(2);
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

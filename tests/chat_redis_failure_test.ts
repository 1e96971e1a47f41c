/**
 * One chat room across instances when something fails, with real
 * components (`redis-server` and `server.ts` processes): an instance shut
 * down gracefully, killed, or stopped past its lifetime; Redis killed and
 * restarted under a live room.
 *
 * Every wait is on something observable (a line, a log line) and bounded.
 */
import assert from "node:assert/strict";
import { LineClient } from "./support/line_client.ts";
import {
  ask,
  type Member,
  missing,
  redisTest,
  rename,
  SHUTTING_DOWN,
  UNAVAILABLE,
  who,
  withRoom,
} from "./support/chat_room.ts";

if (missing) console.error(`chat_redis_failure_test.ts: ignoring: ${missing}`);

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
  "chat across instances: an instance cut off from the room's channel hears, once back, the joins, renames and leaves it missed, in order",
  async () => {
    await withRoom(2, async ({ redis, instances, enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      const cat = await enter(1, [ann, bob]);
      const catWas = cat.name;
      // Stopped, instance 0 cannot notice that Redis drops its subscription
      // while instance 1 reconnects and the room goes on.
      instances[0].child.kill("SIGSTOP");
      let dan: Member;
      try {
        assert.equal(await redis.command("CLIENT KILL TYPE pubsub"), ":2");
        await instances[1].waitForStderr(/reached again: rejoined/, 10_000);
        dan = await enter(1, [bob, cat]);
        await rename(cat, "cat", [bob, dan]);
        assert.deepEqual(await ask(bob, "/quit"), ["connection closed"]);
        for (const member of [cat, dan]) {
          assert.equal(await member.client.readLine(), `* ${bob.name} left`);
        }
      } finally {
        instances[0].child.kill("SIGCONT");
      }
      await instances[0].waitForStderr(/reached again: rejoined/, 15_000);
      assert.deepEqual(await ann.client.readLines(3, 15_000), [
        `* ${dan.name} joined`,
        `* ${catWas} is now cat`,
        `* ${bob.name} left`,
      ]);
      assert.deepEqual(
        await who(ann),
        [`* ${ann.name}`, "* cat", `* ${dan.name}`].sort(),
      );
    });
  },
);

redisTest(
  "chat across instances: after Redis restarted empty, an instance back after the others still hears who left meanwhile",
  async () => {
    await withRoom(2, async ({ redis, instances, enter }) => {
      const ann = await enter(0);
      const bob = await enter(1, [ann]);
      const cat = await enter(1, [ann, bob]);
      await redis.stop();
      for (const instance of instances) {
        await instance.waitForStderr(/out of reach/, 10_000);
      }
      assert.deepEqual(await ask(cat, "/quit"), ["connection closed"]);
      // Instance 1 rejoins and announces cat's leaving while instance 0 is
      // not listening yet.
      instances[0].child.kill("SIGSTOP");
      try {
        await redis.restart();
        await instances[1].waitForStderr(/reached again: rejoined/, 10_000);
        assert.equal(await bob.client.readLine(), `* ${cat.name} left`);
      } finally {
        instances[0].child.kill("SIGCONT");
      }
      await instances[0].waitForStderr(/reached again: rejoined/, 15_000);
      assert.equal(await ann.client.readLine(15_000), `* ${cat.name} left`);
      const everyone = [`* ${ann.name}`, `* ${bob.name}`].sort();
      assert.deepEqual(await who(ann), everyone);
      assert.deepEqual(await who(bob), everyone);
    });
  },
);

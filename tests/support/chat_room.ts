/**
 * Shared chat rooms for tests: `redis-server` on a free port and chat
 * instances on it, members that know their names, and the reads the tests
 * of the room across instances repeat.
 *
 * @module
 */
import assert from "node:assert/strict";
import { LineClient } from "./line_client.ts";
import { redisMissingReason, RedisProcess } from "./redis.ts";
import { type ServerProcess, startWithAdmin } from "./server_process.ts";

/** Why these tests cannot run here (redis-server missing), or undefined. */
export const missing: string | undefined = await redisMissingReason();

export const UNAVAILABLE = "ERROR. Chat is unavailable, try again later";
/** The shutdown line (without CRLF), also exported here for the chat tests. */
export { SHUTTING_DOWN } from "./hardening.ts";

/**
 * A test that needs redis-server (and any `alsoMissing` tool); reported as
 * ignored, with why, when one is missing.
 */
export function redisTest(
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
export interface Member {
  client: LineClient;
  name: string;
}

/** Redis, instances of one room on it, and every client opened, closed afterwards. */
export interface Room {
  redis: RedisProcess;
  instances: ServerProcess[];
  /** Connects a member to instance `i`; checks that each of `others` hears it join. */
  enter(i: number, others?: Member[]): Promise<Member>;
}

/**
 * Runs `body` with Redis and `count` chat instances on it (started with
 * `args` more, and `denoFlags`); stops them all after.
 */
export async function withRoom(
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
export async function ask(member: Member, line: string, count = 1) {
  await member.client.send(`${line}\n`);
  return await member.client.readLines(count);
}

/** Renames `member`; each of `others` hears it. */
export async function rename(member: Member, name: string, others: Member[]) {
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
export async function who(member: Member): Promise<string[]> {
  await member.client.send("/who\n");
  const first = await member.client.readLine();
  const count = /^\* (\d+) online$/.exec(first);
  assert.ok(count, `a /who answer first, not ${JSON.stringify(first)}`);
  return await member.client.readLines(Number(count[1]));
}

/** Reads lines until one satisfies `wanted`; returns it and the lines before it. */
export async function readUntil(
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

/**
 * A chat room's memory is bounded as a whole: 1,000 members that never read
 * while 2 MB of messages is said raise the server's peak resident memory by
 * at most 128 MiB, and a member that reads gets every message in order. A
 * `server.ts --protocol chat` subprocess; Linux only (`/proc`).
 *
 * Each message is encoded once for the whole room and every member's queue
 * holds a span of it; a member that does not read is disconnected at its
 * 1 MiB bound. Copied per member, the same 2 MB would have been up to a
 * gigabyte (1,000 members x 1 MiB each).
 */
import assert from "node:assert/strict";
import { connectMany, hasProc, MiB } from "./support/hardening.ts";
import { withTimeout } from "./support/deadline.ts";
import type { LineClient } from "./support/line_client.ts";
import { MeasuredServer } from "./support/measured_server.ts";

const SILENT_MEMBERS = 1000;
const MESSAGE = "m".repeat(1000);
/** 2,048 lines of about 1 KB: 2 MB said. */
const MESSAGES = 2048;
const GROWTH_BOUND = 128 * MiB;
const RUN_TIMEOUT_MS = 30_000;

/** Reads lines until `accept` has taken `count` of them; the others are skipped. */
async function readUntil(
  client: LineClient,
  count: number,
  accept: (line: string) => boolean,
): Promise<string[]> {
  const taken: string[] = [];
  while (taken.length < count) {
    const line = await client.readLine(RUN_TIMEOUT_MS);
    if (accept(line)) taken.push(line);
  }
  return taken;
}

Deno.test({
  name:
    `memory: ${SILENT_MEMBERS} chat members that never read while 2 MB is said raise the server's peak RSS by at most 128 MiB; a reading member gets every line`,
  ignore: !hasProc(),
  async fn() {
    await using server = await MeasuredServer.start(["--protocol", "chat"]);
    const silent: Deno.TcpConn[] = [];
    try {
      // The sender and a listener join first, so that each hears every
      // other member join: once they have, the whole room is in.
      const sender = await server.connect("<welcome: you are guest1>");
      const listener = await server.connect("<welcome: you are guest2>");
      assert.equal(await sender.readLine(), "* guest2 joined");
      await connectMany(server.port, SILENT_MEMBERS, silent);
      const joined = (line: string) => line.endsWith(" joined");
      await withTimeout(
        Promise.all([
          readUntil(sender, SILENT_MEMBERS, joined),
          readUntil(listener, SILENT_MEMBERS, joined),
        ]),
        RUN_TIMEOUT_MS,
        "every silent member's join",
      );

      // The sender reads what comes to it (the silent members leaving) so
      // that it is not a member that does not read.
      const senderReads = readUntil(sender, Infinity, () => false).catch(
        () => [],
      );
      const heard = readUntil(
        listener,
        MESSAGES,
        (line) => line.startsWith("guest1: "),
      );
      const said = (async () => {
        const lines = `${MESSAGE}\n`.repeat(64);
        for (let i = 0; i < MESSAGES; i += 64) await sender.send(lines);
      })();
      const { growth, result: [lines] } = await server.peakGrowthDuring(
        `${SILENT_MEMBERS} silent chat members, 2 MB said`,
        () =>
          withTimeout(
            Promise.all([heard, said]),
            RUN_TIMEOUT_MS,
            "2 MB said and heard",
          ),
      );
      assert.equal(lines.length, MESSAGES);
      assert.ok(
        lines.every((line) => line === `guest1: ${MESSAGE}`),
        "every message arrives whole",
      );
      assert.ok(
        growth <= GROWTH_BOUND,
        `peak RSS grew by ${(growth / MiB).toFixed(1)} MiB (bound ${
          GROWTH_BOUND / MiB
        } MiB)`,
      );
      assert.equal(server.process.exited, undefined);
      server.closeClients();
      await senderReads;
    } finally {
      for (const conn of silent) {
        try {
          conn.close();
        } catch {
          // closed by the server already
        }
      }
    }
  },
});

/**
 * Heavy lines: while one client pipelines the heaviest `product` lines the
 * line limit allows (each milliseconds of arithmetic), another client that
 * sends one short line every 50 ms keeps being answered promptly. A real
 * `server.ts` subprocess; the heavy client runs in a Worker (an event loop of
 * its own), the bystander here. The bound is loose, for a shared machine:
 * the bench scenario `h` (bench/heavy_lines.ts) measures the real figure.
 */
import assert from "node:assert/strict";
import { waitFor } from "./support/deadline.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  Bystander,
  HeavyClient,
  type HeavyLoad,
} from "../bench/heavy_clients.ts";

/** 5 s of bystander lines, one every 50 ms. */
const BYSTANDER_LINES = 100;
const SLOWEST_REPLY_BOUND_MS = 1000;
/**
 * Heavy lines answered while one bystander line waited: mostly the server's
 * turns, whatever else takes the machine's CPUs (a few when the server takes
 * turns, more while this process itself waits for a CPU; hundreds when one
 * client holds the server).
 */
const HEAVY_LINES_PER_WAIT_BOUND = 50;

/**
 * Runs the heavy client with `load` beside the bystander and checks the
 * bystander's replies. `product` lines cost milliseconds each; `ones` lines
 * (32,767 one-digit numbers) cost under one, so only a time slice that
 * carries over from one read to the next catches them (the runtime hands a
 * busy socket's reads over back to back).
 */
async function bystanderBesideHeavy(load: HeavyLoad) {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--log-level",
    "warning",
  ]);
  let heavy: HeavyClient | undefined;
  let bystander: Bystander | undefined;
  try {
    heavy = new HeavyClient(server.host, server.port, load);
    const h = heavy;
    await heavy.expect("ready", 10_000);
    bystander = await Bystander.connect(
      server.host,
      server.port,
      "calc",
      () => h.answered,
    );
    heavy.post({ type: "run" });
    bystander.start();
    bystander.measure();
    const b = bystander;
    await waitFor(
      `${BYSTANDER_LINES} bystander lines sent`,
      () => b.sent >= BYSTANDER_LINES,
      20_000,
    );
    const seen = bystander.stop();
    heavy.post({ type: "stop" });
    const counts = await heavy.expect("result", 5000);

    assert.equal(
      counts.mismatches + counts.errors,
      0,
      counts.mismatchSamples.concat(counts.errorSamples).join("; "),
    );
    const problems = bystander.problems;
    assert.equal(
      problems.mismatches + problems.errors,
      0,
      problems.mismatchSamples.concat(problems.errorSamples).join("; "),
    );
    assert.ok(
      counts.lines > 0,
      "the heavy client got no reply: it did not load the server",
    );
    const figures = `slowest reply ${seen.maxMs.toFixed(0)} ms, p50 ${
      seen.p50Ms.toFixed(1)
    } ms, ${seen.replies} replies, ${seen.unanswered} unanswered, up to ${seen.heavyLinesPerWaitMax} heavy lines per wait, heavy ${counts.lines} lines in all`;
    assert.ok(seen.maxMs < SLOWEST_REPLY_BOUND_MS, figures);
    assert.ok(
      seen.heavyLinesPerWaitMax <= HEAVY_LINES_PER_WAIT_BOUND,
      figures,
    );
  } finally {
    heavy?.terminate();
    await bystander?.close();
    await server.stop();
  }
}

Deno.test("heavy lines: a client pipelining 64 KB product lines does not stall another client", async () => {
  await bystanderBesideHeavy("product");
});

Deno.test("heavy lines: a client pipelining 64 KB lines of cheap numbers does not stall another client", async () => {
  await bystanderBesideHeavy("ones");
});

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
  HeavyClients,
  type HeavyLoad,
  STREAMERS,
} from "../bench/heavy_clients.ts";
import { WorkerInbox } from "../bench/worker_inbox.ts";
import type { FromFlooders, ToFlooders } from "./support/flood_worker.ts";

/** 5 s of bystander lines, one every 50 ms. */
const BYSTANDER_LINES = 100;
const SLOWEST_REPLY_BOUND_MS = 1000;
/** Half the bystander's replies come within this (milliseconds when the server takes turns). */
const MEDIAN_REPLY_BOUND_MS = 100;
/**
 * Heavy lines answered while one bystander line waited: mostly the server's
 * turns, whatever else takes the machine's CPUs (up to about 30 cheap 64 KB
 * lines when the server takes turns, more while this process itself waits
 * for a CPU; hundreds when one client holds the server).
 */
const HEAVY_LINES_PER_WAIT_BOUND = 100;

/**
 * Runs the bystander's window: a line every 50 ms until
 * {@linkcode BYSTANDER_LINES} are sent; its figures.
 */
async function bystanderWindow(bystander: Bystander) {
  bystander.start();
  bystander.measure();
  await waitFor(
    `${BYSTANDER_LINES} bystander lines sent`,
    () => bystander.sent >= BYSTANDER_LINES,
    20_000,
  );
  return bystander.stop();
}

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
  let heavy: HeavyClients | undefined;
  let bystander: Bystander | undefined;
  try {
    heavy = new HeavyClients(server.host, server.port, load);
    const h = heavy;
    await heavy.ready(10_000);
    bystander = await Bystander.connect(
      server.host,
      server.port,
      "calc",
      () => h.answered,
    );
    heavy.post({ type: "run" });
    const seen = await bystanderWindow(bystander);
    const counts = await heavy.stop(5000);

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
      load === "stream" ? counts.bytesOut > 0 : counts.lines > 0,
      "the heavy client did not load the server",
    );
    const figures = `slowest reply ${seen.maxMs.toFixed(0)} ms, p50 ${
      seen.p50Ms.toFixed(1)
    } ms, ${seen.replies} replies, ${seen.unanswered} unanswered, up to ${seen.heavyLinesPerWaitMax} heavy lines per wait, heavy ${counts.lines} lines and ${
      (counts.bytesOut / 1e6).toFixed(0)
    } MB in all`;
    assert.ok(seen.maxMs < SLOWEST_REPLY_BOUND_MS, figures);
    assert.ok(seen.p50Ms < MEDIAN_REPLY_BOUND_MS, figures);
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

Deno.test(`heavy lines: ${STREAMERS} clients streaming without a newline do not stall another client`, async () => {
  await bystanderBesideHeavy("stream");
});

/** Clients flooding empty lines (each answered with an error line) in the flood test. */
const FLOODERS = 50;

/**
 * Many clients each pipelining more lines than a time slice answers: they
 * take turns, and between two turns the server reads and answers whoever
 * else has sent a line. With a turn per client in one go (50 slices and 50
 * writes of replies, 100 to 400 ms), the bystander waited that long for
 * every line.
 */
Deno.test(`heavy lines: ${FLOODERS} clients flooding empty lines do not stall another client`, async () => {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--log-level",
    "warning",
  ]);
  const flooders = new WorkerInbox<ToFlooders, FromFlooders>(
    "Flood worker",
    new URL("./support/flood_worker.ts", import.meta.url),
  );
  let bystander: Bystander | undefined;
  try {
    flooders.post({
      host: server.host,
      port: server.port,
      connections: FLOODERS,
    });
    await flooders.expect("ready", 10_000);
    bystander = await Bystander.connect(
      server.host,
      server.port,
      "calc",
      () => 0,
    );
    const seen = await bystanderWindow(bystander);
    flooders.post("stop");
    const { bytesIn } = await flooders.expect("stopped", 5000);

    const problems = bystander.problems;
    assert.equal(
      problems.mismatches + problems.errors,
      0,
      problems.mismatchSamples.concat(problems.errorSamples).join("; "),
    );
    const figures = `slowest reply ${seen.maxMs.toFixed(0)} ms, p50 ${
      seen.p50Ms.toFixed(1)
    } ms, ${seen.replies} replies, ${seen.unanswered} unanswered; the flooders got ${
      (bytesIn / 1e6).toFixed(0)
    } MB of replies`;
    console.log(`flooding: ${figures}`);
    assert.ok(
      bytesIn > 10e6,
      `the flooders did not load the server: ${figures}`,
    );
    assert.ok(seen.maxMs < SLOWEST_REPLY_BOUND_MS, figures);
    assert.ok(seen.p50Ms < MEDIAN_REPLY_BOUND_MS, figures);
  } finally {
    flooders.terminate();
    await bystander?.close();
    await server.stop();
  }
});

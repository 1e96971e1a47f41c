/**
 * Memory comes back after a load: once the server has been quiet for a
 * moment, its resident memory returns to within max(1.25x, +16 MiB) of what
 * it was before the load. Left to itself, the runtime collects the load's
 * garbage only once the process is 30 s old and its allocator keeps freed
 * memory; the server gives it back itself (a collection, then the allocator
 * trimmed). A `server.ts` subprocess, loaded by calculator clients that
 * flood empty lines without reading their replies, then left alone; the
 * whole test stays well under the 30 s after which the runtime would have
 * collected anyway.
 */
import assert from "node:assert/strict";
import { pollUntil } from "./support/deadline.ts";
import { floodUntilStalled, hasProc, MiB } from "./support/hardening.ts";
import { MeasuredServer } from "./support/measured_server.ts";

const CLIENTS = 100;
/** Grow the server by at least this much (beyond the +16 MiB bound), so that coming back means something. */
const GROWTH_WANTED = 24 * MiB;
const LOAD_MAX_MS = 8000;
const REST_MAX_MS = 12_000;
const EMPTY_LINES = new Uint8Array(64 * 1024).fill(0x0a);

Deno.test({
  name:
    "memory: after a load, resident memory comes back within max(1.25x, +16 MiB) of before while the server idles",
  ignore: !hasProc(),
  async fn() {
    await using server = await MeasuredServer.start();
    for (let i = 0; i < CLIENTS; i++) await server.connect();
    const before = await server.rss();
    // Every client floods empty lines (each answered with an error line)
    // and never reads: the server answers what the kernel's buffers take.
    const started = Date.now();
    const floods = server.clients.map((client) =>
      floodUntilStalled(client.conn, EMPTY_LINES, {
        limitBytes: 64 * MiB,
        stallMs: 500,
        maxMs: LOAD_MAX_MS,
      })
    );
    const rssMiB = async () => Math.round((await server.rss()) / MiB);
    const peak = await pollUntil(
      `the server to grow by ${GROWTH_WANTED / MiB} MiB from ${
        (before / MiB).toFixed(0)
      } MiB`,
      rssMiB,
      (mib) => mib * MiB - before >= GROWTH_WANTED,
      LOAD_MAX_MS,
    );
    server.closeClients();
    await Promise.all(floods.map((flood) => flood.then((f) => f.pending)));
    const bound = Math.max(1.25 * before, before + 16 * MiB);
    const loadedMs = Date.now() - started;
    const now = await pollUntil(
      `RSS (MiB) back within ${(bound / MiB).toFixed(0)} MiB (before ${
        (before / MiB).toFixed(0)
      }, at least ${peak} after ${loadedMs} ms of load)`,
      rssMiB,
      (mib) => mib * MiB <= bound,
      REST_MAX_MS,
    );
    console.log(
      `memory rest: ${(before / MiB).toFixed(0)} -> ${peak} -> ${now} MiB`,
    );
    assert.equal(server.process.exited, undefined);
  },
});

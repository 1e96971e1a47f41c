/**
 * Memory under clients that stream an endless line: what they send must not
 * decide how much memory the server holds. Many clients at once stream bytes
 * without a newline at a `server.ts` subprocess; its peak resident memory
 * (VmHWM, reset just before the load) may grow by at most a bound, each
 * client gets the line-too-long error while it streams, and each connection
 * is served normally once its line ends.
 *
 * The bound: the server keeps at most one line limit (64 KiB) of each line,
 * so 40 streaming connections need under 3 MiB of their own; 32 MiB leaves
 * room for the runtime's buffers and heap. A read path that hands each
 * 64 KiB read to the collector as a fresh buffer grows by hundreds of MiB
 * here (the figures are in docs/performance.md).
 */
import assert from "node:assert/strict";
import { ask, sum, tooLong, WELCOME } from "./support/calc_replies.ts";
import { withTimeout } from "./support/deadline.ts";
import { hasProc, MiB } from "./support/hardening.ts";
import type { LineClient } from "./support/line_client.ts";
import { MeasuredServer } from "./support/measured_server.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";
import { connectTlsLineClient } from "./support/tls_client.ts";

const CLIENTS = 40;
const BYTES_EACH = 20 * MiB;
const GROWTH_BOUND = 32 * MiB;
const MAX_LINE = 65536;
const CHUNK = new Uint8Array(MiB).fill(0x37); // "777...": never a newline
const STREAM_TIMEOUT_MS = 15_000;

/** Streams `BYTES_EACH` without a newline; expects the error, then a served line. */
async function streamEndlessLine(client: LineClient): Promise<void> {
  // The error comes as soon as the limit is crossed, while the rest streams.
  const error = client.readLine(STREAM_TIMEOUT_MS);
  error.catch(() => {}); // awaited below, after the sends (which may fail first)
  for (let sent = 0; sent < BYTES_EACH; sent += CHUNK.length) {
    await client.send(CHUNK);
  }
  assert.equal(await error, tooLong(MAX_LINE));
  // The LF ends the dropped line; the next line is served as usual.
  await ask(client, "\n1,2\n", sum(3));
}

/** The server's peak RSS growth while every client streams its endless line. */
async function peakGrowthWhileStreaming(
  server: MeasuredServer,
  what: string,
): Promise<number> {
  const { growth } = await server.peakGrowthDuring(
    what,
    () =>
      withTimeout(
        Promise.all(server.clients.map(streamEndlessLine)),
        STREAM_TIMEOUT_MS,
        what,
      ),
  );
  return growth;
}

/** The growth is within the bound, and the server still runs. */
function assertWithinBound(server: MeasuredServer, growth: number) {
  assert.ok(
    growth <= GROWTH_BOUND,
    `server peak RSS grew by ${(growth / MiB).toFixed(1)} MiB (bound ${
      GROWTH_BOUND / MiB
    } MiB)`,
  );
  assert.equal(server.process.exited, undefined);
}

Deno.test({
  name: `memory: ${CLIENTS} clients streaming ${
    BYTES_EACH / MiB
  } MiB without a newline grow the server's peak RSS by at most ${
    GROWTH_BOUND / MiB
  } MiB; each gets the line-too-long error and is served after`,
  ignore: !hasProc(),
  async fn() {
    await using server = await MeasuredServer.start();
    for (let i = 0; i < CLIENTS; i++) await server.connect(WELCOME);
    const growth = await peakGrowthWhileStreaming(
      server,
      `${CLIENTS} clients streaming ${BYTES_EACH / MiB} MiB each`,
    );
    assertWithinBound(server, growth);
  },
});

const TLS_CLIENTS = 10;
const tlsMissing = await opensslMissingReason();

Deno.test({
  name: `memory: ${TLS_CLIENTS} TLS clients streaming ${
    BYTES_EACH / MiB
  } MiB without a newline grow the server's peak RSS by at most ${
    GROWTH_BOUND / MiB
  } MiB: the encrypted reads beneath TLS do not allocate per read either${
    tlsMissing ? ` (ignored: ${tlsMissing})` : ""
  }`,
  ignore: !hasProc() || tlsMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    await using server = await MeasuredServer.start([
      "--tls-cert",
      cert.certFile,
      "--tls-key",
      cert.keyFile,
    ], [`--allow-read=${cert.dir}`]);
    for (let i = 0; i < TLS_CLIENTS; i++) {
      const client = server.adopt(
        await connectTlsLineClient(server.port, cert.certPem),
      );
      assert.equal(await client.readLine(), WELCOME);
    }
    const growth = await peakGrowthWhileStreaming(
      server,
      `${TLS_CLIENTS} TLS clients streaming ${BYTES_EACH / MiB} MiB each`,
    );
    assertWithinBound(server, growth);
  },
});

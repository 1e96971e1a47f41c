/**
 * The admin endpoint under pressure: it must never end the process when
 * file descriptors run out, serves few connections at once, closes a
 * request that does not arrive in time, answers a broken one with 400, and
 * reports the process's memory and descriptors. Module tests run the admin
 * server in this process with short deadlines; the rest run `server.ts`.
 */
import assert from "node:assert/strict";
import {
  ADMIN_MAX_CONNECTIONS,
  type AdminServer,
  startAdminServer,
} from "../src/admin.ts";
import {
  httpGet,
  type Scrape,
  scrapeMetrics,
  waitForHealth,
} from "./support/admin_client.ts";
import { delay, withTimeout } from "./support/deadline.ts";
import { connectMany, hasProc, rssBytes } from "./support/hardening.ts";
import { LineClient } from "./support/line_client.ts";
import { startWithAdmin } from "./support/server_process.ts";

const HOST = "127.0.0.1";

function startModule(
  options: { requestTimeoutMs?: number } = {},
): Promise<AdminServer> {
  return startAdminServer({
    hostname: HOST,
    port: 0,
    isDraining: () => false,
    renderMetrics: () => "",
    ...options,
  });
}

/** Sends `request` on a fresh connection and reads until the server closes. */
async function exchange(port: number, request: string): Promise<string> {
  using client = await LineClient.connect(port);
  await client.send(request);
  return await client.readToEnd(5000);
}

function sample(scrape: Scrape, series: string): number {
  const value = scrape.samples.get(series);
  assert.notEqual(value, undefined, `${series} missing from /metrics`);
  return value!;
}

// ---------------------------------------------------------------------------
// Out of file descriptors

Deno.test({
  name:
    "admin port out of file descriptors: the process lives, and /healthz answers once they are free",
  ignore: !hasProc(),
  async fn() {
    await using server = await startWithAdmin([
      "--max-connections",
      "1000",
      "--log-level",
      "warning",
      "--log-format",
      "json",
    ], { wrapper: ["prlimit", "--nofile=64:64", "--"] });
    const conns: Deno.TcpConn[] = [];
    try {
      // More line clients than the process has descriptors: the kernel
      // completes every handshake, the server's accepts then fail.
      await connectMany(server.port, 100, conns);
      await server.waitForStderr(
        /"logger":"lineserver".*out of file descriptors/,
        5000,
      );
      // A probe now: it waits in the admin port's queue (no descriptor to
      // accept it with). It used to end the process with EMFILE.
      const probe = httpGet(server.adminPort, "/healthz", { timeoutMs: 20000 })
        .then((result) => result, (error: Error) => error);
      await server.waitForStderr(
        /"logger":"lineserver\.admin".*out of file descriptors/,
        5000,
      );
      assert.equal(server.exited, undefined, "the server exited");

      for (const conn of conns.splice(0)) conn.close();
      const answer = await probe;
      assert.ok(!(answer instanceof Error), String(answer));
      assert.deepEqual([answer.status, answer.body], [200, "ok"]);
      const scrape = await scrapeMetrics(server.adminPort);
      assert.ok(
        sample(
          scrape,
          'lineserver_admin_accept_errors_total{kind="exhausted"}',
        ) >= 1,
      );
      assert.equal(server.exited, undefined, "the server exited");
    } finally {
      for (const conn of conns) conn.close();
    }
  },
});

// ---------------------------------------------------------------------------
// Connection limit and request deadline (the module, in this process)

Deno.test("admin module: beyond its connection limit a new connection is closed at once, unanswered", async () => {
  await using admin = await startModule();
  const port = admin.addr.port;
  const held: LineClient[] = [];
  try {
    for (let i = 0; i < ADMIN_MAX_CONNECTIONS; i++) {
      held.push(await LineClient.connect(port));
    }
    {
      using extra = await LineClient.connect(port);
      await extra.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .catch(() => {}); // It may already be reset.
      assert.equal(await extra.readToEnd(2000), "");
    }
    // The connections held are still served, each in turn, and each one
    // answered frees a slot for a new client.
    const first = held.shift()!;
    await first.send("GET /healthz HTTP/1.1\r\n\r\n");
    assert.match(
      await first.readToEnd(),
      /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/,
    );
    first.close();
    // Its slot is free once the server has seen it close.
    await waitForHealth(port, (result) => result.status === 200, 5000);
  } finally {
    for (const client of held) client.close();
  }
});

Deno.test("admin module: a request head not complete within the deadline is closed unanswered", async () => {
  const requestTimeoutMs = 300;
  await using admin = await startModule({ requestTimeoutMs });
  const port = admin.addr.port;

  // Silent from the start.
  using silent = await LineClient.connect(port);
  let started = performance.now();
  assert.equal(await silent.readToEnd(5000), "");
  const silentMs = performance.now() - started;

  // Half a request, then a byte every 50 ms: still closed on time.
  using trickler = await LineClient.connect(port);
  started = performance.now();
  await trickler.send("GET /healthz HTTP/1.1\r\n");
  const trickle = (async () => {
    while (!trickler.eof) {
      await delay(50);
      try {
        await trickler.send("x");
      } catch {
        return; // The server closed it.
      }
    }
  })();
  assert.equal(await trickler.readToEnd(5000), "");
  const trickleMs = performance.now() - started;
  await trickle;

  for (const ms of [silentMs, trickleMs]) {
    assert.ok(
      ms >= requestTimeoutMs - 50 && ms < requestTimeoutMs + 2000,
      `closed after ${ms.toFixed(0)} ms`,
    );
  }
  // A request sent in pieces within the deadline is answered.
  using slow = await LineClient.connect(port);
  await slow.send("GET /heal");
  await delay(50);
  await slow.send("thz HTTP/1.1\r\n\r\n");
  assert.match(await slow.readToEnd(), /\r\n\r\nok$/);
});

Deno.test("admin module: many half-sent requests hold at most the limit, each until its deadline", async () => {
  const requestTimeoutMs = 800;
  await using admin = await startModule({ requestTimeoutMs });
  const port = admin.addr.port;
  const count = 3 * ADMIN_MAX_CONNECTIONS;
  const clients: LineClient[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const client = await LineClient.connect(port);
      clients.push(client);
      await client.send("GET /metrics HTTP/1.1\r\nHost: a").catch(() => {});
    }
    const started = performance.now();
    const closedAfter = await Promise.all(
      clients.map(async (client) => {
        assert.equal(await client.readToEnd(5000), "");
        return performance.now() - started;
      }),
    );
    // Those beyond the limit went at once; the others at their deadline.
    const held = closedAfter.filter((ms) => ms >= requestTimeoutMs / 2);
    assert.ok(
      held.length > 0 && held.length <= ADMIN_MAX_CONNECTIONS,
      `${held.length} of ${count} held: ${closedAfter.map(Math.round)}`,
    );
    assert.ok(Math.max(...closedAfter) < requestTimeoutMs + 3000);
    // Once they are gone the port serves again.
    assert.equal((await httpGet(port, "/healthz")).status, 200);
  } finally {
    for (const client of clients) client.close();
  }
});

Deno.test("admin module: shutdown closes a request still arriving at once, without waiting for its deadline", async () => {
  const admin = await startModule(); // The default deadline: 10 s.
  using halfSent = await LineClient.connect(admin.addr.port);
  await halfSent.send("GET /healthz HTTP/1.1\r\nHost:");
  // Accepted and read: a second connection is answered after it.
  assert.equal((await httpGet(admin.addr.port, "/healthz")).status, 200);
  const started = performance.now();
  await withTimeout(admin.shutdown(), 2000, "shutdown");
  assert.equal(await halfSent.readToEnd(1000), "");
  assert.ok(performance.now() - started < 2000);
});

// ---------------------------------------------------------------------------
// Requests the admin port does not take

Deno.test("admin module: a malformed or oversized request is 400, a bare-LF one is served", async () => {
  await using admin = await startModule();
  const port = admin.addr.port;
  const badRequests = [
    "hello\r\n\r\n",
    "GET /healthz\r\n\r\n",
    "GET /healthz HTTP/2.0\r\n\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
    "GET /healthz HTTP/1.1\r\n folded: header\r\n\r\n",
    "G(T /healthz HTTP/1.1\r\n\r\n",
    `GET /healthz HTTP/1.1\r\nX-Big: ${"a".repeat(9000)}\r\n\r\n`,
  ];
  for (const request of badRequests) {
    const answer = await exchange(port, request);
    assert.match(
      answer,
      /^HTTP\/1\.1 400 Bad Request\r\n/,
      JSON.stringify(request.slice(0, 40)),
    );
    assert.match(answer, /\r\nconnection: close\r\n/i);
  }
  const bareLf = await exchange(port, "GET /healthz HTTP/1.0\n\n");
  assert.match(bareLf, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/);
  const absolute = await exchange(
    port,
    "GET http://example/healthz HTTP/1.1\r\n\r\n",
  );
  assert.match(absolute, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(
    absolute,
    /\r\ncache-control: no-store\r\n/,
  );
});

// ---------------------------------------------------------------------------
// Process metrics

/** Process series with their types; the descriptor ones only where /proc is readable. */
const MEMORY_SERIES = [
  "process_resident_memory_bytes",
  "nodejs_heap_size_total_bytes",
  "nodejs_heap_size_used_bytes",
  "nodejs_external_memory_bytes",
];

Deno.test("admin module: /metrics adds the process's memory, with HELP and TYPE", async () => {
  await using admin = await startModule();
  const scrape = await scrapeMetrics(admin.addr.port);
  for (const name of MEMORY_SERIES) {
    assert.equal(scrape.types.get(name), "gauge", name);
  }
  const rss = sample(scrape, "process_resident_memory_bytes");
  const now = Deno.memoryUsage().rss;
  assert.ok(rss > now / 2 && rss < now * 2, `${rss} vs ${now}`);
  assert.ok(
    sample(scrape, "nodejs_heap_size_used_bytes") <=
      sample(scrape, "nodejs_heap_size_total_bytes"),
  );
  // Tests run without every permission, where /proc is closed: the
  // descriptor series are left out rather than failing the scrape.
  const open = scrape.samples.get("process_open_fds");
  if (open !== undefined) {
    assert.ok(open > 0 && open <= sample(scrape, "process_max_fds"));
  }
});

/**
 * Deno opens /proc only to a program with every permission (`--allow-all`,
 * which cannot be combined with the `--allow-net` the helper passes).
 */
const EVERY_PERMISSION = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
  "--allow-ffi",
  "--allow-import",
];

for (const workers of [1, 2]) {
  Deno.test({
    name:
      `server /metrics with ${workers} worker(s): the process's memory and descriptors, counted once`,
    ignore: !hasProc(),
    async fn() {
      await using server = await startWithAdmin(
        ["--workers", String(workers)],
        {
          denoFlags: EVERY_PERMISSION,
          wrapper: ["prlimit", "--nofile=300:300", "--"],
        },
      );
      const scrape = await scrapeMetrics(server.adminPort);
      assert.equal(sample(scrape, "process_max_fds"), 300);
      const open = sample(scrape, "process_open_fds");
      assert.ok(open > 3 && open < 300, `process_open_fds ${open}`);
      assert.equal(scrape.types.get("process_open_fds"), "gauge");
      // Close to what the kernel says: one process, not a sum over workers.
      const reported = sample(scrape, "process_resident_memory_bytes");
      const measured = await rssBytes(server.child.pid);
      assert.ok(
        reported > measured * 0.7 && reported < measured * 1.3,
        `reported ${reported}, /proc says ${measured}`,
      );
    },
  });
}

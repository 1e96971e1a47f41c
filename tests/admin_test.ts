/**
 * The admin endpoint (`--admin-port`): first `src/admin.ts` on its
 * own, then through `server.ts`, where `/metrics` must count real traffic
 * exactly and `/healthz` must turn 503 for as long as a drain lasts.
 */
import assert from "node:assert/strict";
import { METRICS_CONTENT_TYPE, startAdminServer } from "../src/admin.ts";
import {
  httpGet,
  parsePrometheusText,
  type Scrape,
  scrapeMetrics,
  waitForHealth,
  waitForMetric,
} from "./support/admin_client.ts";
import { LineClient } from "./support/line_client.ts";
import {
  ADMIN_LISTENING,
  ServerProcess,
  startWithAdmin,
} from "./support/server_process.ts";

const MAIN_LISTENING = /(?<!admin )listening on (\S+):(\d+)/;

// ---------------------------------------------------------------------------
// src/admin.ts on its own

Deno.test("admin module: /healthz follows isDraining, /metrics is renderMetrics()", async () => {
  let draining = false;
  let scrapes = 0;
  let listened: Deno.NetAddr | undefined;
  await using admin = await startAdminServer({
    hostname: "127.0.0.1",
    port: 0,
    isDraining: () => draining,
    renderMetrics: () => `# TYPE demo_total counter\ndemo_total ${++scrapes}\n`,
    onListen: (addr) => listened = addr,
  });
  assert.equal(admin.addr.hostname, "127.0.0.1");
  assert.ok(admin.addr.port > 0);
  assert.deepEqual(listened, admin.addr);
  const port = admin.addr.port;

  const ok = await httpGet(port, "/healthz");
  assert.equal(ok.status, 200);
  assert.equal(ok.body, "ok");
  assert.match(ok.headers.get("content-type") ?? "", /^text\/plain/);
  assert.equal((await httpGet(port, "/healthz?probe=1")).status, 200);

  const first = await httpGet(port, "/metrics");
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("content-type"), METRICS_CONTENT_TYPE);
  // The server's own series come first; the process's are added after them.
  assert.ok(
    first.body.startsWith("# TYPE demo_total counter\ndemo_total 1\n"),
    first.body,
  );
  assert.match(first.body, /^process_resident_memory_bytes \d+$/m);
  // Rendered per scrape, not cached.
  assert.match((await httpGet(port, "/metrics")).body, /^demo_total 2$/m);

  draining = true;
  const busy = await httpGet(port, "/healthz");
  assert.equal(busy.status, 503);
  assert.equal(busy.body, "draining");
  // Metrics stay available while draining.
  assert.equal((await httpGet(port, "/metrics")).status, 200);
});

Deno.test("admin module: unknown paths are 404, other methods 405", async () => {
  await using admin = await startAdminServer({
    hostname: "127.0.0.1",
    port: 0,
    isDraining: () => false,
    renderMetrics: () => "",
  });
  const port = admin.addr.port;
  for (
    const path of ["/", "/health", "/healthz/", "/metrics/x", "/favicon.ico"]
  ) {
    assert.equal((await httpGet(port, path)).status, 404, path);
  }
  for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
    for (const path of ["/healthz", "/metrics"]) {
      const result = await httpGet(port, path, { method });
      assert.equal(result.status, 405, `${method} ${path}`);
      assert.equal(result.headers.get("allow"), "GET, HEAD");
    }
  }
  const head = await httpGet(port, "/healthz", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.body, "");
});

Deno.test("admin module: shutdown() and the abort signal stop it; a busy port throws", async () => {
  const admin = await startAdminServer({
    hostname: "127.0.0.1",
    port: 0,
    isDraining: () => false,
    renderMetrics: () => "",
  });
  const port = admin.addr.port;
  await assert.rejects(
    () =>
      startAdminServer({
        hostname: "127.0.0.1",
        port,
        isDraining: () => false,
        renderMetrics: () => "",
      }),
    Deno.errors.AddrInUse,
  );
  await admin.shutdown();
  await admin.finished;
  await assert.rejects(httpGet(port, "/healthz"), TypeError);

  const controller = new AbortController();
  const viaSignal = await startAdminServer({
    hostname: "127.0.0.1",
    port: 0,
    isDraining: () => false,
    renderMetrics: () => "",
    signal: controller.signal,
  });
  assert.equal((await httpGet(viaSignal.addr.port, "/healthz")).status, 200);
  controller.abort();
  await viaSignal.finished;
  await assert.rejects(httpGet(viaSignal.addr.port, "/healthz"), TypeError);
  await viaSignal.shutdown(); // Harmless after the signal.
});

Deno.test("admin module: the Prometheus parser used below rejects garbage", () => {
  const scrape = parsePrometheusText(
    '# HELP a_total A.\n# TYPE a_total counter\na_total{kind="x"} 3\nb 1.5\n',
  );
  assert.equal(scrape.samples.get('a_total{kind="x"}'), 3);
  assert.equal(scrape.samples.get("b"), 1.5);
  assert.equal(scrape.types.get("a_total"), "counter");
  assert.throws(() => parsePrometheusText("not a metric line at all\n"));
  assert.throws(() => parsePrometheusText("a 1\na 2\n"));
});

// ---------------------------------------------------------------------------
// Through server.ts

const OUTCOMES = [
  "quit",
  "peer_closed",
  "idle_timeout",
  "shutdown",
  "forced",
  "reset",
  "fault",
  "refused_busy",
  "handshake_failed",
];
const ERROR_KINDS = [
  "line_too_long",
  "refused_busy",
  "idle_timeout",
  "reset",
  "handler_fault",
  "handshake_failed",
];

/** Every series the server promises, with its Prometheus type. */
const SERIES: [string, string][] = [
  ["lineserver_connections_active", "gauge"],
  ...OUTCOMES.map((o): [string, string] => [
    `lineserver_connections_total{outcome="${o}"}`,
    "counter",
  ]),
  ["lineserver_lines_total", "counter"],
  ...ERROR_KINDS.map((k): [string, string] => [
    `lineserver_errors_total{kind="${k}"}`,
    "counter",
  ]),
  ["lineserver_bytes_received_total", "counter"],
  ["lineserver_bytes_sent_total", "counter"],
  ["lineserver_log_lines_dropped_total", "counter"],
  ["lineserver_draining", "gauge"],
];

function value(scrape: Scrape, series: string): number {
  const v = scrape.samples.get(series);
  assert.notEqual(v, undefined, `series ${series} missing from /metrics`);
  return v!;
}

async function startAdmin(args: string[]) {
  const server = await startWithAdmin(args);
  return { server, adminHost: server.adminHost, adminPort: server.adminPort };
}

Deno.test("server --admin-port 0: announces itself after the main listener and serves /healthz", async () => {
  const { server, adminHost, adminPort } = await startAdmin([]);
  await using _ = server;
  assert.equal(adminHost, "127.0.0.1"); // Binds to --host.
  assert.notEqual(adminPort, server.port);
  const mainAt = server.stderr.search(MAIN_LISTENING);
  const adminAt = server.stderr.search(ADMIN_LISTENING);
  assert.ok(mainAt >= 0 && adminAt > mainAt, server.stderr);

  const linesBefore = server.stderr.split("\n").length;
  for (let i = 0; i < 10; i++) {
    const health = await httpGet(adminPort, "/healthz");
    assert.equal(health.status, 200);
    assert.equal(health.body, "ok");
  }
  const metrics = await httpGet(adminPort, "/metrics");
  assert.equal(metrics.status, 200);
  assert.equal(metrics.headers.get("content-type"), METRICS_CONTENT_TYPE);
  assert.equal((await httpGet(adminPort, "/nope")).status, 404);
  assert.equal(
    (await httpGet(adminPort, "/healthz", { method: "POST" })).status,
    405,
  );
  // Health checks hit every second in production: they are not logged at info.
  assert.equal(server.stderr.split("\n").length, linesBefore, server.stderr);
});

Deno.test("server /metrics: every series is exposed with its type and counts traffic exactly", async () => {
  const { server, adminPort } = await startAdmin([
    "--max-line-bytes",
    "8",
    "--max-connections",
    "1",
  ]);
  await using _ = server;

  const before = await scrapeMetrics(adminPort);
  for (const [series, type] of SERIES) {
    value(before, series);
    assert.equal(
      before.types.get(series.replace(/\{.*/, "")),
      type,
      `TYPE of ${series}`,
    );
  }
  assert.equal(value(before, "lineserver_connections_active"), 0);
  assert.equal(value(before, "lineserver_draining"), 0);

  // One client: 3 request lines, one line of 9 bytes (> 8), then quit.
  const welcome = "<welcome: starting in sum mode>\r\n";
  const requests = "1,2,4\nproduct\n3,5\n123456789\nquit\n";
  const replies = [
    "Sum of input integers: '7'",
    "<switching to product mode>",
    "Product of input integers: '15'",
    "ERROR. Line too long (max 8 bytes)",
    "connection closed",
  ];
  const refusal = "ERROR. Too many connections, try again later\r\n";
  {
    using client = await LineClient.connect(server.port);
    assert.equal(await client.readLine(), welcome.slice(0, -2));
    const during = await scrapeMetrics(adminPort);
    assert.equal(value(during, "lineserver_connections_active"), 1);

    // The limit is 1: a second client is refused and never takes a slot.
    using refused = await LineClient.connect(server.port);
    assert.equal(await refused.readToEnd(), refusal);

    await client.send(requests);
    assert.deepEqual(await client.readLines(replies.length), replies);
    await client.expectClosed();
  }

  // The server finishes its bookkeeping after closing: wait for it.
  const quit = 'lineserver_connections_total{outcome="quit"}';
  await waitForMetric(adminPort, quit, (n) => n > value(before, quit));
  const after = await scrapeMetrics(adminPort);

  const expected = new Map<string, number>(SERIES.map(([s]) => [s, 0]));
  expected.set('lineserver_connections_total{outcome="quit"}', 1);
  expected.set('lineserver_connections_total{outcome="refused_busy"}', 1);
  expected.set('lineserver_errors_total{kind="line_too_long"}', 1);
  expected.set('lineserver_errors_total{kind="refused_busy"}', 1);
  // Every complete request line read and answered, the too-long one and quit included.
  expected.set("lineserver_lines_total", 5);
  expected.set(
    "lineserver_bytes_received_total",
    new TextEncoder().encode(requests).length,
  );
  expected.set(
    "lineserver_bytes_sent_total",
    new TextEncoder().encode(welcome + replies.join("\r\n") + "\r\n" + refusal)
      .length,
  );
  const deltas = new Map(
    SERIES.map(([s]) => [s, value(after, s) - value(before, s)]),
  );
  assert.deepEqual(Object.fromEntries(deltas), Object.fromEntries(expected));
});

Deno.test("server /metrics with --workers 2 counts the traffic of every worker", async () => {
  // Workers are modules loaded from disk: the server needs to read the project.
  const projectRoot = new URL("..", import.meta.url).pathname;
  const server = await ServerProcess.start(
    ["--port", "0", "--admin-port", "0", "--workers", "2"],
    { denoFlags: [`--allow-read=${projectRoot}`] },
  );
  await using _ = server;
  const adminPort = server.adminPort;
  const clients: LineClient[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const client = await LineClient.connect(server.port);
      clients.push(client);
      assert.equal(await client.readLine(), "<welcome: starting in sum mode>");
      await client.send(`${i},1\n`);
      assert.equal(
        await client.readLine(),
        `Sum of input integers: '${i + 1}'`,
      );
    }
    const scrape = await scrapeMetrics(adminPort);
    assert.equal(value(scrape, "lineserver_connections_active"), 4);
    assert.equal(value(scrape, "lineserver_lines_total"), 4);
  } finally {
    for (const client of clients) client.close();
  }
});

Deno.test("server /healthz: 503 draining for as long as the drain lasts", async () => {
  const { server, adminPort } = await startAdmin([
    "--shutdown-timeout",
    "600",
  ]);
  await using _ = server;
  assert.equal((await httpGet(adminPort, "/healthz")).status, 200);

  using client = await LineClient.connect(server.port);
  assert.equal(await client.readLine(), "<welcome: starting in sum mode>");
  await client.send("1,2"); // Half a line: the drain waits for the rest.
  await waitForMetric(
    adminPort,
    "lineserver_bytes_received_total",
    (n) => n === 3,
  );
  server.signal("SIGTERM");

  const draining = await waitForHealth(
    adminPort,
    (r) => r.status !== 200,
    5000,
  );
  assert.equal(draining.status, 503);
  assert.equal(draining.body, "draining");
  assert.equal(value(await scrapeMetrics(adminPort), "lineserver_draining"), 1);
  // Still draining a second later: the answer holds for the whole drain.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const still = await httpGet(adminPort, "/healthz");
  assert.deepEqual([still.status, still.body], [503, "draining"]);
  assert.equal(server.exited, undefined);

  await client.send(",3\n");
  assert.equal(await client.readLine(), "Sum of input integers: '6'");
  assert.equal(await client.readLine(), "<server shutting down>");
  await client.expectClosed();
  const status = await server.waitForExit(5000);
  assert.equal(status.code, 0, server.stderr);
});

Deno.test("server --admin-port: a bad value is a usage error, a busy port exit 1", async () => {
  const bad = ServerProcess.spawn(["--port", "0", "--admin-port", "abc"]);
  const badStatus = await bad.waitForExit(15000);
  assert.equal(badStatus.code, 2, bad.stderr);
  const badLines = bad.stderr.trimEnd().split("\n");
  assert.equal(badLines.length, 1, bad.stderr);
  assert.match(badLines[0], /--admin-port/);
  assert.match(badLines[0], /--help/);

  using occupied = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (occupied.addr as Deno.NetAddr).port;
  const busy = ServerProcess.spawn([
    "--port",
    "0",
    "--admin-port",
    String(port),
  ]);
  const busyStatus = await busy.waitForExit(15000);
  assert.equal(busyStatus.code, 1, busy.stderr);
  assert.doesNotMatch(busy.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(busy.stderr, ADMIN_LISTENING);
  assert.match(busy.stderr, new RegExp(`\\b${port}\\b`));
});

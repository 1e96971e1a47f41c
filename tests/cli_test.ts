/**
 * `server.ts` as a user runs it (a real `deno run` subprocess): options,
 * exit codes, the listening line, logging, and restarting on the same port.
 */
import assert from "node:assert/strict";
import { delay } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import {
  runServerToExit,
  SERVER_ENTRY,
  ServerProcess,
} from "./support/server_process.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";
import { connectTlsLineClient } from "./support/tls_client.ts";
import { freePort, runDeno } from "./support/tools.ts";
import { builtinProtocols } from "../protocol.ts";

const WELCOME = "<welcome: starting in sum mode>";

/** Non-empty lines of `text`. */
function linesOf(text: string): string[] {
  const lines = text.split("\n").map((line) => line.replace(/\r$/, ""));
  return lines.filter((line) => line.trim() !== "");
}

/** Fails if `stderr` looks like an uncaught exception or a stack trace. */
function assertNoStackTrace(stderr: string) {
  assert.doesNotMatch(
    stderr,
    /^\s+at .*:\d+:\d+\)?$/m,
    `stack trace: ${stderr}`,
  );
  assert.doesNotMatch(stderr, /Uncaught/, `uncaught error: ${stderr}`);
}

/** Stops a server with SIGTERM and asserts it exits with code 0. */
async function stopGracefully(server: ServerProcess) {
  server.signal("SIGTERM");
  const status = await server.waitForExit(10000);
  assert.equal(status.code, 0, `exit code; stderr:\n${server.stderr}`);
}

/** Connects, checks the welcome, asks one sum, quits and sees the close. */
async function oneSession(port: number, request = "1,2,4") {
  using client = await LineClient.connect(port);
  assert.equal(await client.readLine(), WELCOME);
  await client.send(`${request}\n`);
  await client.readLine();
  await client.send("quit\n");
  assert.equal(await client.readLine(), "connection closed");
  await client.expectClosed();
  return `127.0.0.1:${client.conn.localAddr.port}`;
}

Deno.test("cli: --help prints usage on stdout and exits 0", async () => {
  const { code, stdout } = await runServerToExit(["--help"]);
  assert.equal(code, 0);
  assert.match(stdout, /usage/i);
  for (
    const option of [
      "--host",
      "--port",
      "--protocol",
      "--max-line-bytes",
      "--max-connections",
      "--idle-timeout",
      "--shutdown-timeout",
      "--log-level",
      "--log-format",
      "--workers",
      "--tls-cert",
      "--tls-key",
      "--admin-port",
      "--line-timeout",
      "--max-connections-per-ip",
      "--proxy-protocol",
      "--help",
      "--version",
    ]
  ) {
    assert.ok(stdout.includes(option), `--help does not mention ${option}`);
  }
});

Deno.test("cli: --version prints the package version and exits 0", async () => {
  const { code, stdout } = await runServerToExit(["--version"]);
  assert.equal(code, 0);
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  assert.ok(
    stdout.includes(config.version),
    `stdout ${JSON.stringify(stdout)} lacks version ${config.version}`,
  );
});

const BAD_ARGS: { args: string[]; names: string }[] = [
  { args: ["--port", "99999"], names: "port" },
  { args: ["--port", "abc"], names: "port" },
  { args: ["--port", "-1"], names: "port" },
  { args: ["--port=8080.5"], names: "port" },
  { args: ["--port"], names: "port" },
  { args: ["--bogus"], names: "bogus" },
  { args: ["--protocol", "nope"], names: "protocol" },
  { args: ["--max-line-bytes", "0"], names: "max-line-bytes" },
  { args: ["--max-line-bytes", "1.5"], names: "max-line-bytes" },
  { args: ["--idle-timeout", "-1"], names: "idle-timeout" },
  { args: ["--idle-timeout", "abc"], names: "idle-timeout" },
  { args: ["--shutdown-timeout", "soon"], names: "shutdown-timeout" },
  { args: ["--log-level", "loud"], names: "log-level" },
  { args: ["--log-format", "xml"], names: "log-format" },
  { args: ["--workers", "-1"], names: "workers" },
  { args: ["--line-timeout", "-1"], names: "line-timeout" },
  { args: ["--line-timeout", "soon"], names: "line-timeout" },
  {
    args: ["--max-connections-per-ip", "1.5"],
    names: "max-connections-per-ip",
  },
  {
    args: ["--max-connections-per-ip", "1000001"],
    names: "max-connections-per-ip",
  },
  { args: ["--proxy-protocol=yes"], names: "proxy-protocol" },
  { args: ["--protocol", "chat", "--workers", "2"], names: "--protocol chat" },
  { args: ["--host", "999.1.1.1"], names: "--host" },
  { args: ["--port", "0", "--port", "0"], names: "--port" },
  { args: ["--shutdown-timeout", "0"], names: "--shutdown-timeout" },
  { args: ["--chat-redis", "redis://127.0.0.1:1"], names: "--chat-redis" },
  {
    args: ["--protocol", "chat", "--chat-redis", "tcp://127.0.0.1:1"],
    names: "chat-redis",
  },
];

for (const { args, names } of BAD_ARGS) {
  Deno.test(`cli: ${args.join(" ")} is one stderr line and exit 2`, async () => {
    // If a bad value were wrongly accepted, bind port 0, never the default.
    const port = names === "port" ? [] : ["--port", "0"];
    const { code, stdout, stderr } = await runServerToExit([...port, ...args]);
    assert.equal(code, 2, `exit code; stderr: ${stderr}`);
    const lines = linesOf(stderr);
    assert.equal(lines.length, 1, `expected one stderr line, got:\n${stderr}`);
    assert.ok(lines[0].includes(names), `does not name ${names}: ${lines[0]}`);
    assert.ok(lines[0].includes("--help"), `no --help hint: ${lines[0]}`);
    assertNoStackTrace(stderr);
    assert.doesNotMatch(stdout, /listening on/);
  });
}

Deno.test("cli: a port in use is one stderr line and exit 1", async () => {
  using held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  const { code, stderr } = await runServerToExit(["--port", String(port)]);
  assert.equal(code, 1, `exit code; stderr: ${stderr}`);
  const lines = linesOf(stderr);
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${stderr}`);
  assert.ok(
    lines[0].includes(String(port)),
    `does not name the port: ${lines[0]}`,
  );
  assertNoStackTrace(stderr);
});

Deno.test("cli: an address that is valid but not this machine's is exit 1 with the reason", async () => {
  // TEST-NET-1: never assigned to a machine, so binding it fails locally.
  const { code, stderr } = await runServerToExit(["--host", "192.0.2.1"]);
  assert.equal(code, 1, `exit code; stderr: ${stderr}`);
  const lines = linesOf(stderr);
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${stderr}`);
  assert.match(lines[0], /^lineserver: Cannot listen on 192\.0\.2\.1:8080: \S/);
  assertNoStackTrace(stderr);
});

Deno.test("cli: without --allow-net, one line says which flag to add, exit 2", async () => {
  for (
    const [flags, args, where] of [
      [[], ["--port", "0"], "127.0.0.1:0"],
      // Granted for the line port only: the admin port is named.
      [["--allow-net=127.0.0.1:0"], [
        "--port",
        "0",
        "--admin-port",
        "1",
      ], "127.0.0.1:1 (--admin-port)"],
    ] as const
  ) {
    const { code, stdout, stderr } = await new Deno.Command("deno", {
      args: ["run", ...flags, SERVER_ENTRY, ...args],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 2, `exit code; stderr: ${text}`);
    const lines = linesOf(text);
    assert.equal(lines.length, 1, `expected one stderr line, got:\n${text}`);
    assert.ok(
      lines[0].startsWith(`lineserver: Cannot listen on ${where}: `),
      lines[0],
    );
    assert.match(lines[0], /add --allow-net\b/);
    assertNoStackTrace(text);
    assert.equal(stdout.length, 0);
  }
});

Deno.test("cli: deno task lists every task with its description", async () => {
  // Bounded as the other `deno task` run here (`deno task start -- --version`).
  const { code, output: listing } = await runDeno(
    ["task"],
    new URL("..", import.meta.url).pathname,
    30000,
  );
  assert.equal(code, 0, listing);
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  for (const name of Object.keys(config.tasks)) {
    assert.match(
      listing,
      new RegExp(`^- ${name}\\n {4}// \\S`, "m"),
      `no description under ${name}:\n${listing}`,
    );
  }
});

Deno.test("cli: deno task start -- --version: the -- that deno task passes on is skipped", async () => {
  const server = ServerProcess.spawn(["--", "--version"], { task: "start" });
  try {
    const status = await server.waitForExit(30000);
    assert.equal(status.code, 0, server.stderr);
    assert.match(server.stdout, /^lineserver \d+\.\d+\.\d+/);
  } finally {
    await server.stop();
  }
});

Deno.test("cli: the listening line appears even at --log-level error", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--log-level",
    "error",
  ]);
  assert.equal(server.host, "127.0.0.1");
  assert.ok(server.port > 0);
  const peer = await oneSession(server.port);
  await stopGracefully(server);
  // Connection logs are info level: not shown at error level.
  assert.ok(!server.stderr.includes(peer), server.stderr);
});

Deno.test("cli: --log-format json writes one JSON object per stderr line", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--log-format",
    "json",
    "--log-level",
    "debug",
  ]);
  // Read the port here: the shared helper's `(\S+):(\d+)` is greedy and, on
  // a JSON line, runs on to the last `"key":digits` of the line.
  const listening = server.stderr.match(/listening on 127\.0\.0\.1:(\d+)\D/);
  assert.ok(listening, server.stderr);
  const port = Number(listening[1]);
  const peer = await oneSession(port);
  {
    // One more connection that is still open at shutdown.
    using idle = await LineClient.connect(port);
    assert.equal(await idle.readLine(), WELCOME);
    server.signal("SIGTERM");
    assert.equal(await idle.readLine(), "<server shutting down>");
    await idle.expectClosed();
  }
  const status = await server.waitForExit(10000);
  assert.equal(status.code, 0);
  const lines = linesOf(server.stderr);
  assert.ok(lines.length >= 3, server.stderr);
  for (const line of lines) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      assert.fail(`stderr line is not JSON: ${line}`);
    }
    assert.ok(
      typeof parsed === "object" && parsed !== null && !Array.isArray(parsed),
      `stderr line is not a JSON object: ${line}`,
    );
  }
  assert.ok(
    lines.some((line) => line.includes(`listening on 127.0.0.1:${port}`)),
    "no listening line",
  );
  assert.ok(
    lines.some((line) => line.includes(peer.split(":")[1])),
    `no line names the peer ${peer}`,
  );
});

/** Waits until stderr has a line naming `peer` that says opened, and one that says closed. */
async function waitForConnectionLogs(server: ServerProcess, peer: string) {
  const deadline = Date.now() + 5000;
  while (true) {
    const named = linesOf(server.stderr).filter((line) => line.includes(peer));
    const opened = named.find((line) => /open|accept/i.test(line));
    const closed = named.find((line) =>
      line !== opened && /clos|\bend|disconnect/i.test(line)
    );
    if (opened && closed) return closed;
    if (Date.now() > deadline) {
      assert.fail(
        `no "opened" and "closed" lines naming ${peer}:\n${server.stderr}`,
      );
    }
    await delay(20);
  }
}

Deno.test("cli: info level logs connections but not request text", async () => {
  await using server = await ServerProcess.start(["--port", "0"]);
  const secret = "7777777,1234567";
  const peer = await oneSession(server.port, secret);
  const closed = await waitForConnectionLogs(server, peer);
  // How it ended, and how many lines (the request and `quit`).
  assert.match(closed, /\bquit\b/, closed);
  assert.match(closed, /\b2 lines\b/, closed);
  await stopGracefully(server);
  assert.ok(
    !server.stderr.includes(secret),
    `request text logged at info:\n${server.stderr}`,
  );
});

Deno.test("cli: debug level logs request text", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--log-level",
    "debug",
  ]);
  const secret = "7777777,1234567";
  const peer = await oneSession(server.port, secret);
  await waitForConnectionLogs(server, peer);
  await server.waitForStderr(new RegExp(secret), 5000);
  await stopGracefully(server);
});

Deno.test("cli: restart on the same port right after SIGTERM", async () => {
  let port: number;
  {
    await using first = await ServerProcess.start(["--port", "0"]);
    port = first.port;
    // The server closes this one first (quit), so its side sits in TIME_WAIT.
    await oneSession(port);
    using idle = await LineClient.connect(port);
    assert.equal(await idle.readLine(), WELCOME);
    first.signal("SIGTERM");
    assert.equal(await idle.readLine(), "<server shutting down>");
    await idle.expectClosed();
    const status = await first.waitForExit(10000);
    assert.equal(status.code, 0, first.stderr);
  }
  await using second = await ServerProcess.start(["--port", String(port)]);
  assert.equal(second.port, port);
  await oneSession(port);
  await stopGracefully(second);
});

Deno.test("cli: --protocol echo serves echo", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--protocol",
    "echo",
    "--max-line-bytes",
    "8",
  ]);
  using client = await LineClient.connect(server.port);
  await client.send("hi there\nnine char\n");
  assert.deepEqual(await client.readLines(2), [
    "hi there",
    "ERROR. Line too long (max 8 bytes)",
  ]);
  client.close();
  await stopGracefully(server);
});

Deno.test("cli: the info start log names address, protocol and limits", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--protocol",
    "echo",
    "--max-line-bytes",
    "43219",
    "--max-connections",
    "7651",
  ]);
  await stopGracefully(server);
  // No connection was made: only the start can mention these values.
  for (const expected of [/\becho\b/, /\b43219\b/, /\b7651\b/]) {
    assert.match(
      server.stderr,
      expected,
      `start log lacks ${expected}:\n${server.stderr}`,
    );
  }
});

Deno.test("cli: --help says which options need --allow-read", async () => {
  const { code, stdout } = await runServerToExit(["--help"]);
  assert.equal(code, 0);
  for (const option of ["--workers", "--tls-cert", "--tls-key"]) {
    // The option's own entry, with its continuation lines.
    const entry = stdout.match(
      new RegExp(`^  ${option} [^\\n]*(?:\\n {20,}[^\\n]*)*`, "m"),
    );
    assert.ok(entry, `no entry for ${option}:\n${stdout}`);
    assert.match(entry[0], /--allow-read/, entry[0]);
  }
  assert.match(stdout, /deno task start/);
});

Deno.test("cli: deno task start can use --workers 2 (the task grants --allow-read)", async () => {
  await using server = await ServerProcess.start(
    ["--port", "0", "--workers", "2"],
    { task: "start", startTimeoutMs: 30000 },
  );
  assert.match(server.stderr, /\b2 workers\b/);
  await oneSession(server.port);
  await stopGracefully(server);
});

const opensslMissing = await opensslMissingReason();

Deno.test({
  name: opensslMissing
    ? `cli: deno task start serves TLS (ignored: ${opensslMissing})`
    : "cli: deno task start can read --tls-cert and --tls-key (the task grants --allow-read)",
  ignore: opensslMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    await using server = await ServerProcess.start(
      ["--port", "0", "--tls-cert", cert.certFile, "--tls-key", cert.keyFile],
      { task: "start", startTimeoutMs: 30000 },
    );
    {
      using client = await connectTlsLineClient(server.port, cert.certPem);
      assert.equal(await client.readLine(), WELCOME);
      await client.send("1,2,4\nquit\n");
      assert.deepEqual(await client.readLines(2), [
        "Sum of input integers: '7'",
        "connection closed",
      ]);
    }
    await stopGracefully(server);
  },
});

for (const occupant of ["--port", "another program"] as const) {
  Deno.test(`cli: --admin-port in use by ${occupant} is one stderr line and exit 1, before any listening line`, async () => {
    using held = occupant === "--port"
      ? undefined
      : Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = held ? (held.addr as Deno.NetAddr).port : freePort();
    const { code, stderr } = await runServerToExit([
      "--port",
      occupant === "--port" ? String(port) : "0",
      "--admin-port",
      String(port),
    ]);
    assert.equal(code, 1, `exit code; stderr: ${stderr}`);
    const lines = linesOf(stderr);
    assert.equal(lines.length, 1, `expected one stderr line, got:\n${stderr}`);
    assert.match(lines[0], /--admin-port/);
    assert.match(lines[0], new RegExp(`:${port}\\b.*in use`));
    assertNoStackTrace(stderr);
  });
}

/** A port that was free a moment ago. */
Deno.test("cli: the shutdown summary counts served and open-at-shutdown apart, in the singular for 1", async () => {
  await using server = await ServerProcess.start(["--port", "0"]);
  // The first has ended for the server too before the shutdown begins.
  await waitForConnectionLogs(server, await oneSession(server.port));
  {
    using idle = await LineClient.connect(server.port);
    assert.equal(await idle.readLine(), WELCOME);
    server.signal("SIGTERM");
    assert.equal(await idle.readLine(), "<server shutting down>");
    await idle.expectClosed();
  }
  assert.equal((await server.waitForExit(10000)).code, 0, server.stderr);
  assert.match(
    server.stderr,
    /shutdown complete: 2 connections served; 1 open at shutdown: 1 finished gracefully, 0 closed by force\r?\n/,
  );

  await using single = await ServerProcess.start(["--port", "0"]);
  await waitForConnectionLogs(single, await oneSession(single.port));
  await stopGracefully(single);
  assert.match(
    single.stderr,
    /shutdown complete: 1 connection served; 0 open at shutdown: 0 finished gracefully, 0 closed by force\r?\n/,
  );
  assert.match(single.stderr, /\b1 worker,/);
});

Deno.test("cli: --log-format json: the summary carries its counts as fields", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--log-format",
    "json",
  ]);
  const listening = server.stderr.match(/listening on 127\.0\.0\.1:(\d+)\D/);
  assert.ok(listening, server.stderr);
  const peer = await oneSession(Number(listening[1]));
  await waitForConnectionLogs(server, peer);
  await stopGracefully(server);
  const summary = linesOf(server.stderr).map((line) => JSON.parse(line))
    .find((record) => /^shutdown complete/.test(record.message));
  assert.ok(summary, server.stderr);
  assert.deepEqual(
    {
      served: summary.served,
      openAtShutdown: summary.openAtShutdown,
      closedGracefully: summary.closedGracefully,
      closedByForce: summary.closedByForce,
    },
    { served: 1, openAtShutdown: 0, closedGracefully: 0, closedByForce: 0 },
  );
});

Deno.test("cli: --help shows the new options with their defaults", async () => {
  const { code, stdout } = await runServerToExit(["--help"]);
  assert.equal(code, 0);
  assert.match(stdout, /--protocol calc\|echo\|chat\b/);
  for (
    const [option, fallback] of [
      ["--line-timeout", "default 60"],
      ["--max-connections-per-ip", "default 0"],
      ["--proxy-protocol", "default off"],
    ]
  ) {
    const entry = stdout.match(
      new RegExp(`^  ${option}\\b[^\\n]*(?:\\n {20,}[^\\n]*)*`, "m"),
    );
    assert.ok(entry, `no entry for ${option}:\n${stdout}`);
    assert.ok(entry[0].includes(fallback), entry[0]);
  }
});

Deno.test("cli: the start line shows the line timeout, and the per-address limit and PROXY protocol when on", async () => {
  await using plain = await ServerProcess.start(["--port", "0"]);
  await stopGracefully(plain);
  const plainLine = plain.stderr.match(/listening on .*/)?.[0] ?? "";
  assert.match(plainLine, /\bline timeout 60 s\b/);
  assert.doesNotMatch(plainLine, /per address|PROXY/);

  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--line-timeout",
    "7.5",
    "--max-connections-per-ip",
    "3",
    "--proxy-protocol",
  ]);
  await stopGracefully(server);
  const line = server.stderr.match(/listening on .*/)?.[0] ?? "";
  assert.match(line, /\bline timeout 7\.5 s\b/);
  assert.match(line, /\bmax 3 per address\b/);
  assert.match(line, /\bPROXY protocol\b/);
});

const chatBuiltIn = builtinProtocols["chat"] !== undefined;

Deno.test(
  chatBuiltIn
    ? "cli: --protocol chat serves the chat protocol"
    : "cli: --protocol chat, not in builtinProtocols yet, is one stderr line and exit 2",
  async () => {
    if (chatBuiltIn) {
      await using server = await ServerProcess.start([
        "--port",
        "0",
        "--protocol",
        "chat",
      ]);
      assert.match(server.stderr, /listening on .*\bprotocol chat\b/);
      await stopGracefully(server);
      return;
    }
    const { code, stderr } = await runServerToExit([
      "--port",
      "0",
      "--protocol",
      "chat",
    ]);
    assert.equal(code, 2, stderr);
    const lines = linesOf(stderr);
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /--protocol.*\bchat\b/);
    assertNoStackTrace(stderr);
  },
);

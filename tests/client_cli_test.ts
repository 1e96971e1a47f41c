/**
 * `client.ts` as a user runs it: against a real lineserver, and against
 * scripted servers that close first, reset, never answer or refuse; its
 * exit codes, its one-line messages, its options.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { startServer } from "../mod.ts";
import { parseClientCli } from "../src/client_cli.ts";
import { cpuSeconds } from "./support/hardening.ts";
import { WELCOME } from "./support/calc_replies.ts";
import { ScriptProcess } from "./support/script_process.ts";
import { freePort } from "./support/tools.ts";
import { withScriptedServer } from "./support/scripted_server.ts";
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";
import { startTlsServer } from "./support/tls_server.ts";

/** The lines `socket` receives, as they arrive. */
function linesOf(socket: net.Socket): string[] {
  const lines: string[] = [];
  let partial = "";
  socket.on("data", (data) => {
    const parts = (partial + data).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
  });
  return lines;
}

Deno.test("client.ts: piped lines to the calculator, replies printed without CR, exit 0 when the server closes", async () => {
  await using server = await startServer({ port: 0 });
  await using client = ScriptProcess.client([`127.0.0.1:${server.addr.port}`]);
  await client.write("1,2,4\nproduct\r\n2,3\n99999999999,99999999999");
  await client.endInput();
  const status = await client.waitForExit();
  assert.equal(
    client.stdout,
    [
      WELCOME,
      "Sum of input integers: '7'",
      "<switching to product mode>",
      "Product of input integers: '6'",
      "Product of input integers: '9999999999800000000001'",
      "",
    ].join("\n"),
  );
  assert.equal(client.stderr, "");
  assert.equal(status.code, 0);
});

Deno.test("client.ts: each line is printed as it arrives; quit closes from the server's side and the client exits at once", async () => {
  await using server = await startServer({ port: 0 });
  await using client = ScriptProcess.client([`127.0.0.1:${server.addr.port}`]);
  await client.waitForStdout("the welcome", (out) => out === `${WELCOME}\n`);
  await client.write("2,2\n");
  await client.waitForStdout("the reply", (out) => out.endsWith("'4'\n"));
  // stdin stays open: the server's close alone ends the client.
  await client.write("quit\n");
  const status = await client.waitForExit();
  assert.ok(client.stdout.endsWith("connection closed\n"), client.stdout);
  assert.equal(status.code, 0);
});

Deno.test("client.ts: at the end of stdin it half-closes and prints until the server closes", async () => {
  await withScriptedServer((socket) => {
    const lines = linesOf(socket);
    socket.allowHalfOpen = true;
    socket.on("end", () => {
      setTimeout(
        () => socket.end(`got ${JSON.stringify(lines)}\r\nbye\n`),
        200,
      );
    });
  }, async ({ port }) => {
    await using client = ScriptProcess.client([`127.0.0.1:${port}`]);
    await client.write("one\ntwo  \nlast without LF");
    await client.endInput();
    const status = await client.waitForExit();
    assert.equal(
      client.stdout,
      'got ["one","two","last without LF"]\nbye\n',
    );
    assert.equal(status.code, 0);
  });
});

Deno.test("client.ts: a server that closes first: what arrived is printed, exit 0 without waiting for stdin", async () => {
  await withScriptedServer((socket) => {
    socket.end("first\r\nsecond\r\nunfinished");
  }, async ({ port }) => {
    await using client = ScriptProcess.client([`127.0.0.1:${port}`]);
    const status = await client.waitForExit();
    assert.equal(client.stdout, "first\nsecond\nunfinished\n");
    assert.equal(client.stderr, "");
    assert.equal(status.code, 0);
  });
});

Deno.test("client.ts: a reset is one line on stderr and exit 1", async () => {
  await withScriptedServer((socket) => {
    socket.write("hello\r\n");
    socket.once("data", () => socket.resetAndDestroy());
  }, async ({ port }) => {
    await using client = ScriptProcess.client([`127.0.0.1:${port}`]);
    await client.write("anything\n");
    const status = await client.waitForExit();
    assert.equal(client.stdout, "hello\n");
    assert.equal(
      client.stderr,
      `client: Connection to 127.0.0.1:${port} reset\n`,
    );
    assert.equal(status.code, 1);
  });
});

Deno.test("client.ts: a refused connection is one line naming HOST:PORT and exit 1", async () => {
  const port = freePort();
  await using client = ScriptProcess.client([`127.0.0.1:${port}`]);
  const status = await client.waitForExit();
  assert.equal(
    client.stderr,
    `client: Cannot connect to 127.0.0.1:${port}: connection refused\n`,
  );
  assert.equal(status.code, 1);
});

Deno.test("client.ts: a server that does not accept is given up after --connect-timeout", async () => {
  // Deno.listen never accepts by itself: once its queue of 511 is full
  // the kernel drops further connection requests, and connecting hangs.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const queued: Deno.Conn[] = [];
  try {
    while (queued.length < 2048) {
      const conn = await Promise.race([
        Deno.connect({ hostname: "127.0.0.1", port }),
        new Promise<undefined>((resolve) =>
          setTimeout(() => resolve(undefined), 200)
        ),
      ]);
      if (conn === undefined) break;
      queued.push(conn);
    }
    await using client = ScriptProcess.client([
      `127.0.0.1:${port}`,
      "--connect-timeout",
      "0.5",
    ]);
    const status = await client.waitForExit();
    assert.equal(
      client.stderr,
      `client: Cannot connect to 127.0.0.1:${port}: no answer in 0.5 s\n`,
    );
    assert.equal(status.code, 1);
  } finally {
    listener.close();
    for (const conn of queued) conn.close();
  }
});

Deno.test("client.ts: --timeout: a line sent and nothing back is one line and exit 1, with no CPU used while waiting", async () => {
  await withScriptedServer((socket) => {
    socket.write("welcome\r\n");
  }, async ({ port, accepted }) => {
    await using client = ScriptProcess.client([
      `127.0.0.1:${port}`,
      "--timeout",
      "1.5",
    ]);
    const peer = await accepted();
    const received = linesOf(peer);
    await client.waitForStdout("the welcome", (out) => out === "welcome\n");
    // Silence before any line was sent is not a timeout.
    await delay(1800);
    assert.equal(client.exited, undefined, client.stderr);
    await client.write("hello?\n");
    await waitFor(
      "the server to get the line",
      () => received.length === 1,
      5000,
    );
    const sentAt = Date.now();
    const cpuBefore = await cpuSeconds(client.child.pid);
    await delay(1000);
    const cpuUsed = await cpuSeconds(client.child.pid) - cpuBefore;
    const status = await client.waitForExit();
    const waited = Date.now() - sentAt;
    assert.equal(
      client.stderr,
      `client: no reply from 127.0.0.1:${port} in 1.5 s\n`,
    );
    assert.equal(status.code, 1);
    assert.ok(
      waited >= 1000 && waited < 5000,
      `exited ${waited} ms after the line`,
    );
    assert.ok(cpuUsed <= 0.05, `${cpuUsed} s of CPU in 1 s of waiting`);
  });
});

Deno.test("client.ts: SIGINT closes the connection and exits 130", async () => {
  await withScriptedServer(() => {}, async ({ port, accepted }) => {
    await using client = ScriptProcess.client([`127.0.0.1:${port}`]);
    const peer = await accepted();
    const closed = new Promise((resolve) => peer.once("close", resolve));
    client.signal("SIGINT");
    const status = await client.waitForExit();
    assert.equal(status.code, 130);
    await withTimeout(closed, 5000, "the server to see the connection close");
  });
});

const opensslMissing = await opensslMissingReason();

Deno.test({
  name:
    "client.ts: --tls with --ca or --insecure; an untrusted certificate is one line and exit 1",
  ignore: opensslMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    await using server = await startTlsServer(cert);
    const address = `127.0.0.1:${server.addr.port}`;
    for (const flags of [["--ca", cert.certFile], ["--insecure"]]) {
      await using client = ScriptProcess.client([address, "--tls", ...flags]);
      await client.write("3,4\n");
      await client.endInput();
      const status = await client.waitForExit();
      assert.equal(client.stdout, `${WELCOME}\nSum of input integers: '7'\n`);
      assert.equal(status.code, 0, client.stderr);
    }
    await using untrusted = ScriptProcess.client([address, "--tls"]);
    const status = await untrusted.waitForExit();
    assert.match(
      untrusted.stderr,
      new RegExp(
        `^client: Cannot connect to ${address}: TLS handshake failed: .+\n$`,
      ),
    );
    assert.equal(status.code, 1);
  },
});

Deno.test("client.ts: bad options are one line naming the option, exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["127.0.0.1:8080", "--timeout", "soon"],
      /^client: Invalid value for --timeout: /,
    ],
    [["127.0.0.1:8080", "--bogus"], /^client: Unknown option: --bogus;/],
    [[], /^client: Missing the server's address: HOST:PORT;/],
    [["127.0.0.1"], /^client: Invalid address: expected HOST:PORT/],
    [["127.0.0.1:8080", "--ca", "x.pem"], /^client: Option --ca needs --tls;/],
    [
      ["127.0.0.1:8080", "--tls", "--ca", "/nonexistent.pem"],
      /^client: Cannot read --ca \/nonexistent\.pem: /,
    ],
  ];
  for (const [args, expected] of cases) {
    await using client = ScriptProcess.client(args);
    const status = await client.waitForExit();
    assert.match(client.stderr, expected, args.join(" "));
    assert.equal(client.stderr.trimEnd().split("\n").length, 1, client.stderr);
    assert.equal(status.code, 2, args.join(" "));
  }
});

Deno.test("client.ts: option parsing", () => {
  const run = parseClientCli([
    "[::1]:7",
    "--timeout",
    "0.25",
    "--connect-timeout",
    "3",
  ]);
  assert.equal(run.kind, "run");
  if (run.kind === "run") {
    assert.equal(run.options.hostname, "::1");
    assert.equal(run.options.port, 7);
    assert.equal(run.options.timeoutMs, 250);
    assert.equal(run.options.connectTimeoutMs, 3000);
    assert.equal(run.options.tls, false);
  }
  const defaults = parseClientCli(["localhost:8080"]);
  assert.ok(defaults.kind === "run" && defaults.options.timeoutMs === 0);
  assert.ok(
    defaults.kind === "run" && defaults.options.connectTimeoutMs === 10_000,
  );
  for (
    const args of [
      ["h:0"],
      ["h:65536"],
      ["h:8080", "--connect-timeout", "0"],
      ["h:8080", "--timeout", "-1"],
      ["h:8080", "extra"],
      ["h:8080", "--tls", "--ca", "f", "--insecure"],
      ["h:8080", "--timeout", "1", "--timeout", "2"],
      ["h:8080", "--tls=yes"],
      ["h:8080", "--timeout"],
      ["h:8080", "--timeout", "--tls"],
    ]
  ) {
    assert.equal(parseClientCli(args).kind, "error", args.join(" "));
  }
  assert.equal(parseClientCli(["--help"]).kind, "help");
  assert.equal(parseClientCli(["--", "--version"]).kind, "version");
  const negative = parseClientCli(["h:1", "--timeout", "-1"]);
  assert.ok(
    negative.kind === "error" &&
      negative.message.startsWith("Invalid value for --timeout:"),
  );
});

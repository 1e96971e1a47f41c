/**
 * TLS (`--tls-cert FILE --tls-key FILE`): the same protocol byte for
 * byte over TLS; clients that never finish a handshake harm nobody and are
 * dropped after 10 s; bad files fail fast with one line and exit 2.
 *
 * Needs `openssl` (Debian package `openssl`) to make a throwaway certificate.
 */
import assert from "node:assert/strict";
import { WELCOME } from "./support/calc_replies.ts";
import { delay } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { ServerProcess } from "./support/server_process.ts";
import {
  createTestCertificate,
  opensslMissingReason,
  type TestCertificate,
} from "./support/tls_cert.ts";
import { connectTlsLineClient } from "./support/tls_client.ts";
import { floodUntilStalled, MiB } from "./support/hardening.ts";
import { startTlsServer, startTlsServerProcess } from "./support/tls_server.ts";

const missing = await opensslMissingReason();
if (missing) console.error(`tls_test.ts: ignoring every test: ${missing}`);

function tlsTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: missing ? `${name} (ignored: ${missing})` : name,
    ignore: missing !== undefined,
    fn,
  });
}

tlsTest(
  "tls: the calculator over TLS is byte-exact, and SIGTERM drains TLS clients",
  async () => {
    await using cert = await createTestCertificate();
    await using server = await startTlsServerProcess(cert);

    using client = await connectTlsLineClient(server.port, cert.certPem);
    await client.send(
      "1,2,4\r\nproduct\n1,2,4\n99999999999,99999999999\nSum\n\nquit\nignored\n",
    );
    const transcript = await client.readToEnd();
    assert.equal(
      transcript,
      [
        WELCOME,
        "Sum of input integers: '7'",
        "<switching to product mode>",
        "Product of input integers: '8'",
        "Product of input integers: '9999999999800000000001'",
        "ERROR. Enter only integers separated by commas",
        "ERROR. Enter only integers separated by commas",
        "connection closed",
        "",
      ].join("\r\n"),
    );

    // A multi-byte character split across two TLS records decodes correctly.
    using split = await connectTlsLineClient(server.port, cert.certPem);
    assert.equal(await split.readLine(), WELCOME);
    const euro = new TextEncoder().encode("€\n");
    await split.send(euro.subarray(0, 2));
    await delay(50);
    await split.send(euro.subarray(2));
    assert.equal(
      await split.readLine(),
      "ERROR. Enter only integers separated by commas",
    );

    // An idle TLS client is told and closed on SIGTERM; the server exits 0.
    server.signal("SIGTERM");
    assert.equal(await split.readToEnd(), "<server shutting down>\r\n");
    assert.equal((await server.waitForExit()).code, 0, server.stderr);
  },
);

tlsTest(
  "tls: clients that send 100 KB of lines and half-close get every reply, then EOF",
  async () => {
    await using cert = await createTestCertificate();
    await using server = await startTlsServerProcess(cert);
    const requests: string[] = [];
    const expected = [WELCOME];
    for (let i = 0; i < 4500; i++) {
      requests.push(`${i},1,2,3,4,5,6,7,8,9\n`);
      expected.push(`Sum of input integers: '${i + 45}'`);
    }
    const request = requests.join("");
    assert.ok(request.length >= 100_000);
    const transcript = expected.join("\r\n") + "\r\n";
    // Several at once, each sending all of it before reading the welcome:
    // most then reach the server while it still holds the stream paused
    // after the handshake, so 64 KiB or more of lines and the client's
    // close_notify are waiting together when it starts reading.
    const outcomes = await Promise.all([0, 1, 2, 3].map(async (n) => {
      using client = await connectTlsLineClient(server.port, cert.certPem);
      await client.send(request);
      await client.closeWrite();
      try {
        return (await client.readToEnd(5000)) === transcript
          ? "ok"
          : `client ${n}: wrong replies`;
      } catch (error) {
        const lines = new TextDecoder().decode(client.buffered).split("\r\n");
        return `client ${n}: ${(error as Error).message} (${
          lines.length - 1
        } of ${expected.length} lines had arrived)`;
      }
    }));
    assert.deepEqual(outcomes, ["ok", "ok", "ok", "ok"]);
    assert.equal(server.exited, undefined, server.stderr);
  },
);

tlsTest("tls: a plain-TCP client on the TLS port harms nobody", async () => {
  await using cert = await createTestCertificate();
  await using server = await startTlsServerProcess(cert);

  using before = await connectTlsLineClient(server.port, cert.certPem);
  assert.equal(await before.readLine(), WELCOME);
  await before.send("product\n");
  assert.equal(await before.readLine(), "<switching to product mode>");

  using plain = await LineClient.connect(server.port);
  await plain.send("1,2,4\r\nhelp\r\n");
  // While the plain client is being rejected, TLS clients carry on.
  using during = await connectTlsLineClient(server.port, cert.certPem, 2000);
  assert.equal(await during.readLine(2000), WELCOME);
  await during.send("2,3\n");
  assert.equal(await during.readLine(2000), "Sum of input integers: '5'");
  await before.send("2,3\n");
  assert.equal(await before.readLine(2000), "Product of input integers: '6'");

  // The plain client gets no plaintext protocol (at most a TLS alert), then EOF.
  const got = await plain.readToEnd(12000);
  assert.doesNotMatch(got, /welcome|Sum|Commands/);

  using after = await connectTlsLineClient(server.port, cert.certPem, 2000);
  assert.equal(await after.readLine(2000), WELCOME);
  assert.equal(server.exited, undefined, server.stderr);
});

/** Two clients stuck before a finished handshake: one silent, one inside a ClientHello. */
async function connectStalled(port: number): Promise<LineClient[]> {
  const silent = await LineClient.connect(port);
  const partial = await LineClient.connect(port);
  await partial.send(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  return [silent, partial];
}

tlsTest("tls: a stalled handshake blocks nobody", async () => {
  await using cert = await createTestCertificate();
  await using server = await startTlsServerProcess(cert);
  const stalled = await connectStalled(server.port);
  try {
    await delay(200);
    // Others are served at once, several times over, while the two stall.
    for (let i = 0; i < 3; i++) {
      using client = await connectTlsLineClient(
        server.port,
        cert.certPem,
        2000,
      );
      assert.equal(await client.readLine(2000), WELCOME);
      await client.send(`${i},1\nquit\n`);
      assert.deepEqual(await client.readLines(2, 2000), [
        `Sum of input integers: '${i + 1}'`,
        "connection closed",
      ]);
      await client.expectClosed(2000);
    }
    assert.equal(server.exited, undefined, server.stderr);
  } finally {
    for (const client of stalled) client.close();
  }
});

tlsTest(
  "tls: a stalled handshake is dropped by the server after about 10 s",
  async () => {
    await using cert = await createTestCertificate();
    await using server = await startTlsServerProcess(cert);
    const stalledAt = Date.now();
    const stalled = await connectStalled(server.port);
    try {
      const names = ["silent client", "client stopped inside its ClientHello"];
      // Each entry: how long until the server closed it, or why that never came.
      const outcomes = await Promise.all(stalled.map(async (client, i) => {
        try {
          const rest = await client.readToEnd(14000);
          assert.doesNotMatch(rest, /welcome/);
          return { name: names[i], closedAfterMs: Date.now() - stalledAt };
        } catch (error) {
          return { name: names[i], error: (error as Error).message };
        }
      }));
      for (const { name, closedAfterMs, error } of outcomes) {
        assert.ok(
          closedAfterMs !== undefined,
          `${name}: not dropped by the server: ${error}`,
        );
        assert.ok(
          closedAfterMs >= 9000,
          `${name}: dropped after only ${closedAfterMs} ms`,
        );
      }
      assert.equal(server.exited, undefined, server.stderr);
    } finally {
      for (const client of stalled) client.close();
    }
  },
);

interface BadCase {
  name: string;
  args: (cert: TestCertificate, other: TestCertificate) => string[];
  /** Deno read permission; default: both certificate directories. */
  allowRead?: (cert: TestCertificate, other: TestCertificate) => string;
  /** What the one stderr line must contain. */
  mentions?: (cert: TestCertificate, other: TestCertificate) => string;
}

const BAD_CASES: BadCase[] = [
  {
    name: "missing certificate file",
    args: (c) => ["--tls-cert", `${c.dir}/nope.pem`, "--tls-key", c.keyFile],
    mentions: (c) => `${c.dir}/nope.pem`,
  },
  {
    name: "missing key file",
    args: (c) => ["--tls-cert", c.certFile, "--tls-key", `${c.dir}/nope.key`],
    mentions: (c) => `${c.dir}/nope.key`,
  },
  {
    name: "unreadable certificate (a directory)",
    args: (c) => ["--tls-cert", c.dir, "--tls-key", c.keyFile],
  },
  {
    name: "unreadable key (no read permission for the process)",
    args: (c) => ["--tls-cert", c.certFile, "--tls-key", c.keyFile],
    allowRead: (c) => c.certFile,
  },
  {
    name: "key that does not match the certificate",
    args: (c, o) => ["--tls-cert", c.certFile, "--tls-key", o.keyFile],
  },
  {
    name: "certificate file that is not PEM",
    args: (c) => ["--tls-cert", `${c.dir}/garbage.pem`, "--tls-key", c.keyFile],
  },
  {
    name: "key file holding a certificate",
    args: (c) => ["--tls-cert", c.certFile, "--tls-key", c.certFile],
  },
  {
    name: "--tls-cert without --tls-key",
    args: (c) => ["--tls-cert", c.certFile],
    mentions: () => "--tls-key",
  },
];

tlsTest(
  "tls: bad certificate or key files: one stderr line, exit 2, nothing listens",
  async () => {
    await using cert = await createTestCertificate();
    await using other = await createTestCertificate();
    await Deno.writeTextFile(`${cert.dir}/garbage.pem`, "not a certificate\n");
    const cases = [...BAD_CASES];
    // Root reads a mode-000 file anyway: that case only counts for others.
    await Deno.chmod(other.certFile, 0o000);
    if (!(await Deno.readFile(other.certFile).then(() => true, () => false))) {
      cases.push({
        name: "certificate file without read permission (mode 000)",
        args: (c, o) => ["--tls-cert", o.certFile, "--tls-key", c.keyFile],
      });
    }
    const results = await Promise.all(cases.map(async (bad) => {
      const allowRead = bad.allowRead?.(cert, other) ??
        `${cert.dir},${other.dir}`;
      const server = ServerProcess.spawn(
        ["--port", "0", ...bad.args(cert, other)],
        { denoFlags: [`--allow-read=${allowRead}`] },
      );
      try {
        const status = await server.waitForExit(20000);
        return { bad, code: status.code, stderr: server.stderr };
      } finally {
        await server.stop();
      }
    }));
    const failures: string[] = [];
    for (const { bad, code, stderr } of results) {
      const lines = stderr.trimEnd().split("\n");
      const problems = [
        code !== 2 && `exit code ${code}, expected 2`,
        (stderr.trim() === "" || lines.length !== 1) &&
        `${lines.length} stderr lines, expected 1`,
        /listening on/.test(stderr) && "it listened",
        /^\s+at /m.test(stderr) && "stack trace",
        bad.mentions && !stderr.includes(bad.mentions(cert, other)) &&
        `stderr does not mention ${bad.mentions(cert, other)}`,
      ].filter(Boolean);
      if (problems.length > 0) {
        failures.push(
          `${bad.name}: ${problems.join(", ")}; stderr: ${
            JSON.stringify(stderr)
          }`,
        );
      }
    }
    assert.deepEqual(failures, []);
  },
);

tlsTest(
  "tls: a client that sends without reading its replies is not read from without bound",
  async () => {
    await using cert = await createTestCertificate();
    await using server = await startTlsServer(cert);
    using client = await connectTlsLineClient(server.addr.port, cert.certPem);
    // Each line is answered with an error line the client never reads:
    // once its replies wait, the server must stop reading (and decrypting)
    // what it sends, so its writes stall after what the kernel's buffers
    // hold. (Pausing only the TLS stream let it send, and the server
    // decrypt and keep, everything.)
    const flood = await floodUntilStalled(
      client.conn,
      new Uint8Array(64 * 1024).fill(0x0a),
      { limitBytes: 64 * MiB, stallMs: 1000, maxMs: 10_000 },
    );
    assert.equal(flood.stalled, true, `sent ${flood.sent} bytes unhindered`);
    assert.ok(
      server.metrics.bytesReceived < 16 * MiB,
      `the server read ${server.metrics.bytesReceived} bytes`,
    );
  },
);

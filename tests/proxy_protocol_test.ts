/**
 * The PROXY protocol over real sockets: the header (v1 text or v2 binary)
 * comes first, whole or split across segments, possibly followed by a
 * request in the same segment; its client address becomes the
 * connection's peer (and the per-address limit counts it); a missing,
 * malformed or late header closes the connection without a reply; TLS
 * starts after the header.
 */
import assert from "node:assert/strict";
import type { LineProtocol } from "../mod.ts";
import { sum, WELCOME } from "./support/calc_replies.ts";
import { delay, waitFor } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { bytes, untilActive, withServer } from "./support/socket_harness.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";
import { startTlsServer } from "./support/tls_server.ts";

/** Answers every line with the peer address the server gives the session. */
const whoAmI: LineProtocol = {
  name: "whoami",
  createSession: (connection) => ({
    greeting: `hello ${connection.peer.hostname} ${connection.peer.port}`,
    reply: (line) => `${line} from ${connection.peer.hostname}`,
  }),
};

const V2_SIGNATURE = [
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
];

/** A v2 PROXY (or LOCAL) header for TCP over IPv4, with one TLV to skip. */
function v2Header(
  source: [number, number, number, number],
  sourcePort: number,
  command: "PROXY" | "LOCAL" = "PROXY",
): Uint8Array {
  const tlv = [0x04, 0x00, 0x02, 0xab, 0xcd]; // PP2_TYPE_NOOP, 2 bytes
  const addresses = [
    ...source,
    127,
    0,
    0,
    1,
    sourcePort >> 8,
    sourcePort & 0xff,
    0x1f,
    0x90,
  ];
  const length = addresses.length + tlv.length;
  return bytes(V2_SIGNATURE, [
    command === "PROXY" ? 0x21 : 0x20,
    0x11,
    length >> 8,
    length & 0xff,
    ...addresses,
    ...tlv,
  ]);
}

Deno.test("proxy protocol: a v1 header and a request in the same segment", async () => {
  await withServer(
    { proxyProtocol: true, protocol: whoAmI },
    async ({ connect }) => {
      const client = await connect();
      await client.send(
        "PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\nping\n",
      );
      assert.equal(await client.readLine(), "hello 203.0.113.7 51000");
      assert.equal(await client.readLine(), "ping from 203.0.113.7");
    },
  );
});

Deno.test("proxy protocol: a v2 header split byte by byte, then the calculator as usual", async () => {
  await withServer({ proxyProtocol: true }, async ({ connect }) => {
    const client = await connect();
    for (const byte of v2Header([198, 51, 100, 9], 40000)) {
      await client.send(Uint8Array.of(byte));
      await delay(2);
    }
    assert.equal(await client.readLine(), WELCOME);
    await client.send("1,2\n");
    assert.equal(await client.readLine(), sum(3));
  });
});

Deno.test("proxy protocol: v1 UNKNOWN keeps the socket's own address", async () => {
  await withServer(
    { proxyProtocol: true, protocol: whoAmI },
    async ({ connect }) => {
      const unknown = await connect();
      await unknown.send("PROXY UNKNOWN\r\nx\n");
      assert.match(await unknown.readLine(), /^hello 127\.0\.0\.1 \d+$/);
      assert.equal(await unknown.readLine(), "x from 127.0.0.1");
    },
  );
});

Deno.test("proxy protocol: a v2 LOCAL connection is a health check: sent nothing it did not ask for, counted apart", async () => {
  await withServer(
    { proxyProtocol: true, protocol: whoAmI },
    async ({ server, connect }) => {
      // The usual check: connect, header, close. No welcome, no session.
      for (let check = 1; check <= 3; check++) {
        const local = await connect();
        await local.send(v2Header([10, 9, 8, 7], 1234, "LOCAL"));
        await local.closeWrite();
        assert.equal(await local.readToEnd(), "", "no welcome");
        await waitFor(
          "the check to be counted and its slot free",
          () =>
            server.metrics.healthChecks === check &&
            server.metrics.connectionsActive === 0,
          3000,
        );
      }
      // A check that asks gets its answer, with the socket's own address,
      // but no greeting.
      const asking = await connect();
      await asking.send(bytes(v2Header([10, 9, 8, 7], 1234, "LOCAL"), "x\n"));
      assert.equal(await asking.readLine(), "x from 127.0.0.1");
      asking.close();
      // Not a connection: no outcome counted.
      await untilActive(server, 0, 3000);
      const closed = Object.values(server.metrics.connectionsClosed)
        .reduce((a, b) => a + b, 0);
      assert.equal(closed, 0);
      assert.equal(server.metrics.healthChecks, 4);
      const client = await connect();
      await client.send("PROXY TCP4 203.0.113.9 127.0.0.1 5000 8080\r\n");
      assert.equal(await client.readLine(), "hello 203.0.113.9 5000");
      const summary = await server.shutdown();
      // The check that asked became a session: it took a number.
      assert.equal(summary.served, 2);
    },
  );
});

Deno.test("proxy protocol: a missing or malformed header closes the connection without a reply", async () => {
  await withServer({ proxyProtocol: true }, async ({ server, connect }) => {
    for (
      const attempt of [
        "1,2,3\n", // no header at all: a plain client
        "PROXY TCP4 203.0.113.7 127.0.0.1 99999 8080\r\n", // port out of range
        "PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n", // address of the wrong family
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", // LF without CR
      ]
    ) {
      const client = await connect();
      await client.send(attempt);
      assert.equal(await client.readToEnd(), "", JSON.stringify(attempt));
    }
    await waitFor(
      "every bad header is counted",
      () => server.metrics.connectionsClosed.proxy_header_invalid === 4,
      3000,
    );
    assert.equal(server.metrics.errors.proxy_header_invalid, 4);
    assert.equal(server.metrics.connectionsActive, 0);
  });
});

Deno.test("proxy protocol: an incomplete header is dropped at its 5 s deadline", async () => {
  await withServer({ proxyProtocol: true }, async ({ server, connect }) => {
    const client = await connect();
    const started = performance.now();
    await client.send("PROXY TCP4 203.0.113.7");
    assert.equal(await client.readToEnd(8000), "");
    const elapsed = performance.now() - started;
    assert.ok(
      elapsed >= 4900 && elapsed < 7000,
      `dropped after ${elapsed.toFixed(0)} ms`,
    );
    await waitFor(
      "the late header is counted",
      () => server.metrics.connectionsClosed.proxy_header_invalid === 1,
      3000,
    );
  });
});

Deno.test("proxy protocol: the per-address limit counts the address from the header (IPv6 per /64)", async () => {
  await withServer(
    { proxyProtocol: true, maxConnectionsPerIp: 1 },
    async ({ server, connect }) => {
      const header = (source: string) =>
        `PROXY TCP6 ${source} ::1 40000 8080\r\n`;
      const first = await connect();
      await first.send(header("2001:db8:1:2::10"));
      assert.equal(await first.readLine(), WELCOME);
      // Another address of the same /64: refused.
      const sameNetwork = await connect();
      await sameNetwork.send(header("2001:db8:1:2:ffff::1"));
      assert.equal(
        await sameNetwork.readLine(),
        "ERROR. Too many connections from your address, try again later",
      );
      // Another /64, though from the same socket address: served.
      const otherNetwork = await connect();
      await otherNetwork.send(header("2001:db8:1:3::10"));
      assert.equal(await otherNetwork.readLine(), WELCOME);
      assert.equal(server.activeConnections, 2);
    },
  );
});

const opensslMissing = await opensslMissingReason();

Deno.test({
  name: opensslMissing === undefined
    ? "proxy protocol: the header comes before the TLS handshake"
    : `proxy protocol: the header comes before the TLS handshake (ignored: ${opensslMissing})`,
  ignore: opensslMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    const server = await startTlsServer(cert, {
      proxyProtocol: true,
      protocol: whoAmI,
    });
    try {
      const tcp = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.addr.port,
      });
      let tlsConn: Deno.TlsConn | undefined;
      try {
        // The header and the ClientHello may share a segment.
        await tcp.write(
          new TextEncoder().encode(
            "PROXY TCP4 192.0.2.44 127.0.0.1 50500 80\r\n",
          ),
        );
        tlsConn = await Deno.startTls(tcp, {
          hostname: "localhost",
          caCerts: [cert.certPem],
        });
        const client = new LineClient(tlsConn as unknown as Deno.TcpConn);
        assert.equal(await client.readLine(), "hello 192.0.2.44 50500");
        await client.send("secret\n");
        assert.equal(await client.readLine(), "secret from 192.0.2.44");
      } finally {
        (tlsConn ?? tcp).close();
      }
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test("proxy protocol: off by default, a PROXY line is just a bad request", async () => {
  await withServer({}, async ({ connect }) => {
    const client: LineClient = await connect();
    assert.equal(await client.readLine(), WELCOME);
    await client.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n");
    assert.equal(
      await client.readLine(),
      "ERROR. Enter only integers separated by commas",
    );
  });
});

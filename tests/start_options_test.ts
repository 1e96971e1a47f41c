/**
 * startServer checks every option before it binds: a bad value is a
 * RangeError or TypeError, and the port stays free.
 */
import assert from "node:assert/strict";
import { startServer } from "../mod.ts";
import { freePort } from "./support/tools.ts";

const BAD_OPTIONS: [
  string,
  Record<string, unknown>,
  RegExp | { name: string; message: RegExp },
][] = [
  ["maxConnections 0", { maxConnections: 0 }, /maxConnections/],
  ["maxConnections 1.5", { maxConnections: 1.5 }, /maxConnections/],
  ["maxLineBytes 0", { maxLineBytes: 0 }, /maxLineBytes/],
  ["maxConnectionsPerIp -1", { maxConnectionsPerIp: -1 }, /PerIp/],
  ["idleTimeoutMs -1", { idleTimeoutMs: -1 }, /idleTimeoutMs/],
  ["lineTimeoutMs NaN", { lineTimeoutMs: Number.NaN }, /lineTimeoutMs/],
  ["shutdownTimeoutMs 2^31", { shutdownTimeoutMs: 2 ** 31 }, /shutdown/],
  // Not "never" as 0 is for the other timeouts: a drain always ends.
  ["shutdownTimeoutMs 0", { shutdownTimeoutMs: 0 }, {
    name: "RangeError",
    message: /shutdownTimeoutMs.*a drain always ends; 1 closes at once/,
  }],
  ["port 65536", { port: 65536 }, /port/],
  ["TLS that is not PEM", {
    tls: { cert: "not a certificate", key: "not a key" },
  }, /Cannot parse the certificate/],
];

for (const [name, bad, message] of BAD_OPTIONS) {
  Deno.test(`startServer: ${name} is refused before anything is bound`, async () => {
    const port = typeof bad.port === "number" ? 0 : freePort();
    await assert.rejects(
      () => startServer({ hostname: "127.0.0.1", port, ...bad }),
      message,
    );
    if (port !== 0) {
      // The port was never bound: it can be taken at once.
      using listener = Deno.listen({ hostname: "127.0.0.1", port });
      assert.equal((listener.addr as Deno.NetAddr).port, port);
    }
  });
}

/** Unit tests of option parsing and validation (no process is started). */
import assert from "node:assert/strict";
import { parseCli } from "../src/cli.ts";

function options(args: string[]) {
  const request = parseCli(args);
  assert.equal(request.kind, "run", JSON.stringify(request));
  return (request as Extract<typeof request, { kind: "run" }>).options;
}

function error(args: string[]): string {
  const request = parseCli(args);
  assert.equal(request.kind, "error", JSON.stringify(request));
  const message =
    (request as Extract<typeof request, { kind: "error" }>).message;
  assert.ok(!message.includes("\n"), "one line");
  assert.ok(message.includes("--help"), message);
  return message;
}

Deno.test("cli: the defaults are the contract's", () => {
  assert.deepEqual(options([]), {
    host: "127.0.0.1",
    port: 8080,
    protocol: "calc",
    maxLineBytes: 65536,
    maxConnections: 10000,
    idleTimeoutMs: 300_000,
    shutdownTimeoutMs: 2000,
    logLevel: "info",
    logFormat: "text",
    workers: 1,
    tlsCert: undefined,
    tlsKey: undefined,
    adminPort: undefined,
  });
});

Deno.test("cli: timeouts take fractions of a second; 0 turns idle timeout off", () => {
  assert.equal(options(["--idle-timeout", "0.25"]).idleTimeoutMs, 250);
  assert.equal(options(["--idle-timeout=.5"]).idleTimeoutMs, 500);
  assert.equal(options(["--idle-timeout", "0"]).idleTimeoutMs, 0);
  assert.equal(options(["--shutdown-timeout", "1.5"]).shutdownTimeoutMs, 1500);
});

Deno.test("cli: a positive timeout never means off: it is at least 1 ms", () => {
  assert.equal(options(["--idle-timeout", "0.0001"]).idleTimeoutMs, 1);
  assert.equal(options(["--idle-timeout", "0.0004"]).idleTimeoutMs, 1);
  assert.equal(options(["--idle-timeout", "0.0016"]).idleTimeoutMs, 2);
  assert.equal(options(["--idle-timeout", "0.000"]).idleTimeoutMs, 0);
  assert.equal(
    options(["--shutdown-timeout", "0.00001"]).shutdownTimeoutMs,
    1,
  );
  assert.equal(options(["--shutdown-timeout", "0"]).shutdownTimeoutMs, 0);
});

Deno.test("cli: every bad value names its option", () => {
  assert.match(error(["--port", "99999"]), /--port/);
  assert.match(error(["--port", "abc"]), /--port.*"abc"/);
  assert.match(error(["--port", "-1"]), /--port.*"-1"/);
  assert.match(error(["--shutdown-timeout", "-1"]), /--shutdown-timeout/);
  assert.match(error(["--idle-timeout", "1e3"]), /--idle-timeout/);
  assert.match(error(["--max-line-bytes", "0"]), /--max-line-bytes/);
  assert.match(error(["--protocol", "http"]), /--protocol/);
  assert.match(error(["--log-format", "xml"]), /--log-format/);
  assert.match(error(["--bogus"]), /--bogus/);
  assert.match(error(["--port"]), /--port/);
  assert.match(error(["--tls-cert", "cert.pem"]), /--tls-key/);
});

Deno.test("cli: --help and --version win over other options", () => {
  assert.equal(parseCli(["--port", "1", "--help"]).kind, "help");
  assert.equal(parseCli(["--version"]).kind, "version");
});

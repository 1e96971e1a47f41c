/** Unit tests of option parsing and validation (no process is started). */
import assert from "node:assert/strict";
import {
  parseCli,
  PROTOCOL_NAMES,
  serverOptionsOf,
  USAGE,
} from "../src/cli.ts";

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
    lineTimeoutMs: 60_000,
    shutdownTimeoutMs: 2000,
    maxConnectionsPerIp: 0,
    proxyProtocol: false,
    logLevel: "info",
    logFormat: "text",
    workers: 1,
    tlsCert: undefined,
    tlsKey: undefined,
    adminPort: undefined,
    chat: undefined,
  });
});

Deno.test("cli: --chat-redis takes a redis:// URL, with --protocol chat only; --chat-room names the room", () => {
  const chat = ["--protocol", "chat", "--chat-redis"];
  for (
    const url of [
      "redis://127.0.0.1:6379",
      "redis://cache.internal",
      "redis://:secret@cache:6380/2",
      "redis://[::1]:6379",
    ]
  ) {
    assert.equal(options([...chat, url]).chat?.url, url);
  }
  assert.equal(options([...chat, "redis://h:1"]).chat?.room, "lobby");
  assert.equal(
    options([...chat, "redis://h:1", "--chat-room", "ops.team-2"]).chat?.room,
    "ops.team-2",
  );
  for (
    const url of [
      "127.0.0.1:6379",
      "rediss://h:6379",
      "http://h:6379",
      "redis://",
      "redis://h:99999",
      "redis://h:port",
      "redis://h:6379/x",
      "redis://h:6379?db=1",
    ]
  ) {
    assert.match(
      error([...chat, url]),
      /--chat-redis.*redis:\/\/HOST:PORT/,
      url,
    );
  }
  assert.match(
    error(["--chat-redis", "redis://h:1"]),
    /--chat-redis needs --protocol chat/,
  );
  assert.match(
    error(["--protocol", "echo", "--chat-redis", "redis://h:1"]),
    /--chat-redis needs --protocol chat/,
  );
  assert.match(
    error(["--protocol", "chat", "--chat-room", "x"]),
    /--chat-room needs --chat-redis/,
  );
  for (const room of ["", "a b", "x".repeat(65), "caf\u00e9", "a:b"]) {
    assert.match(
      error([...chat, "redis://h:1", "--chat-room", room]),
      /--chat-room/,
      room,
    );
  }
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

Deno.test("cli: --line-timeout takes seconds like the other timeouts; 0 turns it off", () => {
  assert.equal(options(["--line-timeout", "7.5"]).lineTimeoutMs, 7500);
  assert.equal(options(["--line-timeout=.25"]).lineTimeoutMs, 250);
  assert.equal(options(["--line-timeout", "0"]).lineTimeoutMs, 0);
  assert.equal(options(["--line-timeout", "0.0001"]).lineTimeoutMs, 1);
  assert.equal(
    options(["--line-timeout", "2147483"]).lineTimeoutMs,
    2_147_483_000,
  );
  for (const bad of ["-1", "abc", "1e3", "", "2147484", "1,5"]) {
    assert.match(
      error(["--line-timeout", bad]),
      /--line-timeout/,
      `--line-timeout ${JSON.stringify(bad)}`,
    );
  }
  assert.match(error(["--line-timeout"]), /--line-timeout/);
});

Deno.test("cli: --max-connections-per-ip is an integer from 0 (off) to 1000000", () => {
  assert.equal(
    options(["--max-connections-per-ip", "0"]).maxConnectionsPerIp,
    0,
  );
  assert.equal(
    options(["--max-connections-per-ip", "5"]).maxConnectionsPerIp,
    5,
  );
  assert.equal(
    options(["--max-connections-per-ip=1000000"]).maxConnectionsPerIp,
    1_000_000,
  );
  for (const bad of ["-1", "1.5", "abc", "", "1000001", "0x10"]) {
    assert.match(
      error(["--max-connections-per-ip", bad]),
      /--max-connections-per-ip/,
      `--max-connections-per-ip ${JSON.stringify(bad)}`,
    );
  }
});

Deno.test("cli: --proxy-protocol is a flag without a value", () => {
  assert.equal(options(["--proxy-protocol"]).proxyProtocol, true);
  assert.equal(options([]).proxyProtocol, false);
  assert.match(error(["--proxy-protocol=yes"]), /--proxy-protocol/);
  assert.match(error(["--proxy-protocol", "yes"]), /yes/);
});

Deno.test("cli: --protocol takes every name of PROTOCOL_NAMES, chat included, and nothing else", () => {
  assert.deepEqual([...PROTOCOL_NAMES], ["calc", "echo", "chat"]);
  for (const name of PROTOCOL_NAMES) {
    assert.equal(options(["--protocol", name]).protocol, name);
    assert.ok(USAGE.includes(name), `--help does not mention ${name}`);
  }
  assert.match(error(["--protocol", "Chat"]), /--protocol.*calc, echo, chat/);
});

Deno.test("cli: the new options reach startServer's options under their names", () => {
  assert.deepEqual(
    serverOptionsOf(options([
      "--line-timeout",
      "2.5",
      "--max-connections-per-ip",
      "7",
      "--proxy-protocol",
    ])),
    {
      hostname: "127.0.0.1",
      port: 8080,
      maxLineBytes: 65536,
      maxConnections: 10000,
      idleTimeoutMs: 300_000,
      shutdownTimeoutMs: 2000,
      lineTimeoutMs: 2500,
      maxConnectionsPerIp: 7,
      proxyProtocol: true,
    },
  );
});

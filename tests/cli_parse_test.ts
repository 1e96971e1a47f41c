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
    proxyProtocolFrom: undefined,
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
});

Deno.test("cli: 0 means never for --idle-timeout and --line-timeout; --shutdown-timeout refuses it, as a drain always ends", () => {
  assert.equal(options(["--idle-timeout", "0"]).idleTimeoutMs, 0);
  assert.equal(options(["--line-timeout", "0"]).lineTimeoutMs, 0);
  for (const zero of ["0", "0.0", ".0", "0.000"]) {
    const message = error(["--shutdown-timeout", zero]);
    assert.match(message, /^Invalid value for --shutdown-timeout: /);
    assert.match(message, /a drain always ends/);
    assert.match(message, /0\.001 closes at once/);
  }
  assert.equal(
    options(["--shutdown-timeout", "0.001"]).shutdownTimeoutMs,
    1,
  );
  // --help says what 0 means for each.
  const entry = (option: string) =>
    USAGE.match(new RegExp(`^  ${option}\\b[^\\n]*(?:\\n {20,}[^\\n]*)*`, "m"))
      ?.[0].replace(/\s+/g, " ") ?? "";
  assert.match(entry("--idle-timeout"), /0 = never/);
  assert.match(entry("--line-timeout"), /0 = never/);
  assert.match(entry("--shutdown-timeout"), /above 0.*drain always ends/);
});

Deno.test("cli: --help is aligned: every description starts in one column, no line is over 80", () => {
  const all = USAGE.split("\n");
  const first = all.indexOf("Options:") + 1;
  const lines = all.slice(first, all.indexOf("", first));
  const options = lines.filter((line) => /^ {2}--/.test(line));
  assert.ok(options.length >= 18, USAGE);
  for (const line of options) {
    // The option, then its description from column 28, or on the next line.
    const [head, rest] = [line.slice(0, 28), line.slice(28)];
    if (rest === "") {
      const next = lines[lines.indexOf(line) + 1];
      assert.match(next, /^ {28}\S/, `no description under ${line}`);
    } else {
      assert.match(head, /^ {2}--\S+(?: \S+)? +$/, `misaligned: ${line}`);
      assert.match(rest, /^\S/, `misaligned: ${line}`);
    }
  }
  for (
    const line of lines.filter((line) =>
      /^ {3,}\S/.test(line) && !/^ {2}--/.test(line)
    )
  ) {
    assert.match(line, /^ {28}\S/, `misaligned: ${JSON.stringify(line)}`);
  }
  for (const line of all) {
    assert.ok(line.length <= 80, `over 80 columns: ${JSON.stringify(line)}`);
  }
});

Deno.test("cli: a repeated option is refused, naming it and both values", () => {
  assert.match(
    error(["--port", "1", "--port", "0"]),
    /^Option --port is given twice: received "1" and "0"/,
  );
  assert.match(
    error(["--port=1", "--host", "::1", "--port", "1"]),
    /--port is given twice/,
  );
  assert.match(
    error(["--proxy-protocol", "--proxy-protocol"]),
    /^Option --proxy-protocol is given twice/,
  );
});

Deno.test("cli: an option without its value says what it expects, like a bad value", () => {
  assert.equal(
    error(["--port"]),
    "Invalid value for --port: expected an integer from 0 to 65535, received nothing; run with --help for usage",
  );
  assert.match(
    error(["--port", "--host", "::1"]),
    /^Invalid value for --port: expected an integer from 0 to 65535, received the option --host;/,
  );
  assert.match(
    error(["--idle-timeout"]),
    /^Invalid value for --idle-timeout: expected a number of seconds/,
  );
  assert.match(
    error(["--proxy-protocol=yes"]),
    /^Invalid value for --proxy-protocol: expected no value \(it is a flag\), received "yes"/,
  );
  // A value that begins with -- is still possible, joined with =.
  assert.equal(options(["--tls-cert=--a", "--tls-key", "k"]).tlsCert, "--a");
});

Deno.test("cli: a leading -- is skipped, as deno task start -- passes it on", () => {
  assert.equal(parseCli(["--", "--version"]).kind, "version");
  assert.equal(options(["--", "--port", "0"]).port, 0);
  assert.deepEqual(options(["--"]), options([]));
  assert.match(error(["--port", "0", "--", "x"]), /^Unexpected argument: x/);
});

Deno.test("cli: --host takes an IP address or a host name; an address that is none is a bad value", () => {
  for (
    const host of [
      "127.0.0.1",
      "0.0.0.0",
      "::1",
      "::",
      "fe80::1",
      "localhost",
      "lineserver-0.lineserver.default.svc.cluster.local",
      "example.com.",
      "my_host",
    ]
  ) {
    assert.equal(options(["--host", host]).host, host);
  }
  for (
    const host of [
      "999.1.1.1",
      "1.2.3",
      "1.2.3.4.5",
      "::g",
      "[::1]",
      "a..b",
      "-a.example",
      "a b",
      "",
    ]
  ) {
    assert.match(
      error(["--host", host]),
      /^Invalid value for --host: expected an IP address or a host name, received /,
      `--host ${JSON.stringify(host)}`,
    );
  }
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
      "--proxy-protocol-from",
      "10.0.0.0/8,::1",
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
      proxyProtocolFrom: "10.0.0.0/8,::1",
    },
  );
});

Deno.test("cli: --proxy-protocol-from takes address ranges, with --proxy-protocol only", () => {
  assert.match(
    error(["--proxy-protocol-from", "10.0.0.0/8"]),
    /--proxy-protocol-from needs --proxy-protocol/,
  );
  for (const bad of ["10.0.0.0/33", "10.0.0", "", "example.com/8"]) {
    assert.match(
      error(["--proxy-protocol", "--proxy-protocol-from", bad]),
      /Invalid value for --proxy-protocol-from: expected addresses or CIDR ranges/,
      bad,
    );
  }
});

/**
 * The log of a real `server.ts`: it never makes the server wait (a stderr
 * nobody reads), escapes what clients chose, and folds floods. Unit tests of
 * the layers are in log_format_test.ts, log_folding_test.ts and
 * log_writer_test.ts.
 */
import assert from "node:assert/strict";
import { plural } from "../src/logging.ts";
import { SERVER_ENTRY, ServerProcess } from "./support/server_process.ts";
import { LineClient } from "./support/line_client.ts";
import { scrapeMetrics } from "./support/admin_client.ts";
import { waitFor, withTimeout } from "./support/deadline.ts";

Deno.test("logging: plural() is singular for exactly 1", () => {
  assert.equal(plural(1, "line"), "1 line");
  assert.equal(plural(1, "connection"), "1 connection");
  for (const n of [0, 2, 59, 1_000_000]) {
    assert.equal(plural(n, "line"), `${n} lines`);
  }
});

/** Any character that must not reach stderr raw (line feeds end lines, so they may). */
const RAW_CONTROL =
  // deno-lint-ignore no-control-regex
  /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/;

const DROPPED_NOTICE =
  /WARN {2}(\d+) log lines? dropped: stderr was not read fast enough\n/;

/**
 * `server.ts` with a stderr that the test reads only when it says so: it
 * reads up to the listening lines, then lets stderr fill up, as a wedged
 * log shipper does.
 */
class UnreadStderrServer {
  readonly child: Deno.ChildProcess;
  text = "";
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #decoder = new TextDecoder();
  #readingAll: Promise<void> | undefined;

  constructor(args: string[]) {
    this.child = new Deno.Command("deno", {
      // --allow-read: Deno loads --workers' modules from disk.
      args: ["run", "--allow-net", "--allow-read", SERVER_ENTRY, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  }

  /** Reads stderr until it matches `pattern`, then stops reading. */
  async readUntil(
    pattern: RegExp,
    timeoutMs: number,
  ): Promise<RegExpMatchArray> {
    this.#reader ??= this.child.stderr.getReader();
    const reader = this.#reader;
    await withTimeout(
      (async () => {
        while (!pattern.test(this.text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stderr ended:\n${this.text}`);
          this.text += this.#decoder.decode(value, { stream: true });
        }
      })(),
      timeoutMs,
      `stderr to match ${pattern}`,
    );
    return this.text.match(pattern)!;
  }

  /** From now on reads everything, as a log shipper that came back does. */
  readAll() {
    this.#readingAll ??= (async () => {
      this.#reader ??= this.child.stderr.getReader();
      while (true) {
        const { value, done } = await this.#reader.read();
        if (done) return;
        this.text += this.#decoder.decode(value, { stream: true });
      }
    })();
  }

  async [Symbol.asyncDispose]() {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    this.readAll();
    await this.child.status;
    await this.#readingAll;
  }
}

for (const workers of [1, 2]) {
  Deno.test(`logging: with stderr not read, every client is still served; the dropped lines are counted and told once stderr is read (--workers ${workers})`, async () => {
    // Debug level and long request lines: about 2 KiB of log per connection,
    // past the pipe's buffer and the log's own queue within 100 connections.
    // With workers, each has its own queue and all add to the one count.
    await using server = new UnreadStderrServer([
      "--port",
      "0",
      "--admin-port",
      "0",
      "--protocol",
      "echo",
      "--log-level",
      "debug",
      "--workers",
      String(workers),
    ]);
    const port = Number(
      (await server.readUntil(/(?<!admin )listening on [^:]+:(\d+)/, 15_000))[
        1
      ],
    );
    const adminPort = Number(
      (await server.readUntil(/admin listening on [^:]+:(\d+)/, 5000))[1],
    );
    const request = "x".repeat(2000);
    let slowestMs = 0;
    for (let i = 0; i < 600; i++) {
      const started = performance.now();
      using client = await LineClient.connect(port);
      await client.send(`${request}\n`);
      assert.equal(await client.readLine(5000), request, `client ${i + 1}`);
      slowestMs = Math.max(slowestMs, performance.now() - started);
    }
    const dropped = (await scrapeMetrics(adminPort)).samples.get(
      "lineserver_log_lines_dropped_total",
    );
    assert.ok(dropped !== undefined && dropped > 0, `dropped: ${dropped}`);

    server.readAll();
    await waitFor(
      "the dropped-lines notice",
      () => DROPPED_NOTICE.test(server.text),
      10_000,
    );
    // Every dropped line is in a notice once everything queued is written.
    const told = () =>
      [...server.text.matchAll(new RegExp(DROPPED_NOTICE, "g"))].reduce(
        (sum, m) => sum + Number(m[1]),
        0,
      );
    const finalDropped = (await scrapeMetrics(adminPort)).samples.get(
      "lineserver_log_lines_dropped_total",
    )!;
    await waitFor(
      "every drop told",
      () => told() === finalDropped,
      10_000,
    ).catch((error) => {
      throw new Error(`${error.message}: told ${told()} of ${finalDropped}`);
    });
    server.child.kill("SIGTERM");
    const status = await withTimeout(server.child.status, 10_000, "exit");
    assert.equal(status.code, 0);
    await waitFor(
      "the shutdown summary",
      () => server.text.includes("shutdown complete"),
      5000,
    );
    console.log(
      `600 clients served, slowest ${
        slowestMs.toFixed(0)
      } ms; ${finalDropped} log lines dropped`,
    );
  });
}

Deno.test("logging: with stderr not read, SIGTERM still ends the server promptly", async () => {
  await using server = new UnreadStderrServer([
    "--port",
    "0",
    "--protocol",
    "echo",
    "--log-level",
    "debug",
  ]);
  const port = Number(
    (await server.readUntil(/listening on [^:]+:(\d+)/, 15_000))[1],
  );
  const request = "x".repeat(2000);
  for (let i = 0; i < 100; i++) {
    using client = await LineClient.connect(port);
    await client.send(`${request}\n`);
    assert.equal(await client.readLine(5000), request);
  }
  const signalled = performance.now();
  server.child.kill("SIGTERM");
  // The drain is immediate (no client left); then at most a second for the
  // last lines to get out.
  const status = await withTimeout(server.child.status, 5000, "exit");
  const exitMs = performance.now() - signalled;
  assert.equal(status.code, 0);
  console.log(`exited ${exitMs.toFixed(0)} ms after SIGTERM`);
});

/**
 * `PROXY TCP4` with a source address that carries an ESC sequence (erase
 * the line) and two C1 controls (CSI and NEL), as bytes: the v1 header is
 * read as Latin-1, so 0x9b and 0x85 become U+009B and U+0085.
 */
const HOSTILE_HEADER = new Uint8Array([
  ...new TextEncoder().encode("PROXY TCP4 1.2.3.4\x1b[2K"),
  0x9b,
  0x85,
  ...new TextEncoder().encode(" 5.6.7.8 1 2\r\n"),
]);
/** The source address as the warning must show it: every control escaped. */
const HOSTILE_SHOWN = /1\.2\.3\.4\\(?:u001b|x1b)\[2K\\x9b\\x85/;

async function sendBadHeader(port: number, header: Uint8Array) {
  using client = await LineClient.connect(port);
  await client.send(header);
  await client.readToEnd(5000);
}

for (const format of ["text", "json"]) {
  Deno.test(`logging: a PROXY header with an ESC sequence and C1 controls is logged escaped (--log-format ${format})`, async () => {
    await using server = await ServerProcess.start([
      "--port",
      "0",
      "--proxy-protocol",
      "--log-format",
      format,
    ]);
    await sendBadHeader(server.port, HOSTILE_HEADER);
    const line = (await server.waitForStderr(/.*invalid PROXY header.*\n/))[0];
    assert.doesNotMatch(server.stderr, RAW_CONTROL);
    if (format === "text") {
      assert.match(line, HOSTILE_SHOWN);
    } else {
      const object = JSON.parse(line);
      assert.match(object.message, HOSTILE_SHOWN);
      assert.match(object.reason, HOSTILE_SHOWN);
    }
  });
}

Deno.test("logging: a flood of bad PROXY headers is a few lines a second and a count of the rest", async () => {
  await using server = await ServerProcess.start([
    "--port",
    "0",
    "--proxy-protocol",
  ]);
  const total = 300;
  const garbage = new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n");
  const started = performance.now();
  for (let sent = 0; sent < total; sent += 30) {
    await Promise.all(
      Array.from({ length: 30 }, () => sendBadHeader(server.port, garbage)),
    );
  }
  const seconds = (performance.now() - started) / 1000;
  const warnings = () =>
    server.stderr.match(/WARN {2}closing \S+: invalid PROXY header: /g)
      ?.length ?? 0;
  const summaries = () =>
    [...server.stderr.matchAll(
      /WARN {2}(\d+) more "closing \{peer\}: invalid PROXY header: \{reason\}" in the last second\n/g,
    )].map((m) => Number(m[1]));
  // Every header is accounted for, once its second is over.
  await waitFor(
    "every bad header written or counted",
    () => warnings() + summaries().reduce((a, b) => a + b, 0) === total,
    10_000,
  );
  // At most 5 a second and one summary per second, counting from the
  // first, so ceil(seconds) + 1 windows at most.
  const windows = Math.ceil(seconds) + 1;
  assert.ok(
    warnings() <= 5 * windows && summaries().length <= windows,
    `${warnings()} warnings, ${summaries().length} summaries in ${
      seconds.toFixed(2)
    } s:\n${server.stderr}`,
  );
  console.log(
    `${total} bad headers in ${
      seconds.toFixed(2)
    } s: ${warnings()} warnings, summaries ${summaries().join(", ")}`,
  );
});

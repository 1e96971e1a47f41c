/**
 * The client library against a real lineserver and against scripted
 * `node:net` servers: requests in flight, the end of the stream, resets,
 * deadlines, over-long frames, invalid UTF-8, a flood held off by not
 * reading, custom terminators and counted blocks, backpressure, retries.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  calculatorProtocol,
  echoProtocol,
  LineClient,
  LineClientError,
  startServer,
} from "../mod.ts";
import { freePort } from "./support/tools.ts";
import { withScriptedServer } from "./support/scripted_server.ts";
import { delay, waitFor, withTimeout } from "./support/deadline.ts";
import {
  createTestCertificate,
  opensslMissingReason,
} from "./support/tls_cert.ts";
import { startTlsServer } from "./support/tls_server.ts";

async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<LineClientError> {
  const error = await withTimeout(
    promise.then(() => undefined, (e) => e),
    10_000,
    `an error with code ${code}`,
  );
  assert.ok(
    error instanceof LineClientError,
    `expected an error, got ${error}`,
  );
  assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  return error;
}

Deno.test("client: greeting, requests and 200 pipelined requests against the calculator", async () => {
  await using server = await startServer({
    port: 0,
    protocol: calculatorProtocol,
  });
  await using client = await LineClient.connect({
    port: server.addr.port,
    greeting: true,
  });
  assert.equal(client.greeting, "<welcome: starting in sum mode>");
  assert.equal(await client.request("1,2,4"), "Sum of input integers: '7'");
  const lines = Array.from({ length: 200 }, (_, i) => `${i},1`);
  const replies = await Promise.all(lines.map((line) => client.request(line)));
  assert.deepEqual(
    replies,
    lines.map((_, i) => `Sum of input integers: '${i + 1}'`),
  );
  assert.equal(await client.request("quit"), "connection closed");
  await rejectsWith(client.readLine(), "closed", /closed by 127\.0\.0\.1:/);
});

Deno.test("client: the end of the stream ends an iteration; a later read fails with closed", async () => {
  await using server = await startServer({ port: 0, protocol: echoProtocol });
  await using client = await LineClient.connect({ port: server.addr.port });
  await client.send("a", "b  ", "ü");
  await client.closeWrite();
  const lines: string[] = [];
  for await (const line of client) lines.push(line);
  assert.deepEqual(lines, ["a", "b", "ü"]);
  await rejectsWith(client.readLine(), "closed");
  await rejectsWith(client.send("late"), "aborted");
});

Deno.test("client: a line the server did not finish is no line: the error carries it, and an iteration fails", async () => {
  await withScriptedServer((socket) => {
    socket.end("whole\r\nhal");
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    assert.equal(await client.readLine(), "whole");
    const error = await rejectsWith(
      client.readLine(),
      "closed",
      /in the middle of a line$/,
    );
    assert.equal(error.partial, "hal");
    await rejectsWith(client.readLine(), "closed");
  });
  await withScriptedServer((socket) => {
    socket.end("a\r\nb\r\nc");
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    const lines: string[] = [];
    const iterating = (async () => {
      for await (const line of client) lines.push(line);
    })();
    const error = await rejectsWith(iterating, "closed");
    assert.equal(error.partial, "c");
    assert.deepEqual(lines, ["a", "b"]);
  });
});

Deno.test("client: a refused connect names the address and the reason", async () => {
  const port = freePort();
  const error = await rejectsWith(
    LineClient.connect({ port }),
    "refused",
  );
  assert.equal(
    error.message,
    `Cannot connect to 127.0.0.1:${port}: connection refused`,
  );
});

Deno.test("client: retry with backoff reaches a server that starts late, and gives up after its attempts", async () => {
  const port = freePort();
  const started = Date.now();
  await rejectsWith(
    LineClient.connect({ port, retry: { attempts: 3, initialDelayMs: 40 } }),
    "refused",
  );
  // Two waits: 20..40 ms, then 40..80 ms.
  assert.ok(
    Date.now() - started >= 60,
    `gave up after ${Date.now() - started} ms`,
  );

  const late = freePort();
  const connecting = LineClient.connect({
    port: late,
    retry: { attempts: 50, initialDelayMs: 20, maxDelayMs: 100 },
  });
  // Listen only once the client has been refused at least once.
  await delay(60);
  await using server = await startServer({
    port: late,
    protocol: echoProtocol,
  });
  await using client = await connecting;
  assert.equal(await client.request("hi"), "hi");
  assert.equal(server.addr.port, late);
});

Deno.test("client: a reset delivers what arrived, then fails waiting reads with reset", async () => {
  await withScriptedServer((socket) => {
    socket.write("before\r\n", () => socket.resetAndDestroy());
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    assert.equal(await client.readLine(), "before");
    const error = await rejectsWith(client.readLine(), "reset");
    assert.equal(error.message, `Connection to 127.0.0.1:${port} reset`);
  });
});

Deno.test("client: the read deadline notices a server that never answers, without waiting longer", async () => {
  await withScriptedServer(() => {}, async ({ port }) => {
    await using client = await LineClient.connect({ port, readTimeoutMs: 300 });
    const started = Date.now();
    const error = await rejectsWith(client.request("anyone?"), "timeout");
    const waited = Date.now() - started;
    assert.ok(waited >= 290 && waited < 3000, `waited ${waited} ms`);
    assert.equal(error.message, `No reply from 127.0.0.1:${port} in 0.3 s`);
    await withTimeout(client.closed, 5000, "the client to close");
    await rejectsWith(client.readLine(), "timeout");
  });
});

Deno.test("client: a server trickling bytes keeps the read deadline from firing", async () => {
  await withScriptedServer((socket) => {
    let n = 0;
    const timer = setInterval(() => {
      socket.write(n++ < 8 ? "x" : "\r\n");
      if (n > 8) clearInterval(timer);
    }, 60);
    socket.on("close", () => clearInterval(timer));
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port, readTimeoutMs: 250 });
    assert.equal(await client.readLine(), "xxxxxxxx");
  });
});

Deno.test("client: a timed-out readLine gives up its place; a timed-out request keeps it", async () => {
  await withScriptedServer((socket) => {
    // Replies in order; the one to "slow" takes 300 ms.
    let replies = Promise.resolve();
    socket.on("data", (data) => {
      for (const line of String(data).split("\n").filter((l) => l !== "")) {
        replies = replies.then(async () => {
          if (line === "slow") {
            await delay(300);
          }
          socket.write(`${line} reply\r\n`);
        });
      }
    });
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    await rejectsWith(
      client.readLine({ timeoutMs: 50 }),
      "timeout",
      /No line from/,
    );
    await rejectsWith(client.request("slow", { timeoutMs: 50 }), "timeout");
    // The reply to "slow" arrives later and is dropped: "next" gets its own.
    assert.equal(await client.request("next"), "next reply");
  });
});

Deno.test("client: a frame over the limit fails its read and is dropped as it arrives; the next line is fine", async () => {
  await withScriptedServer((socket) => {
    socket.write("x".repeat(100_000) + "\r\nafter\r\n");
  }, async ({ port }) => {
    await using client = await LineClient.connect({
      port,
      maxFrameBytes: 1000,
    });
    await rejectsWith(
      client.readLine(),
      "frame-too-long",
      /longer than 1000 bytes/,
    );
    assert.ok(
      client.bufferedBytes < 70_000,
      `${client.bufferedBytes} bytes held`,
    );
    assert.equal(await client.readLine(), "after");
  });
});

Deno.test("client: invalid UTF-8 becomes U+FFFD, a character split across reads is whole", async () => {
  await withScriptedServer((socket) => {
    socket.write(Buffer.from([0x61, 0xff, 0x62, 0xc3]));
    setTimeout(() => socket.write(Buffer.from([0xbc, 0x0d, 0x0a])), 50);
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    assert.equal(await client.readLine(), "a\ufffdbü");
  });
});

Deno.test("client: a flood is held off while the client does not read; memory stays bounded", async () => {
  let written = 0;
  let stalled = false;
  const line = Buffer.from("y".repeat(1000) + "\r\n");
  await withScriptedServer((socket) => {
    const pump = () => {
      while (written < 64 * 1024 * 1024) {
        written += line.length;
        if (!socket.write(line)) return void (stalled = true);
      }
    };
    socket.on("drain", () => {
      stalled = false;
      pump();
    });
    pump();
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port });
    assert.equal((await client.readLine()).length, 1000);
    // The server fills the kernel's buffers, then must wait.
    await waitFor("the server to stall", () => stalled, 5000);
    const stalledAt = written;
    await delay(200);
    assert.equal(written, stalledAt, "the server went on writing");
    assert.ok(
      client.bufferedBytes <= 256 * 1024,
      `${client.bufferedBytes} bytes held`,
    );
    assert.ok(
      client.bytesReceived < 32 * 1024 * 1024,
      `${client.bytesReceived} received`,
    );
    // Reading again lets the server go on.
    for (let i = 0; i < 64 * 1024 && written === stalledAt; i++) {
      await client.readLine();
    }
    assert.ok(written > stalledAt);
  });
});

Deno.test("client: a custom terminator both ways, and a counted block between lines", async () => {
  const EOM = "\r<--EOM-->\r";
  await withScriptedServer((socket) => {
    let input = "";
    socket.on("data", (data) => {
      input += data;
      if (input.endsWith(`get${EOM}`)) {
        socket.write(`VALUE 5${EOM}a\r\nb\0c${EOM}END${EOM}`);
      }
    });
  }, async ({ port }) => {
    await using client = await LineClient.connect({ port, terminator: EOM });
    await assert.rejects(client.send(`two${EOM}frames`), TypeError);
    assert.equal(await client.request("get"), "VALUE 5");
    assert.deepEqual(
      await client.readBytes(5),
      new TextEncoder().encode("a\r\nb\0"),
    );
    assert.equal(await client.readLine(), "c");
    assert.equal(await client.readLine(), "END");
  });
});

Deno.test("client: send waits while the server does not read (backpressure)", async () => {
  await withScriptedServer(
    (socket) => socket.pause(),
    async ({ port, accepted }) => {
      await using client = await LineClient.connect({ port });
      const peer = await accepted();
      const big = "z".repeat(1024 * 1024);
      let sent = 0;
      let waiting: Promise<void> | undefined;
      for (let i = 0; i < 64 && waiting === undefined; i++) {
        const write = client.send(big);
        const done = await Promise.race([
          write.then(() => true),
          new Promise((r) => setTimeout(() => r(false), 100)),
        ]);
        if (done) sent++;
        else waiting = write;
      }
      assert.ok(
        waiting !== undefined,
        `all ${sent} MiB were taken without waiting`,
      );
      peer.resume();
      await withTimeout(
        waiting,
        10_000,
        "the send to finish once the server reads",
      );
    },
  );
});

Deno.test("client: a line containing LF is refused; close fails waiting reads with aborted", async () => {
  await using server = await startServer({ port: 0, protocol: echoProtocol });
  const client = await LineClient.connect({ port: server.addr.port });
  await assert.rejects(client.send("two\nlines"), TypeError);
  await assert.rejects(client.request("two\nlines"), TypeError);
  const waiting = rejectsWith(client.readLine(), "aborted", /by this side/);
  await client.close();
  await waiting;
  await rejectsWith(client.send("x"), "aborted");
});

const opensslMissing = await opensslMissingReason();

Deno.test({
  name:
    "client: TLS with the server's certificate trusted, skipped with insecure, refused otherwise",
  ignore: opensslMissing !== undefined,
  async fn() {
    await using cert = await createTestCertificate();
    await using server = await startTlsServer(cert);
    const port = server.addr.port;
    {
      await using client = await LineClient.connect({
        port,
        tls: { ca: cert.certPem },
        greeting: true,
      });
      assert.equal(client.greeting, "<welcome: starting in sum mode>");
      assert.equal(await client.request("2,3"), "Sum of input integers: '5'");
      await client.closeWrite();
      await rejectsWith(client.readLine(), "closed");
    }
    {
      await using client = await LineClient.connect({
        port,
        tls: { insecure: true },
      });
      assert.equal(await client.readLine(), "<welcome: starting in sum mode>");
    }
    await rejectsWith(
      LineClient.connect({ port, tls: {} }),
      "tls",
      new RegExp(
        `^Cannot connect to 127\\.0\\.0\\.1:${port}: TLS handshake failed: `,
      ),
    );
  },
});

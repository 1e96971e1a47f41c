/**
 * The bulk-push example end to end, as two processes: three clients each
 * get three 3 MiB messages ended by `\r<--EOM-->\r`, check them byte for
 * byte and acknowledge them; then the server is stopped without closing
 * its sockets (SIGSTOP, later SIGKILL) and every client must notice within
 * its timeout, using next to no CPU while it waits.
 */
import assert from "node:assert/strict";
import { cpuSeconds } from "./support/hardening.ts";
import { ScriptProcess } from "./support/script_process.ts";
import { delay } from "./support/deadline.ts";

const EXAMPLE = new URL("../examples/bulk_push/", import.meta.url).pathname;
const TIMEOUT_S = 3;

function count(text: string, pattern: RegExp): number {
  return text.match(new RegExp(pattern, "g"))?.length ?? 0;
}

Deno.test("bulk push: 3 clients x 3 messages of 3 MiB, checked and acknowledged; a stopped server is noticed within the timeout at no CPU", async () => {
  await using server = ScriptProcess.spawn(`${EXAMPLE}server.ts`, [
    "--port",
    "0",
  ]);
  await server.waitForStdout(
    "the server to listen",
    (out) => /listening on 127\.0\.0\.1:\d+/.test(out),
    20_000,
  );
  const port = server.stdout.match(/listening on 127\.0\.0\.1:(\d+)/)![1];
  await using clients = ScriptProcess.spawn(`${EXAMPLE}client.ts`, [
    "--port",
    port,
    "--clients",
    "3",
    "--timeout",
    String(TIMEOUT_S),
  ]);
  await server.waitForStdout(
    "nine acknowledgements",
    (out) => count(out, /acknowledged: /) === 9,
    60_000,
  );

  server.signal("SIGSTOP");
  const stoppedAt = Date.now();
  const cpuAtStop = await cpuSeconds(clients.child.pid);
  // Every client waits at least until then (its clock started with its
  // last acknowledgement, before the stop), so the process still runs.
  await delay(TIMEOUT_S * 1000 - 1000);
  const cpuWhileWaiting = await cpuSeconds(clients.child.pid) - cpuAtStop;
  const status = await clients.waitForExit(TIMEOUT_S * 1000 + 10_000);
  const noticedAfter = Date.now() - stoppedAt;
  server.signal("SIGKILL");

  const out = clients.stdout;
  assert.equal(status.code, 0, `${out}\n${clients.stderr}`);
  for (let id = 1; id <= 3; id++) {
    for (let n = 1; n <= 3; n++) {
      assert.match(
        out,
        new RegExp(
          `client ${id}: message ${n}: 3145728 bytes, head…tail, checked byte for byte; sent 已收 ${n} 条。`,
        ),
      );
      assert.match(
        server.stdout,
        new RegExp(`client \\d+ acknowledged: 已收 ${n} 条。`),
      );
    }
    assert.match(
      out,
      new RegExp(
        `client ${id}: No reply from 127\\.0\\.0\\.1:${port} in ${TIMEOUT_S} s: the server is gone`,
      ),
    );
  }
  assert.equal(count(server.stdout, /acknowledged: 已收 [123] 条。/), 9);
  assert.ok(
    noticedAfter <= TIMEOUT_S * 1000 + 2000,
    `noticed ${noticedAfter} ms after the stop`,
  );
  assert.ok(
    cpuWhileWaiting <= 0.1,
    `the clients used ${cpuWhileWaiting} s of CPU in ${
      TIMEOUT_S - 1
    } s of waiting`,
  );
  const reported = out.match(/the process used ([\d.]+) ms of CPU/);
  assert.ok(reported, out);
  assert.ok(Number(reported[1]) <= 100, reported[0]);
});

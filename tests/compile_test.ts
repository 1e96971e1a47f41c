/**
 * `deno task compile` builds a self-contained binary that serves the
 * calculator. Compiling needs the `denort` runtime, which `deno compile`
 * downloads unless it is cached or `DENORT_BIN` points at a local copy. Where
 * it cannot be had (no network to the Deno download site), this test is
 * reported as ignored, with the reason, rather than passing without doing
 * anything: a bounded probe compile decides that before the test is registered.
 */
import assert from "node:assert/strict";
import { withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PROBE_TIMEOUT_MS = 30_000;
const COMPILE_TIMEOUT_MS = 120_000;
const decoder = new TextDecoder();

/** Runs `deno args...` to completion; kills it after `timeoutMs`. */
async function runDeno(
  args: string[],
  cwd: string,
  timeoutMs: number,
): Promise<{ success: boolean; output: string; timedOut: boolean }> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const result = await new Deno.Command("deno", {
      args,
      cwd,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    return {
      success: result.success,
      output: decoder.decode(result.stdout) + decoder.decode(result.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Compiles a one-line script. Returns undefined when compiling works here,
 * else why it does not (e.g. the denort runtime could not be downloaded).
 */
async function whyCompileIsUnavailable(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "lineserver-probe-" });
  try {
    await Deno.writeTextFile(`${dir}/probe.ts`, 'console.log("ok");\n');
    const probe = await runDeno(
      ["compile", "--no-config", "--output", `${dir}/probe`, "probe.ts"],
      dir,
      PROBE_TIMEOUT_MS,
    );
    if (probe.success) return undefined;
    if (probe.timedOut) {
      return `a probe compile did not finish within ${PROBE_TIMEOUT_MS} ms`;
    }
    const lines = probe.output.split("\n").map((line) => line.trim());
    const detail = lines.find((line) => /denort|dl\.deno\.land/.test(line)) ??
      lines.filter((line) => line !== "").at(-1) ?? "no output";
    return `deno compile cannot get its denort runtime here ` +
      `(set DENORT_BIN to a local denort to run it): ${detail}`;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const unavailable = await whyCompileIsUnavailable();
if (unavailable) console.log(`compile_test ignored: ${unavailable}`);

/** The `deno compile` arguments of `deno task compile`, with `--output` moved to `output`. */
async function compileTaskArgs(output: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const task: string = config.tasks.compile;
  assert.equal(typeof task, "string", "deno.json has no compile task");
  const words = task.trim().split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "compile"], task);
  const args: string[] = [];
  for (let i = 2; i < words.length; i++) {
    if (words[i] === "--output" || words[i] === "-o") i++;
    else if (!words[i].startsWith("--output=")) args.push(words[i]);
  }
  assert.ok(
    args.includes("server.ts"),
    `task does not compile server.ts: ${task}`,
  );
  return ["compile", "--output", output, ...args];
}

Deno.test({
  name: unavailable
    ? `compile: binary serves the transcript (ignored: ${unavailable})`
    : "compile: deno task compile builds a binary that serves the transcript",
  ignore: unavailable !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lineserver-compile-" });
    try {
      const binary = `${dir}/lineserver`;
      const compiled = await runDeno(
        await compileTaskArgs(binary),
        ROOT,
        COMPILE_TIMEOUT_MS,
      );
      assert.ok(compiled.success, `compile failed:\n${compiled.output}`);
      await serveTranscript(binary);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Runs the binary on port 0 and checks the SPEC §3 transcript over a socket. */
async function serveTranscript(binary: string) {
  // The test permissions allow running `sh` (not arbitrary paths); `exec`
  // replaces the shell, so the child's PID is the server's own.
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$0" "$@"', binary, "--port", "0"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const stderrDone = (async () => {
    const streamDecoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += streamDecoder.decode(chunk, { stream: true });
    }
  })();
  const stdoutDone = child.stdout.pipeTo(new WritableStream());
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  try {
    const deadline = Date.now() + 15000;
    let match: RegExpMatchArray | null = null;
    while (!(match = stderr.match(/(?<!admin )listening on (\S+):(\d+)/))) {
      assert.ok(!exited, `binary exited before listening:\n${stderr}`);
      assert.ok(Date.now() < deadline, `no listening line:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const port = Number(match[2]);
    assert.ok(port > 0);
    {
      using client = await LineClient.connect(port);
      assert.equal(await client.readLine(), "<welcome: starting in sum mode>");
      const transcript: [string, string][] = [
        [
          "help",
          "Commands: sum, product, quit, help. Or send integers separated by commas, e.g. 1,2,4",
        ],
        ["1,2,4", "Sum of input integers: '7'"],
        ["product", "<switching to product mode>"],
        ["1,2,4", "Product of input integers: '8'"],
        ["sum", "<switching to sum mode>"],
        ["hello", "ERROR. Enter only integers separated by commas"],
        ["quit", "connection closed"],
      ];
      for (const [request, reply] of transcript) {
        await client.send(`${request}\r\n`);
        assert.equal(await client.readLine(), reply, `reply to ${request}`);
      }
      await client.expectClosed();
    }
    child.kill("SIGTERM");
    const { code } = await withTimeout(status, 10000, "binary exit");
    assert.equal(code, 0, stderr);
  } finally {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }
    await withTimeout(
      Promise.all([status, stderrDone, stdoutDone]),
      10000,
      "binary output",
    );
  }
}

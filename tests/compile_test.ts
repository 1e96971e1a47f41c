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
import { runDeno } from "./support/tools.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PROBE_TIMEOUT_MS = 30_000;
const COMPILE_TIMEOUT_MS = 120_000;

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
        ["task", "compile", "--output", binary],
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

/**
 * Whether compiling here would have to download denort: true where it cannot
 * (then any compile shows it), else a probe with downloads made impossible
 * (an HTTPS proxy on a closed port) tells whether a cached denort is used.
 */
async function compilingNeedsDownload(): Promise<boolean> {
  if (unavailable !== undefined) return true;
  const dir = await Deno.makeTempDir({ prefix: "lineserver-probe-" });
  try {
    await Deno.writeTextFile(`${dir}/probe.ts`, 'console.log("ok");\n');
    const probe = await runDeno(
      ["compile", "--no-config", "--output", `${dir}/probe`, "probe.ts"],
      dir,
      PROBE_TIMEOUT_MS,
      NO_DOWNLOADS,
    );
    return !probe.success;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every download fails: the proxy is a closed port on this machine. */
const NO_DOWNLOADS = {
  HTTPS_PROXY: "http://127.0.0.1:9",
  https_proxy: undefined,
  NO_PROXY: undefined,
  no_proxy: undefined,
  DENORT_BIN: undefined,
};
const needsDownload = await compilingNeedsDownload();

Deno.test({
  name: needsDownload
    ? "compile: without denort, deno task compile says so in one line and leaves no dist/"
    : "compile: the no-denort message (ignored: a cached denort is used, nothing is downloaded)",
  ignore: !needsDownload,
  async fn() {
    // A copy of the project, so that its dist/ is the task's alone.
    const copy = await Deno.makeTempDir({ prefix: "lineserver-offline-" });
    try {
      for await (const entry of Deno.readDir(ROOT)) {
        if (entry.name === ".git" || entry.name === "dist") continue;
        await copyTree(`${ROOT}/${entry.name}`, `${copy}/${entry.name}`);
      }
      const result = await runDeno(
        ["task", "--quiet", "compile"],
        copy,
        COMPILE_TIMEOUT_MS,
        NO_DOWNLOADS,
      );
      assert.ok(!result.success, `compiled anyway:\n${result.output}`);
      const lines = result.output.split("\n").filter((l) => l.trim() !== "");
      assert.equal(lines.length, 1, `not one line:\n${result.output}`);
      assert.match(lines[0], /\bdenort\b.*could not be downloaded/);
      assert.match(lines[0], /DENORT_BIN=\/path\/to\/denort deno task compile/);
      await assert.rejects(Deno.stat(`${copy}/dist`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(copy, { recursive: true });
    }
  },
});

/** Copies a file or a directory tree. */
async function copyTree(from: string, to: string) {
  const info = await Deno.stat(from);
  if (!info.isDirectory) return await Deno.copyFile(from, to);
  await Deno.mkdir(to);
  for await (const entry of Deno.readDir(from)) {
    await copyTree(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

/** Runs the binary on port 0 and checks the calculator's transcript over a socket. */
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

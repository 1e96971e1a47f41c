/**
 * The container image, built and run for real: `deno task image` builds it
 * with podman from deploy/Containerfile (offline), and the container serves
 * the calculator on a port published on 127.0.0.1, with a read-only root
 * file system, as a user that owns none of its files. `podman stop` sends
 * SIGTERM, and the server drains: an idle client gets `<server shutting
 * down>`, the container exits 0 and its log ends with the summary.
 *
 * Where podman is missing, or cannot run containers at all, the test is
 * reported as ignored with the reason. Its container and image are removed
 * whatever happens.
 */
import assert from "node:assert/strict";
import { waitFor, withTimeout } from "./support/deadline.ts";
import { LineClient } from "./support/line_client.ts";
import { SHUTTING_DOWN, WELCOME } from "./support/hardening.ts";
import { runDeno, toolMissingReason } from "./support/tools.ts";
import { parseCli } from "../src/cli.ts";
import { DEFAULT_TAG } from "../scripts/image.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/**
 * What this machine kind needs to run a container: runc, as crun fails on
 * its cgroup layout; and resource limits no higher than the host's own
 * (podman would otherwise ask for more than the host allows, and fail).
 */
const RUN_FLAGS = [
  "--runtime",
  "runc",
  "--ulimit",
  "nofile=4096:4096",
  "--ulimit",
  "nproc=4096:4096",
];

/** The first line of a process's stderr, for a one-line reason. */
function firstLineOf(bytes: Uint8Array): string {
  return decoder.decode(bytes).trim().split("\n")[0] ?? "";
}

/** Why podman cannot run this test here, or undefined if it can. */
async function podmanUnusableReason(): Promise<string | undefined> {
  const missing = await toolMissingReason("podman", ["--version"], "podman");
  if (missing !== undefined) return missing;
  const info = await withTimeout(
    new Deno.Command("podman", {
      args: ["info"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output(),
    30_000,
    "podman info",
  );
  return info.success
    ? undefined
    : `podman cannot run here: ${firstLineOf(info.stderr)}`;
}

/** Runs `podman args...`, asserts that it succeeded, returns its stdout. */
async function podman(args: string[], timeoutMs = 30_000): Promise<string> {
  const output = await withTimeout(
    new Deno.Command("podman", {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output(),
    timeoutMs,
    `podman ${args.join(" ")}`,
  );
  assert.ok(
    output.success,
    `podman ${args.join(" ")} failed: ${decoder.decode(output.stderr)}`,
  );
  return decoder.decode(output.stdout).trim();
}

/** Appends everything `stream` carries to `sink.text`, until it ends. */
async function collect(
  stream: ReadableStream<Uint8Array>,
  sink: { text: string },
): Promise<void> {
  const streamDecoder = new TextDecoder();
  for await (const chunk of stream) {
    sink.text += streamDecoder.decode(chunk, { stream: true });
  }
}

const podmanUnusable = await podmanUnusableReason();

Deno.test({
  name: podmanUnusable
    ? `image: built and run with podman (ignored: ${podmanUnusable})`
    : "image: deno task image builds it; it serves on a published port, read-only, and drains on SIGTERM: exit 0 and the summary",
  ignore: podmanUnusable !== undefined,
  async fn() {
    const id = `${Deno.pid}-${Date.now()}`;
    const tag = `localhost/lineserver-test:${id}`;
    const name = `lineserver-test-${id}`;
    let container: Deno.ChildProcess | undefined;
    const logs = { text: "" };
    let collecting: Promise<unknown> = Promise.resolve();
    try {
      const build = await runDeno(
        ["task", "image", "--tag", tag],
        ROOT,
        180_000,
      );
      const said = build.output;
      assert.ok(build.success, said);
      assert.match(said, new RegExp(`^Built ${tag} \\(\\d+ MB\\)`, "m"));
      assert.equal(
        await podman(["image", "inspect", "--format", "{{.Config.User}}", tag]),
        "65532:65532",
      );

      // Attached, so that its stderr is the server's log and its exit code
      // the server's.
      container = new Deno.Command("podman", {
        args: [
          "run",
          "--name",
          name,
          "--read-only",
          "--publish",
          "127.0.0.1::8080",
          ...RUN_FLAGS,
          tag,
          "--shutdown-timeout",
          "5",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      collecting = Promise.all([
        collect(container.stdout, logs),
        collect(container.stderr, logs),
      ]);
      const exited = container.status.then((status) => {
        throw new Error(`container exited (${status.code}):\n${logs.text}`);
      });
      exited.catch(() => {});
      // A stop signal before the server listens would be lost: it runs as
      // the container's PID 1, which the kernel spares signals it has no
      // handler for.
      await waitFor(
        "the container's listening line",
        () => /listening on 0\.0\.0\.0:8080 /.test(logs.text),
        30_000,
        exited,
      );
      const published = await podman(["port", name, "8080/tcp"]);
      const port = Number(published.match(/^127\.0\.0\.1:(\d+)$/m)?.[1]);
      assert.ok(port > 0, `podman port: ${published}`);

      using idle = await LineClient.connect(port);
      assert.equal(await idle.readLine(), WELCOME);
      {
        using client = await LineClient.connect(port);
        assert.equal(await client.readLine(), WELCOME);
        await client.send("1,2,4\n");
        assert.equal(await client.readLine(), "Sum of input integers: '7'");
        await client.send("quit\n");
        assert.equal(await client.readLine(), "connection closed");
        await client.expectClosed();
      }

      // SIGTERM; SIGKILL only if the container were still running 10 s later.
      const stopping = podman(["stop", "--time", "10", name], 20_000);
      assert.equal(await idle.readLine(), SHUTTING_DOWN);
      await idle.expectClosed();
      await stopping;
      const status = await withTimeout(container.status, 10_000, "exit");
      await withTimeout(collecting, 5000, "the container's output");
      assert.equal(status.code, 0, logs.text);
      assert.match(logs.text, /SIGTERM received: draining/);
      assert.match(
        logs.text,
        /shutdown complete: 2 connections served; 1 open at shutdown: 1 finished gracefully, 0 closed by force/,
      );
    } finally {
      await podman(["rm", "--force", "--ignore", name], 60_000);
      if (container !== undefined) {
        await withTimeout(container.status, 10_000, "podman run to end");
        await withTimeout(collecting, 5000, "the container's output");
      }
      await podman(["rmi", "--force", "--ignore", tag], 60_000);
    }
  },
});

// --- the files that go with the image ---------------------------------------

/** The server's options in the Containerfile's ENTRYPOINT (after server.ts). */
async function entrypointOptions(): Promise<string[]> {
  const containerfile = await Deno.readTextFile(
    `${ROOT}deploy/Containerfile`,
  );
  const entrypoint = containerfile.match(/^ENTRYPOINT (\[.*\])$/m);
  assert.ok(entrypoint, "no ENTRYPOINT in exec form");
  const argv: string[] = JSON.parse(entrypoint[1]);
  return argv.slice(argv.indexOf("server.ts") + 1);
}

Deno.test("image: deploy/kubernetes.yaml runs the image deno task image builds, with options it accepts and a grace period above the drain", async () => {
  const manifest = await Deno.readTextFile(`${ROOT}deploy/kubernetes.yaml`);
  assert.match(manifest, new RegExp(`^\\s+image: ${DEFAULT_TAG}$`, "m"));
  // The container's args: the list items under `args:`.
  const list = manifest.match(/^( +)args:\n((?:\1 +- .*\n)+)/m);
  assert.ok(list, "no args list");
  const args = [...list[2].matchAll(/- "?([^"\n]*)"?/g)].map((m) => m[1]);
  const request = parseCli([...await entrypointOptions(), ...args]);
  assert.equal(request.kind, "run", JSON.stringify(request));
  if (request.kind !== "run") return;
  assert.equal(request.options.host, "0.0.0.0");
  const grace = Number(
    manifest.match(/terminationGracePeriodSeconds: (\d+)/)?.[1],
  );
  assert.ok(
    grace > request.options.shutdownTimeoutMs / 1000,
    `terminationGracePeriodSeconds ${grace} is not above --shutdown-timeout`,
  );
  // Readiness on the admin port's /healthz, which says 503 while draining.
  assert.match(
    manifest,
    /readinessProbe:\n\s+httpGet:\n\s+path: \/healthz\n\s+port: admin/,
  );
  assert.ok(args.includes("--admin-port"));
});

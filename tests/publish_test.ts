/**
 * What `deno publish` would ship: the library and the commands (mod.ts,
 * protocol.ts, server.ts, client.ts, signals.ts, src/), the licence, the README and
 * deno.json; never the tests, the benchmark, deployment examples, CI or
 * build output. Checked with `deno publish --dry-run`, which needs no
 * network and uploads nothing.
 */
import assert from "node:assert/strict";
import { runDeno } from "./support/tools.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The project-relative paths `deno publish --dry-run` lists. */
async function dryRunFiles(): Promise<string[]> {
  const { success, output: text } = await runDeno(
    ["publish", "--dry-run", "--allow-dirty"],
    ROOT,
    120_000,
  );
  assert.ok(success, `deno publish --dry-run failed:\n${text}`);
  const root = new URL("..", import.meta.url).href;
  return [...text.matchAll(/^\s+(file:\/\/\S+)/gm)].map((m) =>
    m[1].slice(root.length)
  );
}

Deno.test("publish: only the library, the commands, their docs, LICENSE, README.md and deno.json ship", async () => {
  const files = await dryRunFiles();
  for (
    const expected of [
      "LICENSE",
      "README.md",
      "deno.json",
      "mod.ts",
      "protocol.ts",
      "server.ts",
      "client.ts",
      "signals.ts",
      "src/cli.ts",
      "src/cluster_worker.ts",
      "src/line_server.ts",
      "docs/protocol.md",
    ]
  ) {
    assert.ok(files.includes(expected), `${expected} not in ${files}`);
  }
  const stray = files.filter((file) =>
    !/^(mod|protocol|server|client|signals)\.ts$|^src\/|^docs\/[a-z-]+\.md$|^(LICENSE|README\.md|deno\.json)$/
      .test(file)
  );
  assert.deepEqual(stray, [], "files that should not ship");
});

Deno.test("publish: MIT licence, in deno.json and in LICENSE", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  assert.equal(config.license, "MIT");
  const license = await Deno.readTextFile(`${ROOT}/LICENSE`);
  assert.match(license, /^MIT License\n/);
  assert.match(license, /^Copyright \(c\) 2026 the lineserver authors$/m);
});

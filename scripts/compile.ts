/**
 * `deno task compile [--output PATH]`: builds one self-contained binary of
 * the server (default `dist/lineserver`) that may use the network and read
 * files (the TLS certificate and key, and the `--workers` module embedded in
 * it).
 *
 * `deno compile` needs `denort`, the Deno runtime that the binary is built
 * on. It downloads it unless it is cached already or `DENORT_BIN` names a
 * local copy (the unpacked `denort` binary of this Deno version). Where the
 * download fails (offline, or behind a firewall), this prints one line that
 * says so and how to use a local copy, instead of the raw error chain, and
 * removes the output directory if the attempt left it empty. Any other
 * failure is shown as `deno compile` reports it.
 *
 * @module
 */

/** The permissions the binary runs with, and the worker module it embeds. */
export const COMPILE_FLAGS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--include",
  "src/cluster_worker.ts",
];

/** Where the binary goes unless `--output` says otherwise. */
export const DEFAULT_OUTPUT = "dist/lineserver";

/** The `deno` arguments that compile the server to `output`. */
export function compileArgs(output: string): string[] {
  return ["compile", ...COMPILE_FLAGS, "--output", output, "server.ts"];
}

/**
 * If `deno compile`'s output says that it could not download denort, the
 * innermost cause (e.g. `Connection refused (os error 111)`), else undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { denortDownloadFailure } from "./compile.ts";
 *
 * const output = `error: Writing deno compile executable to temporary file
 *
 * Caused by:
 *     0: Setting up base binary.
 *     1: error sending request for url (https://example.com/denort-x86_64-unknown-linux-gnu.zip): client error (Connect)
 *     2: dns error
 *     3: failed to lookup address information: Name or service not known
 *
 * Stack backtrace:
 *    0: <unknown>
 * `;
 * assert.equal(
 *   denortDownloadFailure(output),
 *   "failed to lookup address information: Name or service not known",
 * );
 * assert.equal(denortDownloadFailure("error: Type checking failed."), undefined);
 * ```
 */
export function denortDownloadFailure(output: string): string | undefined {
  // deno colours its output unless NO_COLOR is set: drop the escapes.
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  if (!/error sending request for url \([^)]*denort/.test(plain)) {
    return undefined;
  }
  // The numbered lines under "Caused by:", up to the blank line after them.
  const chain = plain.split(/^Caused by:$/m)[1]?.split(/\n\s*\n/)[0] ?? "";
  const causes = [...chain.matchAll(/^\s*\d+: (.*)$/gm)].map((m) => m[1]);
  return causes.at(-1)?.trim() || "no details";
}

/** The project root: `deno compile` runs there. */
const ROOT = new URL("..", import.meta.url).pathname;

/** Removes `dir` if it exists and is empty (what a failed compile leaves). */
function removeIfEmpty(dir: string) {
  try {
    for (const _ of Deno.readDirSync(dir)) return;
    Deno.removeSync(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** Parses `[--output PATH]`; returns the output path or an error message. */
function parseOutput(args: string[]): { output: string } | { error: string } {
  if (args.length === 0) return { output: DEFAULT_OUTPUT };
  const [flag, value] = args[0].startsWith("--output=")
    ? ["--output", args[0].slice("--output=".length)]
    : [args[0], args[1]];
  const used = args[0].startsWith("--output=") ? 1 : 2;
  if (flag !== "--output" || !value || args.length !== used) {
    return { error: `Usage: deno task compile [--output PATH]` };
  }
  return { output: value };
}

/** Compiles the server; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseOutput(args);
  if ("error" in parsed) {
    console.error(parsed.error);
    return 2;
  }
  const result = await new Deno.Command("deno", {
    args: compileArgs(parsed.output),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (result.success) {
    await Deno.stdout.write(result.stdout);
    await Deno.stderr.write(result.stderr);
    return 0;
  }
  // deno compile creates the output's directory before it fails.
  removeIfEmpty(`${ROOT}dist`);
  const decoder = new TextDecoder();
  const output = decoder.decode(result.stdout) + decoder.decode(result.stderr);
  const cause = denortDownloadFailure(output);
  if (cause === undefined) {
    await Deno.stdout.write(result.stdout);
    await Deno.stderr.write(result.stderr);
  } else {
    console.error(
      `Cannot compile: the Deno runtime for compiling (denort) could not be downloaded (${cause}); DENORT_BIN=/path/to/denort deno task compile uses a local one`,
    );
  }
  return result.code === 0 ? 1 : result.code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

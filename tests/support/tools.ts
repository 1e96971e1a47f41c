/**
 * External programs some tests drive for real (openssl, haproxy, sh). A
 * test whose program is missing is registered as ignored, with this reason;
 * a program that fails is an error that says what it was for.
 *
 * @module
 */

/**
 * Why tests needing `command` cannot run here, or `undefined` if they can:
 * runs `command ...versionArgs` and names the Debian package when absent.
 */
export async function toolMissingReason(
  command: string,
  versionArgs: string[],
  debianPackage: string,
): Promise<string | undefined> {
  try {
    const { code } = await new Deno.Command(command, {
      args: versionArgs,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return code === 0
      ? undefined
      : `"${[command, ...versionArgs].join(" ")}" exited with ${code}`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return `${command} is not installed (Debian package: ${debianPackage})`;
    }
    throw error;
  }
}

/**
 * Runs `argv` (a program and its arguments) to completion and returns what
 * it wrote to stdout; when it exits non-zero, throws `Cannot WHAT (exit
 * CODE): STDERR`, so that a failing helper says what it was doing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runTool } from "./tools.ts";
 *
 * assert.equal(await runTool("say hello", ["sh", "-c", "echo hello"]), "hello\n");
 * await assert.rejects(
 *   runTool("fail", ["sh", "-c", "echo why >&2; exit 3"]),
 *   { message: "Cannot fail (exit 3): why" },
 * );
 * ```
 */
export async function runTool(what: string, argv: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (code !== 0) {
    throw new Error(
      `Cannot ${what} (exit ${code}): ${decoder.decode(stderr).trim()}`,
    );
  }
  return decoder.decode(stdout);
}

/**
 * External programs some tests drive for real (openssl, haproxy, sh, deno). A
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

/** How a {@linkcode runDeno} run ended, and what it wrote. */
export interface DenoRun {
  success: boolean;
  /** Its exit code (128 + the signal's number when killed). */
  code: number;
  /** Its stdout followed by its stderr. */
  output: string;
  /** True if it was killed for running longer than its bound. */
  timedOut: boolean;
}

/**
 * Runs `deno args...` to completion in `cwd` with `NO_COLOR=1`; kills it
 * after `timeoutMs`. `env` is added to this process's environment; a name set
 * to undefined is removed from it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runDeno } from "./tools.ts";
 *
 * const run = await runDeno(["eval", "console.log(1)"], ".", 30_000);
 * assert.deepEqual(run, {
 *   success: true,
 *   code: 0,
 *   output: "1\n",
 *   timedOut: false,
 * });
 * ```
 */
export async function runDeno(
  args: string[],
  cwd: string,
  timeoutMs: number,
  env: Record<string, string | undefined> = {},
): Promise<DenoRun> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const childEnv: Record<string, string> = { ...Deno.env.toObject() };
  for (const [name, value] of Object.entries({ NO_COLOR: "1", ...env })) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  try {
    const result = await new Deno.Command("deno", {
      args,
      cwd,
      clearEnv: true,
      env: childEnv,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    const decoder = new TextDecoder();
    return {
      success: result.success,
      code: result.code,
      output: decoder.decode(result.stdout) + decoder.decode(result.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A loopback port that was free a moment ago (bound, read, released). For
 * processes whose port must be known before they start.
 */
export function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

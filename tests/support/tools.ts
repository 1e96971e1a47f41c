/**
 * External programs some tests drive for real (openssl, haproxy). A test
 * whose program is missing is registered as ignored, with this reason.
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

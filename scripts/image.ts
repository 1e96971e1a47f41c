/**
 * `deno task image [--tag NAME] [--stage DIR]`: builds the container image
 * of the server from `deploy/Containerfile` with podman, offline, as
 * `localhost/lineserver:VERSION` unless `--tag` names another.
 *
 * The image is `FROM scratch`, so this stages everything it holds into a
 * build context (under `dist/`, removed afterwards): the running `deno`
 * binary, the C libraries `ldd` lists for it, the files the server loads,
 * and a Deno cache (`DENO_DIR`) filled by `deno cache` from this machine's
 * own cache, so that the build downloads nothing. The staged cache is
 * checked by loading the server from it with `--cached-only` before
 * anything is built. `--stage DIR` stages into DIR, keeps it and builds
 * nothing, for another OCI builder (`docker build -f deploy/Containerfile
 * DIR`).
 *
 * @module
 */
import denoConfig from "../deno.json" with { type: "json" };

/** The tag built unless `--tag` names another. */
export const DEFAULT_TAG = `localhost/lineserver:${denoConfig.version}`;

/** The project files the server loads, relative to the project root. */
export const PROJECT_FILES: readonly string[] = [
  "deno.json",
  "deno.lock",
  "LICENSE",
  "mod.ts",
  "protocol.ts",
  "server.ts",
  "signals.ts",
  "src",
];

/** What the image's Deno cache must hold the dependencies of. */
const ENTRY_POINTS = ["server.ts", "src/cluster_worker.ts"];

const ROOT = new URL("..", import.meta.url).pathname;
const CONTAINERFILE = `${ROOT}deploy/Containerfile`;

/** A step that failed, said in one line. */
class ImageError extends Error {}

/**
 * The absolute paths of the libraries in `ldd`'s output, the dynamic
 * loader included; the kernel's vDSO has no file and is left out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libraryPaths } from "./image.ts";
 *
 * const ldd = `\tlinux-vdso.so.1 (0x00007ffd)
 * \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f19)
 * \t/lib64/ld-linux-x86-64.so.2 (0x00007f19)
 * `;
 * assert.deepEqual(libraryPaths(ldd), [
 *   "/lib/x86_64-linux-gnu/libc.so.6",
 *   "/lib64/ld-linux-x86-64.so.2",
 * ]);
 * ```
 */
export function libraryPaths(lddOutput: string): string[] {
  const paths: string[] = [];
  for (const line of lddOutput.split("\n")) {
    const path = line.match(/(?:=>\s*|^\s*)(\/\S+)/)?.[1];
    if (path !== undefined) paths.push(path);
  }
  return paths;
}

/**
 * The npm package names a `deno.lock` (version 4 or later) pins.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { npmPackageNames } from "./image.ts";
 *
 * const lock = { npm: { "@logtape/logtape@2.4.2": {}, "left-pad@1.3.0": {} } };
 * assert.deepEqual(npmPackageNames(lock), ["@logtape/logtape", "left-pad"]);
 * ```
 */
export function npmPackageNames(lock: { npm?: object }): string[] {
  const names = Object.keys(lock.npm ?? {}).map((key) =>
    key.slice(0, key.indexOf("@", 1))
  );
  return [...new Set(names)];
}

/** Runs `command args...`; its stdout, or an ImageError naming what failed. */
async function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, {
      args,
      ...options,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ImageError(
        `${command} is not installed (Debian: apt-get install ${
          command === "ldd" ? "libc-bin" : command
        })`,
      );
    }
    throw error;
  }
  const decoder = new TextDecoder();
  if (!output.success) {
    const said = decoder.decode(output.stderr).trim().split("\n").at(-1);
    throw new ImageError(
      `${command} ${args[0]} failed (exit ${output.code}): ${said}`,
    );
  }
  return decoder.decode(output.stdout);
}

/** Copies a file or a directory tree, following symbolic links. */
async function copy(from: string, to: string): Promise<void> {
  const info = await Deno.stat(from);
  const parent = to.slice(0, to.lastIndexOf("/"));
  await Deno.mkdir(parent, { recursive: true });
  if (!info.isDirectory) {
    await Deno.copyFile(from, to);
    return;
  }
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    await copy(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

/**
 * Every file readable and every directory searchable by anyone: the image
 * runs as a user that owns none of them, whatever this machine's umask.
 */
async function openToAll(path: string): Promise<void> {
  const info = await Deno.lstat(path);
  if (info.isDirectory) {
    await Deno.chmod(path, 0o755);
    for await (const entry of Deno.readDir(path)) {
      await openToAll(`${path}/${entry.name}`);
    }
  } else if (info.isFile) {
    await Deno.chmod(path, (info.mode ?? 0) & 0o111 ? 0o755 : 0o644);
  }
}

/** The Deno cache of the image: this machine's npm packages, then `deno cache`. */
async function stageDenoDir(app: string, denoDir: string): Promise<void> {
  const { npmCache } = JSON.parse(await run("deno", ["info", "--json"]));
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}deno.lock`));
  // One directory per registry (registry.npmjs.org unless configured).
  for await (const registry of Deno.readDir(npmCache)) {
    for (const name of npmPackageNames(lock)) {
      const from = `${npmCache}/${registry.name}/${name}`;
      const exists = await Deno.stat(from).then(() => true, () => false);
      if (exists) {
        await copy(from, `${denoDir}/npm/${registry.name}/${name}`);
      }
    }
  }
  // Fills in whatever this machine's cache lacked (that needs the network).
  const env = { DENO_DIR: denoDir, NO_COLOR: "1" };
  await run("deno", ["cache", ...ENTRY_POINTS], { cwd: app, env });
  const version = await run(
    "deno",
    ["run", "--cached-only", "server.ts", "--version"],
    { cwd: app, env },
  );
  if (!version.includes(denoConfig.version)) {
    throw new ImageError(`the staged server says ${JSON.stringify(version)}`);
  }
}

/** Stages the build context of deploy/Containerfile into `context`. */
export async function stage(context: string): Promise<void> {
  const rootfs = `${context}/rootfs`;
  const deno = await Deno.realPath(Deno.execPath());
  await copy(deno, `${rootfs}/usr/bin/deno`);
  for (const library of libraryPaths(await run("ldd", [deno]))) {
    await copy(library, `${rootfs}${library}`);
  }
  for (const file of PROJECT_FILES) {
    await copy(`${ROOT}${file}`, `${rootfs}/app/${file}`);
  }
  await stageDenoDir(`${rootfs}/app`, `${rootfs}/deno-dir`);
  await openToAll(rootfs);
}

/** Parses `[--tag NAME] [--stage DIR]`, or says what is wrong. */
function parseImageArgs(
  args: string[],
): { tag: string; stageDir?: string } | { error: string } {
  const values = new Map<string, string>();
  for (let i = 0; i < args.length; i += 2) {
    const [name, value] = [args[i], args[i + 1]];
    if (
      !["--tag", "--stage"].includes(name) || value === undefined ||
      values.has(name)
    ) {
      return { error: "Usage: deno task image [--tag NAME] [--stage DIR]" };
    }
    values.set(name, value);
  }
  return {
    tag: values.get("--tag") ?? DEFAULT_TAG,
    stageDir: values.get("--stage"),
  };
}

/** Builds the image (or only stages it); returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseImageArgs(args);
  if ("error" in parsed) {
    console.error(parsed.error);
    return 2;
  }
  const started = performance.now();
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  const context = parsed.stageDir ??
    await Deno.makeTempDir({ dir: `${ROOT}dist`, prefix: "image-" });
  try {
    await stage(context);
    if (parsed.stageDir !== undefined) {
      console.log(
        `Staged in ${context}: build it with -f deploy/Containerfile ${context}`,
      );
      return 0;
    }
    await run("podman", [
      "build",
      // One image, without an intermediate one per instruction.
      "--layers=false",
      "--file",
      CONTAINERFILE,
      "--tag",
      parsed.tag,
      "--label",
      `org.opencontainers.image.version=${denoConfig.version}`,
      context,
    ]);
    const bytes = Number(
      await run("podman", [
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        parsed.tag,
      ]),
    );
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `Built ${parsed.tag} (${Math.round(bytes / 1e6)} MB) in ${
        seconds.toFixed(1)
      } s; run it: podman run --rm -p 127.0.0.1:8080:8080 --read-only ${parsed.tag}`,
    );
    return 0;
  } catch (error) {
    if (!(error instanceof ImageError)) throw error;
    console.error(`Cannot build the image: ${error.message}`);
    return 1;
  } finally {
    if (parsed.stageDir === undefined) {
      await Deno.remove(context, { recursive: true });
    }
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

/**
 * Command-line parsing for `client.ts`: every value is checked, and any
 * problem becomes one line that names the option (exit code 2), as for
 * `server.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { VERSION } from "./cli.ts";

export { VERSION };

/** Settings of a client run, validated. */
export interface ClientCliOptions {
  /** The server's host name or address (without brackets for IPv6). */
  hostname: string;
  port: number;
  /** `--tls`: speak TLS. */
  tls: boolean;
  /** `--ca FILE`: a PEM certificate authority to trust. */
  caFile: string | undefined;
  /** `--insecure`: do not verify the server's certificate. */
  insecure: boolean;
  /** `--timeout`: after a line was sent, how long the server may stay silent; 0 = forever. */
  timeoutMs: number;
  /** `--connect-timeout`: how long connecting may take. */
  connectTimeoutMs: number;
}

/** What the command line asks for. */
export type ClientCliRequest =
  | { kind: "run"; options: ClientCliOptions }
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "error"; message: string };

/** The `--help` text. */
export const CLIENT_USAGE =
  `lineserver client ${VERSION}: send stdin's lines to a line server, print its lines

Usage: deno task client HOST:PORT [options]
       deno run --allow-net [--allow-read] client.ts HOST:PORT [options]

Every line read from stdin is sent ended by LF; every line the server sends
is printed as soon as it arrives, without its CR. At the end of stdin the
client half-closes and goes on printing until the server closes (exit 0);
when the server closes first, it exits 0 at once.

Options:
  --timeout SECONDS          once a line was sent, give up (exit 1) when the
                             server sends nothing for this long, counted from
                             the last line sent or received; 0 = wait forever
                             (default 0)
  --connect-timeout SECONDS  give up connecting after this long (default 10)
  --tls                      speak TLS
  --ca FILE                  with --tls: trust this PEM certificate authority
                             (needs --allow-read)
  --insecure                 with --tls: do not verify the server's certificate
                             (self-signed test certificates only)
  --help                     print this help and exit
  --version                  print the version and exit

Exit codes: 0 the server closed; 1 it could not be reached, reset the
connection or stayed silent past --timeout; 2 bad options; 130 Ctrl-C.
`;

const HINT = "run with --help for usage";
/** Longest timeout accepted, in seconds: timers cannot wait longer than 2^31-1 ms. */
const MAX_TIMEOUT_SECONDS = 2_147_483;

class UsageError extends Error {}

function seconds(option: string, text: string, min: number): number {
  const value = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  const ms = value > 0 ? Math.max(1, Math.round(value * 1000)) : 0;
  if (!(value <= MAX_TIMEOUT_SECONDS && ms >= min)) {
    throw new UsageError(
      `Invalid value for --${option}: expected a number of seconds from ${
        min === 0 ? 0 : 0.001
      } to ${MAX_TIMEOUT_SECONDS}, received ${JSON.stringify(text)}`,
    );
  }
  return ms;
}

/** `HOST:PORT`, `[IPv6]:PORT`. */
function address(text: string): { hostname: string; port: number } {
  const match = text.match(/^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)$/);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 1 && port <= 65535)) {
    throw new UsageError(
      `Invalid address: expected HOST:PORT with a port from 1 to 65535, received ${
        JSON.stringify(text)
      }`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}

/** The options that take a value, and those that are flags. */
const VALUE_OPTIONS = ["timeout", "connect-timeout", "ca"] as const;
const FLAGS = ["tls", "insecure", "help", "version"] as const;

/**
 * The options given, each once (a flag as `true`), and the positional
 * arguments. parseArgs (not strict) only splits the arguments; every problem
 * is said here, the way `server.ts` says it: an option's value, even one
 * that looks like an option (`--timeout -1`), reaches the option's check.
 */
function readArgs(
  args: string[],
): { given: Map<string, string | true>; positionals: string[] } {
  const { tokens } = parseArgs({
    args,
    strict: false,
    allowPositionals: true,
    tokens: true,
    options: Object.fromEntries([
      ...VALUE_OPTIONS.map((name) => [name, { type: "string" }]),
      ...FLAGS.map((name) => [name, { type: "boolean" }]),
    ]) as Record<string, { type: "string" | "boolean" }>,
  });
  const given = new Map<string, string | true>();
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") {
      positionals.push(token.value);
      continue;
    }
    if (token.kind === "option-terminator") continue;
    const { name, rawName, value } = token;
    const takesValue = (VALUE_OPTIONS as readonly string[]).includes(name);
    if (!takesValue && !(FLAGS as readonly string[]).includes(name)) {
      throw new UsageError(`Unknown option: ${rawName}`);
    }
    if (!takesValue && value !== undefined) {
      throw new UsageError(
        `Invalid value for --${name}: expected no value (it is a flag), received ${
          JSON.stringify(value)
        }`,
      );
    }
    if (
      takesValue &&
      (value === undefined || (!token.inlineValue && value.startsWith("--")))
    ) {
      throw new UsageError(
        `Invalid value for --${name}: expected a value, received ${
          value === undefined ? "nothing" : `the option ${value}`
        }`,
      );
    }
    if (given.has(name)) {
      throw new UsageError(`Option --${name} is given twice; give it once`);
    }
    given.set(name, value ?? true);
  }
  return { given, positionals };
}

/**
 * Parses and validates `args`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseClientCli } from "./client_cli.ts";
 *
 * const run = parseClientCli(["127.0.0.1:8080", "--timeout", "2.5"]);
 * assert.equal(run.kind === "run" && run.options.timeoutMs, 2500);
 * assert.equal(parseClientCli(["127.0.0.1"]).kind, "error");
 * ```
 */
export function parseClientCli(args: string[]): ClientCliRequest {
  try {
    const { given, positionals } = readArgs(
      args[0] === "--" ? args.slice(1) : args,
    );
    if (given.has("help")) return { kind: "help" };
    if (given.has("version")) return { kind: "version" };
    if (positionals.length !== 1) {
      throw new UsageError(
        positionals.length === 0
          ? "Missing the server's address: HOST:PORT"
          : `Unexpected argument: ${positionals[1]}`,
      );
    }
    const tls = given.has("tls");
    for (const option of ["ca", "insecure"]) {
      if (given.has(option) && !tls) {
        throw new UsageError(`Option --${option} needs --tls`);
      }
    }
    if (given.has("ca") && given.has("insecure")) {
      throw new UsageError("Option --ca cannot be combined with --insecure");
    }
    const text = (name: string, fallback: string) => {
      const value = given.get(name);
      return typeof value === "string" ? value : fallback;
    };
    const ca = given.get("ca");
    return {
      kind: "run",
      options: {
        ...address(positionals[0]),
        tls,
        caFile: typeof ca === "string" ? ca : undefined,
        insecure: given.has("insecure"),
        timeoutMs: seconds("timeout", text("timeout", "0"), 0),
        connectTimeoutMs: seconds(
          "connect-timeout",
          text("connect-timeout", "10"),
          1,
        ),
      },
    };
  } catch (error) {
    if (error instanceof UsageError) {
      return { kind: "error", message: `${error.message}; ${HINT}` };
    }
    throw error;
  }
}

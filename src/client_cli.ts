/**
 * Command-line parsing for `client.ts`: every value is checked, and any
 * problem becomes one line that names the option (exit code 2), as for
 * `server.ts`.
 *
 * @module
 */
import {
  type ArgSpecs,
  catchUsageError,
  MAX_TIMEOUT_SECONDS,
  readArgs,
  secondsToMs,
  UsageError,
  type UsageErrorRequest,
} from "./cli_args.ts";
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
  | UsageErrorRequest;

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

function seconds(option: string, text: string, min: number): number {
  const ms = secondsToMs(text);
  if (ms === undefined || ms < min) {
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

/**
 * The options: those that take a value (a missing one is said as such;
 * each value's own check follows), and the flags.
 */
const ARGS: ArgSpecs = {
  values: {
    timeout: { expected: "a value" },
    "connect-timeout": { expected: "a value" },
    ca: { expected: "a value" },
  },
  flags: ["tls", "insecure", "help", "version"],
  positionals: true,
};

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
  return catchUsageError(() => parseRun(args));
}

function parseRun(args: string[]): ClientCliRequest {
  const { given, positionals } = readArgs(args, ARGS);
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
}

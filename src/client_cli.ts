/**
 * Command-line parsing for `client.ts`: every value is checked, and any
 * problem becomes one line that names the option (exit code 2), as for
 * `server.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { attachNegativeValues, describeParseError, VERSION } from "./cli.ts";

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
  let parsed;
  try {
    parsed = parseArgs({
      args: attachNegativeValues(args),
      strict: true,
      allowPositionals: true,
      options: {
        timeout: { type: "string" },
        "connect-timeout": { type: "string" },
        tls: { type: "boolean" },
        ca: { type: "string" },
        insecure: { type: "boolean" },
        help: { type: "boolean" },
        version: { type: "boolean" },
      },
    });
  } catch (error) {
    return {
      kind: "error",
      message: `${describeParseError(error as Error)}; ${HINT}`,
    };
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  try {
    if (positionals.length !== 1) {
      throw new UsageError(
        positionals.length === 0
          ? "Missing the server's address: HOST:PORT"
          : `Unexpected argument: ${positionals[1]}`,
      );
    }
    for (const option of ["ca", "insecure"] as const) {
      if (values[option] !== undefined && !values.tls) {
        throw new UsageError(`Option --${option} needs --tls`);
      }
    }
    if (values.ca !== undefined && values.insecure) {
      throw new UsageError("Option --ca cannot be combined with --insecure");
    }
    return {
      kind: "run",
      options: {
        ...address(positionals[0]),
        tls: values.tls ?? false,
        caFile: values.ca,
        insecure: values.insecure ?? false,
        timeoutMs: seconds("timeout", values.timeout ?? "0", 0),
        connectTimeoutMs: seconds(
          "connect-timeout",
          values["connect-timeout"] ?? "10",
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

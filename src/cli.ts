/**
 * Command-line parsing and validation for `server.ts`: every value is
 * checked, and any problem becomes one line that names the option.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { LogLevel } from "@logtape/logtape";
import {
  firstLine,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
} from "./logging.ts";
import { PROTOCOL_NAMES, type ProtocolName } from "./protocol_names.ts";
import type { WorkerServerOptions } from "./cluster.ts";
import denoConfig from "../deno.json" with { type: "json" };

export { PROTOCOL_NAMES, type ProtocolName };

/** The version printed by `--version`. */
export const VERSION: string = denoConfig.version;

/** Longest timeout accepted, in seconds: timers cannot wait longer than 2^31-1 ms. */
const MAX_TIMEOUT_SECONDS = 2_147_483;

/** Settings of a server run, validated. */
export interface CliOptions {
  /** `--host`: the interface to listen on. */
  host: string;
  /** `--port`: 0 picks a free one. */
  port: number;
  /** `--protocol`: looked up in `builtinProtocols`. */
  protocol: ProtocolName;
  /** `--max-line-bytes`. */
  maxLineBytes: number;
  /** `--max-connections`. */
  maxConnections: number;
  /** Close connections silent this long; 0 = never. */
  idleTimeoutMs: number;
  /** A started request line must end within this long; 0 = no limit. */
  lineTimeoutMs: number;
  /** How long a graceful shutdown waits before closing by force. */
  shutdownTimeoutMs: number;
  /** Most connections at once from one address (IPv6: one /64); 0 = no limit. */
  maxConnectionsPerIp: number;
  /** Every connection begins with a PROXY protocol (v1 or v2) header. */
  proxyProtocol: boolean;
  /** `--log-level`. */
  logLevel: LogLevel;
  /** `--log-format`. */
  logFormat: LogFormat;
  /** Listener processes; 0 means one per CPU. */
  workers: number;
  /** `--tls-cert`: path of the PEM certificate chain; given with `tlsKey`. */
  tlsCert: string | undefined;
  /** `--tls-key`: path of the PEM private key; given with `tlsCert`. */
  tlsKey: string | undefined;
  /** `--admin-port`, if given. */
  adminPort: number | undefined;
}

/** What the command line asks for. */
export type CliRequest =
  | { kind: "run"; options: CliOptions }
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "error"; message: string };

/** `--protocol calc|echo|chat`, padded to the column of the descriptions. */
const PROTOCOL_OPTION = `--protocol ${PROTOCOL_NAMES.join("|")}`.padEnd(25);

/** The `--help` text. */
export const USAGE =
  `lineserver ${VERSION}: a concurrent TCP line-protocol server

Usage: deno task start [options]
       deno run --allow-net [--allow-read] server.ts [options]

Options:
  --host HOST               interface to listen on (default 127.0.0.1)
  --port PORT               TCP port, 0 picks a free one (default 8080)
  ${PROTOCOL_OPTION} line protocol to serve (default ${PROTOCOL_NAMES[0]})
  --max-line-bytes N        longest request line in bytes (default 65536)
  --max-connections N       most clients served at once (default 10000)
  --max-connections-per-ip N
                            most clients at once from one address (IPv6: per
                            /64), 0 = no limit (default 0; with --workers, per
                            worker)
  --idle-timeout SECONDS    close silent clients after this long, 0 = never (default 300)
  --line-timeout SECONDS    a started line must end within this long, 0 = never
                            (default 60)
  --proxy-protocol          each connection begins with a PROXY protocol v1 or v2
                            header, as HAProxy's send-proxy sends (default off)
  --shutdown-timeout SECONDS  grace period on SIGINT/SIGTERM (default 2)
  --log-level LEVEL         debug, info, warning or error (default info)
  --log-format FORMAT       text or json (default text)
  --workers N               listeners sharing the port, 0 = one per CPU (default 1;
                            other values need --allow-read)
  --tls-cert FILE           serve TLS with this PEM certificate (needs --tls-key
                            and --allow-read)
  --tls-key FILE            PEM private key for --tls-cert (needs --allow-read)
  --admin-port PORT         HTTP /healthz and /metrics on --host (default off)
  --help                    print this help and exit
  --version                 print the version and exit

Permissions: --allow-net always. --allow-read only for --tls-cert/--tls-key
(to read the files) and for --workers other than 1 (Deno loads each worker's
module from disk). deno task start and the binary from deno task compile
have both.

Signals: SIGINT or SIGTERM drains gracefully; a second one stops at once (exit 1).
The same signal again within 100 ms is the first one delivered twice (Ctrl-C
under deno task reaches the server twice), not a second one.
`;

const HINT = "run with --help for usage";

class UsageError extends Error {}

function fail(option: string, expected: string, received: string): never {
  throw new UsageError(
    `Invalid value for --${option}: expected ${expected}, received ${
      JSON.stringify(received)
    }`,
  );
}

function integer(
  option: string,
  text: string,
  min: number,
  max: number,
): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) {
    fail(option, `an integer from ${min} to ${max}`, text);
  }
  return value;
}

function seconds(option: string, text: string): number {
  const value = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (!(value >= 0 && value <= MAX_TIMEOUT_SECONDS)) {
    fail(option, `a number of seconds from 0 to ${MAX_TIMEOUT_SECONDS}`, text);
  }
  // A positive value never means "off": 0.0001 s is 1 ms, not 0.
  return value > 0 ? Math.max(1, Math.round(value * 1000)) : 0;
}

function choice<T extends string>(
  option: string,
  text: string,
  choices: readonly T[],
): T {
  if (!(choices as readonly string[]).includes(text)) {
    fail(option, `one of ${choices.join(", ")}`, text);
  }
  return text as T;
}

const STRING = { type: "string" } as const;

/**
 * parseArgs refuses `--port -1` as ambiguous (the value looks like an
 * option); joining it into `--port=-1` lets validation name the real
 * problem: the number is out of range.
 */
export function attachNegativeValues(args: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1];
    if (
      /^--[a-z-]+$/.test(args[i]) && next !== undefined && /^-[\d.]/.test(next)
    ) {
      joined.push(`${args[i]}=${next}`);
      i++;
    } else {
      joined.push(args[i]);
    }
  }
  return joined;
}

/** Turns node's parseArgs errors into one line that names the option. */
export function describeParseError(error: Error & { code?: string }): string {
  const option = error.message.match(/'(-[^' ]*)/)?.[1];
  switch (error.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `Unknown option: ${option ?? error.message}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return `Invalid use of option ${option ?? ""}: ${
        error.message.split(/\.\s|\n/)[0]
      }`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `Unexpected argument: ${
        error.message.match(/'([^']*)'/)?.[1] ?? error.message
      }`;
    default:
      return firstLine(error);
  }
}

/**
 * Parses and validates `args`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCli } from "./cli.ts";
 * const run = parseCli(["--port", "0"]);
 * assert.equal(run.kind === "run" && run.options.port, 0);
 * assert.equal(parseCli(["--port", "abc"]).kind, "error");
 * ```
 */
export function parseCli(args: string[]): CliRequest {
  let values;
  try {
    ({ values } = parseArgs({
      args: attachNegativeValues(args),
      strict: true,
      allowPositionals: false,
      options: {
        host: STRING,
        port: STRING,
        protocol: STRING,
        "max-line-bytes": STRING,
        "max-connections": STRING,
        "max-connections-per-ip": STRING,
        "idle-timeout": STRING,
        "line-timeout": STRING,
        "proxy-protocol": { type: "boolean" },
        "shutdown-timeout": STRING,
        "log-level": STRING,
        "log-format": STRING,
        workers: STRING,
        "tls-cert": STRING,
        "tls-key": STRING,
        "admin-port": STRING,
        help: { type: "boolean" },
        version: { type: "boolean" },
      },
    }));
  } catch (error) {
    return {
      kind: "error",
      message: `${describeParseError(error as Error)}; ${HINT}`,
    };
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  try {
    const host = values.host ?? "127.0.0.1";
    if (host === "") fail("host", "a host name or address", host);
    if (
      (values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)
    ) {
      throw new UsageError(
        `Option --${
          values["tls-cert"] === undefined ? "tls-cert" : "tls-key"
        } is required with --${
          values["tls-cert"] === undefined ? "tls-key" : "tls-cert"
        }`,
      );
    }
    const options: CliOptions = {
      host,
      port: integer("port", values.port ?? "8080", 0, 65535),
      protocol: choice(
        "protocol",
        values.protocol ?? PROTOCOL_NAMES[0],
        PROTOCOL_NAMES,
      ),
      maxLineBytes: integer(
        "max-line-bytes",
        values["max-line-bytes"] ?? "65536",
        1,
        1 << 30,
      ),
      maxConnections: integer(
        "max-connections",
        values["max-connections"] ?? "10000",
        1,
        1_000_000,
      ),
      idleTimeoutMs: seconds("idle-timeout", values["idle-timeout"] ?? "300"),
      lineTimeoutMs: seconds("line-timeout", values["line-timeout"] ?? "60"),
      shutdownTimeoutMs: seconds(
        "shutdown-timeout",
        values["shutdown-timeout"] ?? "2",
      ),
      maxConnectionsPerIp: integer(
        "max-connections-per-ip",
        values["max-connections-per-ip"] ?? "0",
        0,
        1_000_000,
      ),
      proxyProtocol: values["proxy-protocol"] ?? false,
      logLevel: choice("log-level", values["log-level"] ?? "info", LOG_LEVELS),
      logFormat: choice(
        "log-format",
        values["log-format"] ?? "text",
        LOG_FORMATS,
      ),
      workers: integer("workers", values.workers ?? "1", 0, 256),
      tlsCert: values["tls-cert"],
      tlsKey: values["tls-key"],
      adminPort: values["admin-port"] === undefined
        ? undefined
        : integer("admin-port", values["admin-port"], 0, 65535),
    };
    return { kind: "run", options };
  } catch (error) {
    if (error instanceof UsageError) {
      return { kind: "error", message: `${error.message}; ${HINT}` };
    }
    throw error;
  }
}

/**
 * The `startServer` options of a run, but the protocol and TLS.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCli, serverOptionsOf } from "./cli.ts";
 *
 * const request = parseCli(["--line-timeout", "5", "--proxy-protocol"]);
 * assert.equal(request.kind, "run");
 * if (request.kind === "run") {
 *   const options = serverOptionsOf(request.options);
 *   assert.equal(options.lineTimeoutMs, 5000);
 *   assert.equal(options.proxyProtocol, true);
 * }
 * ```
 */
export function serverOptionsOf(options: CliOptions): WorkerServerOptions {
  return {
    hostname: options.host,
    port: options.port,
    maxLineBytes: options.maxLineBytes,
    maxConnections: options.maxConnections,
    idleTimeoutMs: options.idleTimeoutMs,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    lineTimeoutMs: options.lineTimeoutMs,
    maxConnectionsPerIp: options.maxConnectionsPerIp,
    proxyProtocol: options.proxyProtocol,
  };
}

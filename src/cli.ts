/**
 * Command-line parsing and validation for `server.ts`: every value is
 * checked, and any problem becomes one line that names the option.
 *
 * @module
 */
import { isIP } from "node:net";
import type { LogLevel } from "@logtape/logtape";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat } from "./logging.ts";
import { PROTOCOL_NAMES, type ProtocolName } from "./protocol_names.ts";
import type { WorkerServerOptions } from "./cluster.ts";
import type { SharedChatSettings } from "./served_protocol.ts";
import { AddressRanges } from "./address_ranges.ts";
import denoConfig from "../deno.json" with { type: "json" };
import {
  catchUsageError,
  invalidValue,
  MAX_TIMEOUT_SECONDS,
  readArgs,
  secondsToMs,
  UsageError,
  type UsageErrorRequest,
} from "./cli_args.ts";

export { PROTOCOL_NAMES, type ProtocolName };

/** The version printed by `--version`. */
export const VERSION: string = denoConfig.version;

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
  /** How long a graceful shutdown waits before closing by force; never 0. */
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
  /** `--proxy-protocol-from`: the balancers whose PROXY headers are believed. */
  proxyProtocolFrom: string | undefined;
  /** `--chat-redis` and `--chat-room`: a chat room shared through Redis. */
  chat: SharedChatSettings | undefined;
}

/** What the command line asks for. */
export type CliRequest =
  | { kind: "run"; options: CliOptions }
  | { kind: "help" }
  | { kind: "version" }
  | UsageErrorRequest;

/** `--protocol calc|echo|chat`, padded to the column of the descriptions. */
const PROTOCOL_OPTION = `--protocol ${PROTOCOL_NAMES.join("|")}`.padEnd(25);

/** The `--help` text: every description starts in the same column. */
export const USAGE =
  `lineserver ${VERSION}: a concurrent TCP line-protocol server

Usage: deno task start [options]
       deno run --allow-net [--allow-read] server.ts [options]

Options:
  --host HOST               interface to listen on, an IP address or a host
                            name (default 127.0.0.1)
  --port PORT               TCP port, 0 picks a free one (default 8080)
  ${PROTOCOL_OPTION} line protocol to serve (default ${PROTOCOL_NAMES[0]})
  --max-line-bytes N        longest request line in bytes (default 65536)
  --max-connections N       most clients served at once (default 10000)
  --max-connections-per-ip N
                            most clients at once from one address (IPv6: per
                            /64), 0 = no limit (default 0; with --workers, per
                            worker)
  --idle-timeout SECONDS    close silent clients after this long, 0 = never
                            (default 300)
  --line-timeout SECONDS    a started line must end within this long, 0 = never
                            (default 60)
  --shutdown-timeout SECONDS
                            grace period on SIGINT/SIGTERM, then what is still
                            open is closed by force; above 0, as a drain always
                            ends (0.001 closes at once) (default 2)
  --proxy-protocol          each connection begins with a PROXY protocol
                            header, v1 or v2, as HAProxy's send-proxy sends
                            (default off)
  --proxy-protocol-from LIST
                            with --proxy-protocol: the balancers allowed to
                            connect, as addresses or CIDR ranges separated by
                            commas (10.0.0.0/8,::1); others are refused at once
                            (default: any peer)
  --log-level LEVEL         debug, info, warning or error (default info)
  --log-format FORMAT       text or json (default text)
  --workers N               listeners sharing the port, 0 = one per CPU
                            (default 1; other values need --allow-read)
  --tls-cert FILE           serve TLS with this PEM certificate (needs
                            --tls-key and --allow-read)
  --tls-key FILE            PEM private key for --tls-cert (needs --allow-read)
  --admin-port PORT         HTTP /healthz and /metrics on --host (default off)
  --chat-redis URL          with --protocol chat: share the room with every
                            server on this Redis, redis://HOST:PORT (default
                            off: the room is this process's; allows --workers)
  --chat-room NAME          the shared room's name, 1-64 letters, digits, _ . -
                            (default lobby)
  --help                    print this help and exit
  --version                 print the version and exit

Each option is given at most once. Timeouts take fractions of a second (0.5).

Permissions: --allow-net always. --allow-read only for --tls-cert/--tls-key
(to read the files) and for --workers other than 1 (Deno loads each worker's
module from disk). deno task start and the binary from deno task compile
have both.

Signals: SIGINT or SIGTERM drains gracefully; a second one stops at once
(exit 1). The same signal again within 100 ms is the first one delivered
twice (Ctrl-C under deno task reaches the server twice), not a second one.
`;

/** What an option's value may be, said in every error about it, and its parser. */
interface ValueSpec<T> {
  readonly expected: string;
  /** The value `text` stands for, or undefined if it is not one. */
  parse(text: string): T | undefined;
}

function integerSpec(min: number, max: number): ValueSpec<number> {
  return {
    expected: `an integer from ${min} to ${max}`,
    parse(text) {
      const value = /^\d+$/.test(text) ? Number(text) : NaN;
      return value >= min && value <= max ? value : undefined;
    },
  };
}

/**
 * Seconds, fractions allowed, as milliseconds. A positive value never means
 * "off": 0.0001 s is 1 ms, not 0. `zero` says whether 0 is allowed.
 */
function secondsSpec(zero: "never" | "refused"): ValueSpec<number> {
  const range = zero === "never"
    ? `a number of seconds from 0 (never) to ${MAX_TIMEOUT_SECONDS}`
    : `a number of seconds above 0, up to ${MAX_TIMEOUT_SECONDS} (a drain always ends; a small value such as 0.001 closes at once)`;
  return {
    expected: range,
    parse(text) {
      const ms = secondsToMs(text);
      return ms === 0 && zero === "refused" ? undefined : ms;
    },
  };
}

function choiceSpec<T extends string>(choices: readonly T[]): ValueSpec<T> {
  return {
    expected: `one of ${choices.join(", ")}`,
    parse: (text) =>
      (choices as readonly string[]).includes(text) ? text as T : undefined,
  };
}

/**
 * An IP address, or a name made of DNS labels. Digits and dots only, or a
 * colon, is meant as an address: `999.1.1.1` is refused here, not by the
 * resolver after the options were accepted.
 */
const HOST_SPEC: ValueSpec<string> = {
  expected: "an IP address or a host name",
  parse(text) {
    if (isIP(text) !== 0) return text;
    if (/^[\d.]*$/.test(text) || text.includes(":")) return undefined;
    const name = text.endsWith(".") ? text.slice(0, -1) : text;
    const labels = name.split(".");
    const valid = name.length <= 253 &&
      labels.every((label) =>
        /^[a-z\d_]([a-z\d_-]{0,61}[a-z\d_])?$/i.test(label)
      );
    return valid ? text : undefined;
  },
};

/**
 * A Redis URL: `redis://HOST:PORT`, with optional credentials
 * (`redis://:PASSWORD@HOST:PORT`) and database (`/N`); the port defaults
 * to 6379.
 */
const REDIS_URL_SPEC: ValueSpec<string> = {
  expected: "redis://HOST:PORT",
  parse(text) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      return undefined;
    }
    const plain = url.protocol === "redis:" && url.hostname !== "" &&
      url.search === "" && url.hash === "" && /^(?:\/\d*)?$/.test(url.pathname);
    return plain ? text : undefined;
  },
};

/** A chat room's name: it becomes part of Redis keys, so it is kept plain. */
const ROOM_SPEC: ValueSpec<string> = {
  expected: "1 to 64 letters, digits, _, . or -",
  parse: (text) => /^[A-Za-z0-9_.-]{1,64}$/.test(text) ? text : undefined,
};

/** Address ranges in CIDR notation, comma-separated. */
const RANGES_SPEC: ValueSpec<string> = {
  expected: "addresses or CIDR ranges separated by commas (10.0.0.0/8,::1)",
  parse(text) {
    try {
      AddressRanges.parse(text);
      return text;
    } catch {
      return undefined;
    }
  },
};

const PATH_SPEC: ValueSpec<string> = {
  expected: "a file path",
  parse: (text) => text === "" ? undefined : text,
};

/** Every option that takes a value. */
const VALUE_OPTIONS = {
  host: HOST_SPEC,
  port: integerSpec(0, 65535),
  protocol: choiceSpec(PROTOCOL_NAMES),
  "max-line-bytes": integerSpec(1, 1 << 30),
  "max-connections": integerSpec(1, 1_000_000),
  "max-connections-per-ip": integerSpec(0, 1_000_000),
  "idle-timeout": secondsSpec("never"),
  "line-timeout": secondsSpec("never"),
  "shutdown-timeout": secondsSpec("refused"),
  "log-level": choiceSpec(LOG_LEVELS),
  "log-format": choiceSpec(LOG_FORMATS),
  workers: integerSpec(0, 256),
  "tls-cert": PATH_SPEC,
  "tls-key": PATH_SPEC,
  "admin-port": integerSpec(0, 65535),
  "proxy-protocol-from": RANGES_SPEC,
  "chat-redis": REDIS_URL_SPEC,
  "chat-room": ROOM_SPEC,
} as const;

type ValueOption = keyof typeof VALUE_OPTIONS;

/** Every option that is a flag, without a value. */
const FLAGS = ["proxy-protocol", "help", "version"] as const;

/**
 * Parses and validates `args`. A leading `--` is skipped: `deno task start --
 * --version` passes it on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCli } from "./cli.ts";
 * const run = parseCli(["--port", "0"]);
 * assert.equal(run.kind === "run" && run.options.port, 0);
 * assert.equal(parseCli(["--port", "abc"]).kind, "error");
 * assert.equal(parseCli(["--", "--version"]).kind, "version");
 * ```
 */
export function parseCli(args: string[]): CliRequest {
  return catchUsageError(() => parseRun(args));
}

function parseRun(args: string[]): CliRequest {
  const { given } = readArgs(args, {
    values: VALUE_OPTIONS,
    flags: FLAGS,
    positionals: false,
  });
  if (given.has("help")) return { kind: "help" };
  if (given.has("version")) return { kind: "version" };
  const value = <K extends ValueOption>(
    name: K,
    fallback: string,
  ): NonNullable<ReturnType<(typeof VALUE_OPTIONS)[K]["parse"]>> => {
    const text = given.get(name);
    const spec: ValueSpec<unknown> = VALUE_OPTIONS[name];
    const parsed = spec.parse(typeof text === "string" ? text : fallback);
    if (parsed === undefined) {
      invalidValue(
        name,
        spec.expected,
        typeof text === "string" ? text : fallback,
      );
    }
    return parsed as NonNullable<
      ReturnType<(typeof VALUE_OPTIONS)[K]["parse"]>
    >;
  };
  const optional = <
    K extends
      | "tls-cert"
      | "tls-key"
      | "admin-port"
      | "proxy-protocol-from"
      | "chat-redis"
      | "chat-room",
  >(
    name: K,
  ) => given.has(name) ? value(name, "") : undefined;
  const tlsCert = optional("tls-cert");
  const tlsKey = optional("tls-key");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    const [missing, present] = tlsCert === undefined
      ? ["tls-cert", "tls-key"]
      : ["tls-key", "tls-cert"];
    throw new UsageError(
      `Option --${missing} is required with --${present}`,
    );
  }
  const proxyProtocolFrom = optional("proxy-protocol-from");
  if (proxyProtocolFrom !== undefined && !given.has("proxy-protocol")) {
    throw new UsageError(
      "Option --proxy-protocol-from needs --proxy-protocol",
    );
  }
  const chatRedis = optional("chat-redis");
  const protocol = value("protocol", PROTOCOL_NAMES[0]);
  if (chatRedis !== undefined && protocol !== "chat") {
    throw new UsageError("Option --chat-redis needs --protocol chat");
  }
  if (given.has("chat-room") && chatRedis === undefined) {
    throw new UsageError("Option --chat-room needs --chat-redis");
  }
  const options: CliOptions = {
    host: value("host", "127.0.0.1"),
    port: value("port", "8080"),
    protocol,
    maxLineBytes: value("max-line-bytes", "65536"),
    maxConnections: value("max-connections", "10000"),
    idleTimeoutMs: value("idle-timeout", "300"),
    lineTimeoutMs: value("line-timeout", "60"),
    shutdownTimeoutMs: value("shutdown-timeout", "2"),
    maxConnectionsPerIp: value("max-connections-per-ip", "0"),
    proxyProtocol: given.has("proxy-protocol"),
    logLevel: value("log-level", "info"),
    logFormat: value("log-format", "text"),
    workers: value("workers", "1"),
    tlsCert,
    tlsKey,
    adminPort: optional("admin-port"),
    proxyProtocolFrom,
    chat: chatRedis === undefined
      ? undefined
      : { url: chatRedis, room: optional("chat-room") ?? "lobby" },
  };
  return { kind: "run", options };
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
    proxyProtocolFrom: options.proxyProtocolFrom,
  };
}

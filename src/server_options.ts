/**
 * The options of a server: what `startServer` accepts, and every value
 * resolved and checked before anything is bound (a bad value throws there,
 * never after the port is taken).
 *
 * @module
 */
import { getLogger, type Logger } from "@logtape/logtape";
import type { LineProtocol } from "./session.ts";
import { calculatorProtocol } from "./calculator.ts";
import { createTlsContext, type TlsContext } from "./tls.ts";
import { checkMaxFrameBytes, FrameEncoder } from "./framing.ts";
import { ServerMetrics } from "./metrics.ts";
import { AddressRanges } from "./address_ranges.ts";
import { checkDuration } from "./deadline.ts";

/** Options of {@linkcode startServer}; every field has the CLI's default. */
export interface ServerOptions {
  /** Interface to bind. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to bind; 0 picks a free one (see {@linkcode LineServer.addr}). Default 8080. */
  port?: number;
  /** The protocol spoken on every connection. Default: the calculator. */
  protocol?: LineProtocol;
  /** Longest request line in raw bytes, terminator excluded. Default 65536. */
  maxLineBytes?: number;
  /** Most connections served at once; more are refused. Default 10000. */
  maxConnections?: number;
  /** Most connections from one address (IPv6: one /64); 0 means no limit. Default 0. */
  maxConnectionsPerIp?: number;
  /** Close connections that sent nothing for this long; 0 disables. Default 300000. */
  idleTimeoutMs?: number;
  /** Close connections whose started line is not finished within this long; 0 disables. Default 60000. */
  lineTimeoutMs?: number;
  /**
   * How long {@linkcode LineServer.shutdown} waits before closing by force.
   * At least 1: a drain always ends, so there is no 0 for "never" as for the
   * other timeouts (1 closes at once). Default 2000.
   */
  shutdownTimeoutMs?: number;
  /** Every connection begins with a PROXY protocol header (v1 or v2). Default false. */
  proxyProtocol?: boolean;
  /**
   * With `proxyProtocol`: the balancers whose headers are believed, as CIDR
   * ranges (`["10.0.0.0/8"]` or `"10.0.0.0/8,192.0.2.7"`). A connection from
   * any other address is refused at once. Default: every peer is a balancer.
   */
  proxyProtocolFrom?: string | readonly string[];
  /**
   * How long a session's reply promise may take before the connection is
   * closed (outcome `reply_timeout`) and the reply's signal aborted; 0
   * disables. Default 30000.
   */
  replyTimeoutMs?: number;
  /** Serve TLS with this PEM certificate chain and key. */
  tls?: { cert: string; key: string };
  /** Share the port with other listeners (Linux `SO_REUSEPORT`). Default false. */
  reusePort?: boolean;
  /**
   * Give memory back to the system when the server goes quiet after a load
   * (a garbage collection, then the allocator trimmed; see
   * docs/performance.md). Default true.
   */
  reclaimMemory?: boolean;
  /**
   * A LogTape `Logger` for connection events. Default: the LogTape category
   * `lineserver`. Nothing is logged until the program configures LogTape.
   *
   * (Left out of the generated API docs: the doc linter of Deno 2.9 counts
   * a type from another package as private.)
   *
   * @ignore
   */
  logger?: Logger;
  /** Counters to update. Default: a fresh {@linkcode ServerMetrics}. */
  metrics?: ServerMetrics;
}

/** Every option resolved to its value, validated. */
export type Settings =
  & Required<
    Omit<
      ServerOptions,
      "tls" | "logger" | "metrics" | "protocol" | "proxyProtocolFrom"
    >
  >
  & {
    protocol: LineProtocol;
    proxyProtocolFrom: AddressRanges | undefined;
    tls: TlsContext | undefined;
    logger: Logger;
    metrics: ServerMetrics;
  };

/** Checks every option and fills in the defaults; throws before anything is bound. */
export function settle(options: ServerOptions): Settings {
  const count = (name: string, value: number, min: number) => {
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(
        `Cannot use ${name}: expected an integer of at least ${min}, received ${value}`,
      );
    }
    return value;
  };
  const settings: Settings = {
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 8080,
    protocol: options.protocol ?? calculatorProtocol,
    maxLineBytes: count("maxLineBytes", options.maxLineBytes ?? 65536, 1),
    maxConnections: count(
      "maxConnections",
      options.maxConnections ?? 10000,
      1,
    ),
    maxConnectionsPerIp: count(
      "maxConnectionsPerIp",
      options.maxConnectionsPerIp ?? 0,
      0,
    ),
    idleTimeoutMs: checkDuration(
      "idleTimeoutMs",
      options.idleTimeoutMs ?? 300_000,
    ),
    lineTimeoutMs: checkDuration(
      "lineTimeoutMs",
      options.lineTimeoutMs ?? 60_000,
    ),
    shutdownTimeoutMs: checkDuration(
      "shutdownTimeoutMs",
      options.shutdownTimeoutMs ?? 2000,
      1,
      " (a drain always ends; 1 closes at once)",
    ),
    proxyProtocol: options.proxyProtocol ?? false,
    proxyProtocolFrom: options.proxyProtocolFrom === undefined
      ? undefined
      : AddressRanges.parse(options.proxyProtocolFrom),
    replyTimeoutMs: checkDuration(
      "replyTimeoutMs",
      options.replyTimeoutMs ?? 30_000,
    ),
    tls: options.tls === undefined
      ? undefined
      : createTlsContext(options.tls.cert, options.tls.key),
    reusePort: options.reusePort ?? false,
    reclaimMemory: options.reclaimMemory ?? true,
    logger: options.logger ?? getLogger(["lineserver"]),
    metrics: options.metrics ?? new ServerMetrics(),
  };
  count("port", settings.port, 0);
  if (settings.port > 65535) {
    throw new RangeError(
      `Cannot use port: expected 0 to 65535, received ${settings.port}`,
    );
  }
  if (settings.tls !== undefined && settings.reusePort) {
    throw new TypeError("Cannot combine TLS with reusePort");
  }
  checkMaxFrameBytes(settings.maxLineBytes);
  // A protocol's framing is checked here too, not at the first client.
  new FrameEncoder(settings.protocol.framing);
  if (settings.protocol.framing?.maxFrameBytes !== undefined) {
    checkMaxFrameBytes(settings.protocol.framing.maxFrameBytes);
  }
  return settings;
}

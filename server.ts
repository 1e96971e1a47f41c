/**
 * The lineserver command: `deno task start [options]`, or
 * `deno run --allow-net server.ts [options]` (add `--allow-read` for
 * `--tls-cert`/`--tls-key` and `--workers`).
 *
 * Parses the command line, sets up logging, starts the server (or a pool of
 * workers sharing the port), the optional admin endpoint, wires the shutdown
 * signals and reports how it ended. Exit codes: 0 after a graceful shutdown;
 * 1 when it could not start (a port in use, `--port` or `--admin-port`, an
 * address that is not this machine's, or the Redis of `--chat-redis` out of
 * reach) or was stopped by a second signal; 2 for bad options, a protocol not
 * built in, unusable TLS files, or a missing permission (`--allow-net`, and
 * `--allow-read` for `--workers`).
 *
 * @module
 */
import {
  type CliOptions,
  parseCli,
  serverOptionsOf,
  USAGE,
  VERSION,
} from "./src/cli.ts";
import {
  announceLogger,
  configureLogging,
  firstLine,
  flushLogs,
  plural,
  serverLogger,
  writeStderrLine,
} from "./src/logging.ts";
import { formatAddr } from "./src/transport.ts";
import {
  builtinProtocols,
  type LineServer,
  type ShutdownSummary,
  startServer,
} from "./mod.ts";
import {
  ChatRoomUnreachableError,
  openProtocol,
  type ServedProtocol,
} from "./src/served_protocol.ts";
import { redisWhere } from "./src/redis_url.ts";
import {
  WorkerPool,
  type WorkerServerOptions,
  WorkerStartError,
} from "./src/cluster.ts";
import { type AdminServer, startAdminServer } from "./src/admin.ts";
import { onShutdownSignals } from "./signals.ts";
import { validateTlsPair } from "./src/tls.ts";

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;
/**
 * How long the last log lines may take to reach stderr before the process
 * exits anyway: long enough for any reader that reads, short enough that a
 * wedged one does not hold the exit.
 */
const EXIT_FLUSH_MS = 1000;

/** What server.ts runs: one LineServer, or a WorkerPool of them. */
interface Service {
  readonly addr: Deno.NetAddr;
  readonly draining: boolean;
  readonly finished: Promise<ShutdownSummary>;
  shutdown(): Promise<ShutdownSummary>;
  abort(): Promise<ShutdownSummary>;
  metricsText(): string | Promise<string>;
}

class StartError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

/** Reads the TLS files; a problem is a usage error, reported before anything listens. */
function readTlsFiles(
  options: CliOptions,
): { cert: string; key: string } | undefined {
  if (options.tlsCert === undefined || options.tlsKey === undefined) {
    return undefined;
  }
  const read = (option: string, path: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch (error) {
      throw new StartError(
        `Cannot read --${option} ${path}: ${firstLine(error)}`,
        EXIT_USAGE,
      );
    }
  };
  const tls = {
    cert: read("tls-cert", options.tlsCert),
    key: read("tls-key", options.tlsKey),
  };
  try {
    validateTlsPair(tls.cert, tls.key);
  } catch (error) {
    throw new StartError(
      `Cannot use --tls-cert/--tls-key: ${firstLine(error)}`,
      EXIT_USAGE,
    );
  }
  return tls;
}

/**
 * Without `--allow-net` for an address, Deno's `node:net` throws from inside
 * `listen` where no caller can catch it, and the user sees a stack trace.
 * Asking first makes it one line that says which flag to add.
 */
function missingNetPermission(options: CliOptions): StartError | undefined {
  const ports: [number, string][] = [[options.port, ""]];
  if (options.adminPort !== undefined) {
    ports.push([options.adminPort, " (--admin-port)"]);
  }
  for (const [port, which] of ports) {
    const where = formatAddr({ hostname: options.host, port });
    const { state } = Deno.permissions.querySync({ name: "net", host: where });
    if (state !== "granted") {
      return new StartError(
        `Cannot listen on ${where}${which}: Deno has no --allow-net for it; add --allow-net (or --allow-net=${where}) to deno run, as deno task start does`,
        EXIT_USAGE,
      );
    }
  }
  return undefined;
}

function listenError(
  options: CliOptions,
  error: unknown,
  addrInUse: boolean,
): StartError {
  const where = formatAddr({ hostname: options.host, port: options.port });
  if (addrInUse) {
    return new StartError(
      `Cannot listen on ${where}: address already in use`,
      EXIT_FAILURE,
    );
  }
  return new StartError(
    `Cannot listen on ${where}: ${firstLine(error)}`,
    EXIT_FAILURE,
  );
}

async function startService(
  options: CliOptions,
  workers: number,
): Promise<Service> {
  const makeProtocol = builtinProtocols[options.protocol];
  if (makeProtocol === undefined) {
    throw new StartError(
      `Invalid value for --protocol: ${options.protocol} is not built into this version; run with --help for usage`,
      EXIT_USAGE,
    );
  }
  const tls = readTlsFiles(options);
  const serverOptions: WorkerServerOptions = {
    ...serverOptionsOf(options),
    tls,
  };
  const chat = options.chat;
  if (workers === 1) {
    let served: ServedProtocol;
    try {
      served = await openProtocol(makeProtocol, chat);
    } catch (error) {
      if (!(error instanceof ChatRoomUnreachableError)) throw error;
      throw new StartError(error.message, EXIT_FAILURE);
    }
    let server: LineServer;
    try {
      server = await startServer({
        ...serverOptions,
        protocol: served.protocol,
      });
    } catch (error) {
      await served.close();
      throw listenError(
        options,
        error,
        error instanceof Deno.errors.AddrInUse,
      );
    }
    return {
      addr: server.addr,
      get draining() {
        return server.draining;
      },
      // The shared room is left once every member has been said goodbye to.
      finished: server.finished.finally(() => served.close()),
      shutdown: () => server.shutdown(),
      abort: () => server.abort(),
      metricsText: () => server.metrics.render(),
    };
  }
  if (tls !== undefined) {
    throw new StartError(
      "Option --workers cannot be combined with --tls-cert (TLS is served by one worker); run with --help for usage",
      EXIT_USAGE,
    );
  }
  if (options.protocol === "chat" && chat === undefined) {
    // Each worker would hold a room of its own: members would not hear
    // each other, and guest numbers would repeat.
    throw new StartError(
      "Option --workers cannot be combined with --protocol chat without --chat-redis (a chat room lives in one worker); run with --help for usage",
      EXIT_USAGE,
    );
  }
  const here = new URL(".", import.meta.url);
  if (
    here.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: here }).state !== "granted"
  ) {
    throw new StartError(
      `Option --workers ${options.workers} needs --allow-read=${here.pathname} (Deno loads worker modules from disk); run with --help for usage`,
      EXIT_USAGE,
    );
  }
  try {
    const pool = await WorkerPool.start({
      count: workers,
      protocol: options.protocol,
      server: serverOptions,
      chat,
      logLevel: options.logLevel,
      logFormat: options.logFormat,
    });
    return {
      addr: pool.addr,
      get draining() {
        return pool.draining;
      },
      finished: pool.finished,
      shutdown: () => pool.shutdown(),
      abort: () => pool.abort(),
      metricsText: async () => (await pool.metrics()).render(),
    };
  } catch (error) {
    if (error instanceof WorkerStartError && error.chatUnreachable) {
      throw new StartError(error.message, EXIT_FAILURE);
    }
    const addrInUse = error instanceof WorkerStartError && error.addrInUse;
    throw listenError(options, error, addrInUse);
  }
}

/** Why the admin port could not be bound, in one line. */
function adminListenError(
  options: CliOptions,
  serviceAddr: Deno.NetAddr,
  error: unknown,
): string {
  const where = formatAddr({
    hostname: options.host,
    port: options.adminPort ?? 0,
  });
  if (!(error instanceof Deno.errors.AddrInUse)) {
    return `Cannot listen on ${where} (--admin-port): ${firstLine(error)}`;
  }
  const same = options.adminPort === serviceAddr.port ? ", by --port" : "";
  return `Cannot listen on ${where} (--admin-port): address already in use${same}`;
}

/**
 * The start line: address, protocol and limits. Printed whatever the log
 * level; the address is followed by a space, so `listening on (\S+):(\d+)`
 * finds the right port even in a JSON line.
 */
function announceListening(
  options: CliOptions,
  addr: Deno.NetAddr,
  workers: number,
) {
  const address = formatAddr(addr);
  const limits = {
    protocol: options.protocol,
    workers,
    maxLineBytes: options.maxLineBytes,
    maxConnections: options.maxConnections,
    maxConnectionsPerIp: options.maxConnectionsPerIp,
    idleTimeoutSeconds: options.idleTimeoutMs / 1000,
    lineTimeoutSeconds: options.lineTimeoutMs / 1000,
    shutdownTimeoutSeconds: options.shutdownTimeoutMs / 1000,
    proxyProtocol: options.proxyProtocol,
    tls: options.tlsCert !== undefined,
    ...(options.chat === undefined ? {} : {
      chatRoom: options.chat.room,
      chatRedis: redisWhere(options.chat.url),
    }),
  };
  const parts = [
    `protocol ${limits.protocol}`,
    plural(workers, "worker"),
    `max line ${limits.maxLineBytes} bytes`,
    `max connections ${limits.maxConnections}`,
    ...(limits.maxConnectionsPerIp > 0
      ? [`max ${limits.maxConnectionsPerIp} per address`]
      : []),
    `idle timeout ${limits.idleTimeoutSeconds} s`,
    `line timeout ${limits.lineTimeoutSeconds} s`,
    `shutdown timeout ${limits.shutdownTimeoutSeconds} s`,
    ...(limits.proxyProtocol ? ["PROXY protocol"] : []),
    ...(limits.tls ? ["TLS"] : []),
    ...(limits.chatRedis === undefined
      ? []
      : [`chat room ${limits.chatRoom} on ${limits.chatRedis}`]),
  ];
  announceLogger.info(`listening on ${address} (${parts.join(", ")})`, {
    address,
    ...limits,
  });
}

/**
 * The shutdown summary. `closedGracefully` and `closedByForce` count only
 * the connections still open when the shutdown began, so the line says so:
 * after 59 finished sessions it reads `59 connections served; 0 open at
 * shutdown: ...`, not `0 closed gracefully` as if 59 had not been.
 */
function logSummary(summary: ShutdownSummary) {
  const openAtShutdown = summary.closedGracefully + summary.closedByForce;
  serverLogger.info(
    `shutdown complete: ${plural(summary.served, "connection")} served; ` +
      `${openAtShutdown} open at shutdown: ${summary.closedGracefully} finished gracefully, ` +
      `${summary.closedByForce} closed by force`,
    { ...summary, openAtShutdown },
  );
}

/** One line on stderr; a JSON object when the logs are JSON, so every line parses. */
function reportStartError(message: string, options: CliOptions) {
  if (options.logFormat === "json") serverLogger.error(message);
  else writeStderrLine(`lineserver: ${message}`);
}

/**
 * Runs the command with `args` and returns its exit code, for
 * `Deno.exit(await main(Deno.args))`. Once the server has started, SIGINT
 * and SIGTERM belong to it for the rest of the process: after the drain they
 * do nothing, so that a late copy of the stop signal cannot turn exit 0 into
 * a death by signal before the exit.
 */
export async function main(args: string[]): Promise<number> {
  const request = parseCli(args);
  switch (request.kind) {
    case "help":
      console.log(USAGE);
      return 0;
    case "version":
      console.log(`lineserver ${VERSION}`);
      return 0;
    case "error":
      writeStderrLine(`lineserver: ${request.message}`);
      return EXIT_USAGE;
  }
  const options = request.options;
  configureLogging({ level: options.logLevel, format: options.logFormat });
  const workers = options.workers === 0
    ? navigator.hardwareConcurrency
    : options.workers;
  const noNet = missingNetPermission(options);
  if (noNet !== undefined) {
    reportStartError(noNet.message, options);
    return noNet.exitCode;
  }
  let service: Service;
  try {
    service = await startService(options, workers);
  } catch (error) {
    if (!(error instanceof StartError)) throw error;
    reportStartError(error.message, options);
    return error.exitCode;
  }
  // Both ports are bound before either is announced: a busy --admin-port is
  // one line and exit 1, like a busy --port, never after `listening on`.
  let admin: AdminServer | undefined;
  if (options.adminPort !== undefined) {
    try {
      admin = await startAdminServer({
        hostname: options.host,
        port: options.adminPort,
        isDraining: () => service.draining,
        renderMetrics: () => service.metricsText(),
      });
    } catch (error) {
      await service.abort();
      reportStartError(adminListenError(options, service.addr, error), options);
      return EXIT_FAILURE;
    }
  }
  // The shutdown signals are ours before the server says it is listening:
  // whoever starts it may signal it as soon as it reads that line, and a
  // signal with no listener yet would kill the process instead of draining.
  // They stay ours after the drain, until the process exits (see drained()).
  let exitCode = 0;
  const signals = onShutdownSignals({
    graceful(signal) {
      serverLogger.info(
        "{signal} received: draining (timeout {timeoutSeconds} s)",
        {
          signal,
          timeoutSeconds: options.shutdownTimeoutMs / 1000,
        },
      );
      service.shutdown();
    },
    repeated(signal, gapMs) {
      serverLogger.info(
        "{signal} received again {gapMs} ms later: the same request delivered twice (a parent process such as deno task passes signals on), still draining",
        { signal, gapMs: Math.round(gapMs * 1000) / 1000 },
      );
    },
    immediate(signal) {
      serverLogger.warn("{signal} received again: closing everything now", {
        signal,
      });
      exitCode = EXIT_FAILURE;
      service.abort();
    },
  });
  announceListening(options, service.addr, workers);
  if (admin !== undefined) {
    const adminAddress = formatAddr(admin.addr);
    announceLogger.info(
      `admin listening on ${adminAddress} (GET /healthz, GET /metrics)`,
      { address: adminAddress },
    );
  }
  const summary = await service.finished;
  signals.drained();
  await admin?.shutdown();
  logSummary(summary);
  return exitCode;
}

if (import.meta.main) {
  let exitCode: number;
  try {
    exitCode = await main(Deno.args);
  } finally {
    // Also before an unexpected error is reported: the lines before it first.
    await flushLogs(EXIT_FLUSH_MS);
  }
  Deno.exit(exitCode);
}

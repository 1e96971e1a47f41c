/**
 * The lineserver command: `deno run --allow-net server.ts [options]`.
 *
 * Parses the command line, sets up logging, starts the server, wires the
 * shutdown signals and reports how it ended. Exit codes: 0 after a graceful
 * shutdown, 1 when it could not start or was stopped by a second signal,
 * 2 for bad options or unusable TLS files.
 *
 * @module
 */
import { type CliOptions, parseCli, USAGE, VERSION } from "./src/cli.ts";
import {
  announceLogger,
  configureLogging,
  serverLogger,
} from "./src/logging.ts";
import { builtinProtocols, type LineServer, startServer } from "./mod.ts";
import { onShutdownSignals } from "./signals.ts";

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

function die(message: string, code: number): never {
  console.error(`lineserver: ${message}`);
  Deno.exit(code);
}

function formatHost(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Reads the TLS files, or exits 2 with one line before anything listens. */
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
      die(
        `Cannot read --${option} ${path}: ${
          (error as Error).message.split("\n")[0]
        }`,
        EXIT_USAGE,
      );
    }
  };
  return {
    cert: read("tls-cert", options.tlsCert),
    key: read("tls-key", options.tlsKey),
  };
}

async function listen(options: CliOptions): Promise<LineServer> {
  const tls = readTlsFiles(options);
  try {
    return await startServer({
      hostname: options.host,
      port: options.port,
      protocol: builtinProtocols[options.protocol],
      maxLineBytes: options.maxLineBytes,
      maxConnections: options.maxConnections,
      idleTimeoutMs: options.idleTimeoutMs,
      shutdownTimeoutMs: options.shutdownTimeoutMs,
      tls,
    });
  } catch (error) {
    const where = formatHost(options.host, options.port);
    if (error instanceof Deno.errors.AddrInUse) {
      die(`Cannot listen on ${where}: address already in use`, EXIT_FAILURE);
    }
    const reason = (error as Error).message.split("\n")[0];
    // A certificate/key problem surfaces when the TLS listener is created.
    if (
      tls !== undefined &&
      !(error instanceof Deno.errors.PermissionDenied ||
        error instanceof Deno.errors.NotCapable)
    ) {
      die(`Cannot use --tls-cert/--tls-key: ${reason}`, EXIT_USAGE);
    }
    die(`Cannot listen on ${where}: ${reason}`, EXIT_FAILURE);
  }
}

/** Runs the command with `args` and returns its exit code. */
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
      console.error(`lineserver: ${request.message}`);
      return EXIT_USAGE;
  }
  const options = request.options;
  configureLogging({ level: options.logLevel, format: options.logFormat });
  const server = await listen(options);
  const address = formatHost(server.addr.hostname, server.addr.port);
  announceLogger.info(`listening on ${address}`, {
    address,
    protocol: options.protocol,
    maxLineBytes: options.maxLineBytes,
    maxConnections: options.maxConnections,
    idleTimeoutSeconds: options.idleTimeoutMs / 1000,
    shutdownTimeoutSeconds: options.shutdownTimeoutMs / 1000,
    tls: options.tlsCert !== undefined,
  });
  let exitCode = 0;
  using _signals = onShutdownSignals({
    graceful(signal) {
      serverLogger.info(
        "{signal} received: draining {connections} connections (timeout {timeoutSeconds} s)",
        {
          signal,
          connections: server.activeConnections,
          timeoutSeconds: options.shutdownTimeoutMs / 1000,
        },
      );
      server.shutdown();
    },
    immediate(signal) {
      serverLogger.warn("{signal} received again: closing everything now", {
        signal,
      });
      exitCode = EXIT_FAILURE;
      server.abort();
    },
  });
  const summary = await server.finished;
  serverLogger.info(
    "shutdown complete: {served} connections served, {closedGracefully} closed gracefully, {closedByForce} closed by force",
    { ...summary },
  );
  return exitCode;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

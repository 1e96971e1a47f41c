/**
 * The line client command: `deno task client HOST:PORT [options]`, or
 * `deno run --allow-net client.ts HOST:PORT` (add `--allow-read` for
 * `--ca FILE`). What netcat is to a line server, minus its quirks.
 *
 * Prints every line the server sends as soon as it arrives (without its
 * CR), sends every line of stdin ended by LF. Exit codes: 0 once the server
 * closed (after the end of stdin, or first); 1 when it could not be reached
 * (within `--connect-timeout`), reset the connection, or stayed silent past
 * `--timeout` after a line was sent; 2 for bad options; 130 on Ctrl-C.
 *
 * @module
 */
import {
  CLIENT_USAGE,
  type ClientCliOptions,
  parseClientCli,
  VERSION,
} from "./src/client_cli.ts";
import { LINE_TOO_LONG } from "./src/framing.ts";
import { FrameDecoder } from "./src/frame_decoder.ts";
import { firstLine } from "./src/logging.ts";
import { LineClient, LineClientError } from "./mod.ts";

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;
/** The longest line printed; a longer one is reported on stderr and dropped. */
const MAX_PRINTED_LINE_BYTES = 16 * 1024 * 1024;
/** The longest stdin line sent; a longer one is reported and not sent. */
const MAX_SENT_LINE_BYTES = 16 * 1024 * 1024;

const utf8 = new TextEncoder();

function report(message: string) {
  console.error(`client: ${message}`);
}

async function writeAll(bytes: Uint8Array) {
  for (let written = 0; written < bytes.length;) {
    written += await Deno.stdout.write(bytes.subarray(written));
  }
}

/**
 * Prints the server's lines until it closes; returns the exit code. The
 * next line is read only once the last one is written, so a slow stdout
 * slows the server down instead of filling memory.
 */
async function printLines(
  client: LineClient,
  options: ClientCliOptions,
): Promise<number> {
  while (true) {
    let line: string;
    try {
      line = await client.readLine();
    } catch (error) {
      if (!(error instanceof LineClientError)) throw error;
      switch (error.code) {
        case "closed":
          // What arrived of a line the server did not finish is printed too.
          if (error.partial) await printLine(error.partial);
          return 0;
        case "frame-too-long":
          report(
            `a line over ${client.maxFrameBytes} bytes from ${client.address} was dropped`,
          );
          continue;
        case "timeout":
          report(
            `no reply from ${client.address} in ${options.timeoutMs / 1000} s`,
          );
          return EXIT_FAILURE;
        case "aborted":
          return EXIT_INTERRUPTED;
        default:
          report(error.message);
          return EXIT_FAILURE;
      }
    }
    if (!await printLine(line)) return 0;
  }
}

/** Prints `line`; false when whoever read our output has gone (`| head`). */
async function printLine(line: string): Promise<boolean> {
  try {
    await writeAll(utf8.encode(line + "\n"));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.BrokenPipe) return false;
    throw error;
  }
}

/**
 * Sends stdin's lines (framed by the same framer as the server's input)
 * until its end, then half-closes. The `--timeout` clock starts with the
 * first line sent. A send that fails means the connection ended, which the
 * printer reports.
 */
async function sendStdin(
  client: LineClient,
  options: ClientCliOptions,
): Promise<void> {
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_SENT_LINE_BYTES });
  const buffer = new Uint8Array(64 * 1024);
  let timing = false;
  while (true) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) decoder.end();
    else decoder.push(buffer.subarray(0, n));
    const lines: string[] = [];
    for (let frame; (frame = decoder.next()) !== undefined;) {
      if (frame === LINE_TOO_LONG) {
        report(`a stdin line over ${MAX_SENT_LINE_BYTES} bytes was not sent`);
      } else if (typeof frame === "string") lines.push(frame);
    }
    decoder.release();
    if (lines.length > 0) {
      await client.send(...lines);
      if (!timing && options.timeoutMs > 0) {
        client.readTimeoutMs = options.timeoutMs;
        timing = true;
      }
    }
    if (n === null) break;
  }
  await client.closeWrite();
}

/** Runs the command with `args` and returns its exit code. */
export async function main(args: string[]): Promise<number> {
  const request = parseClientCli(args);
  switch (request.kind) {
    case "help":
      console.log(CLIENT_USAGE);
      return 0;
    case "version":
      console.log(`lineserver client ${VERSION}`);
      return 0;
    case "error":
      report(request.message);
      return EXIT_USAGE;
  }
  const options = request.options;
  let ca: string | undefined;
  try {
    if (options.caFile !== undefined) {
      ca = Deno.readTextFileSync(options.caFile);
    }
  } catch (error) {
    report(`Cannot read --ca ${options.caFile}: ${firstLine(error)}`);
    return EXIT_USAGE;
  }
  let client: LineClient | undefined;
  const interrupted = Promise.withResolvers<number>();
  const onInterrupt = () => {
    client?.close();
    interrupted.resolve(EXIT_INTERRUPTED);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    const connecting = LineClient.connect({
      hostname: options.hostname,
      port: options.port,
      tls: options.tls ? { ca, insecure: options.insecure } : undefined,
      connectTimeoutMs: options.connectTimeoutMs,
      maxFrameBytes: MAX_PRINTED_LINE_BYTES,
    });
    connecting.catch(() => {}); // Ctrl-C may win the race below
    const connected = await Promise.race([connecting, interrupted.promise]);
    if (typeof connected === "number") return connected;
    client = connected;
  } catch (error) {
    if (!(error instanceof LineClientError)) throw error;
    report(error.message);
    return EXIT_FAILURE;
  }
  sendStdin(client, options).catch(() => {});
  return await Promise.race([
    printLines(client, options),
    interrupted.promise,
  ]);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

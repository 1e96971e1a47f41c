/**
 * In-process servers for socket tests: start one through `mod.ts` on
 * 127.0.0.1 port 0, hand out clients, and always close every client and shut
 * the server down afterwards, so the test sanitizers see nothing leaked.
 * Also a byte-level reader, for replies whose exact bytes matter (UTF-8).
 *
 * @module
 */
import assert from "node:assert/strict";
import { startServer } from "../../mod.ts";
import { WELCOME } from "./calc_replies.ts";
import { DEFAULT_READ_TIMEOUT_MS, LineClient } from "./line_client.ts";
import { waitFor, withTimeout } from "./deadline.ts";

/** The options `startServer` accepts. */
export type ServerOptions = NonNullable<Parameters<typeof startServer>[0]>;

/** The server `startServer` resolves to. */
export type LineServer = Awaited<ReturnType<typeof startServer>>;

/** What a test body gets: the running server and a way to open clients. */
export interface Harness {
  server: LineServer;
  /** The real port the server listens on. */
  port: number;
  /** Connects a new client; it is closed when the test body ends. */
  connect(): Promise<LineClient>;
  /**
   * Connects a new client and asserts that its first line is `greeting`
   * (default: the calculator's welcome); it is closed when the test body ends.
   */
  connectGreeted(greeting?: string): Promise<LineClient>;
}

/** How long `server.shutdown()` may take before the test fails, unless the test says. */
const SHUTDOWN_TIMEOUT_MS = 10000;

/**
 * Starts a server on 127.0.0.1:0 with `options`, runs `body`, then closes
 * every client opened through the harness and awaits `server.shutdown()`
 * (for at most `shutdownWithinMs`, default 10 s).
 */
export async function withServer(
  options: Partial<ServerOptions>,
  body: (harness: Harness) => Promise<void>,
  { shutdownWithinMs = SHUTDOWN_TIMEOUT_MS }: { shutdownWithinMs?: number } =
    {},
): Promise<void> {
  const server = await startServer({
    hostname: "127.0.0.1",
    port: 0,
    ...options,
  } as ServerOptions);
  const clients: LineClient[] = [];
  const connect = async () => {
    const client = await LineClient.connect(server.addr.port);
    clients.push(client);
    return client;
  };
  try {
    await body({
      server,
      port: server.addr.port,
      connect,
      async connectGreeted(greeting = WELCOME) {
        const client = await connect();
        assert.equal(await client.readLine(), greeting);
        return client;
      },
    });
  } finally {
    for (const client of clients) client.close();
    await withTimeout(server.shutdown(), shutdownWithinMs, "server shutdown");
  }
}

/** How long a test waits for the server's metrics to show what it expects. */
const METRICS_WAIT_MS = 10000;

/**
 * Waits until exactly `count` connections hold a slot of the in-process
 * `server`: it has seen the others leave and given their slots back. Fails
 * after `timeoutMs` (default 10 s).
 */
export async function untilActive(
  server: LineServer,
  count: number,
  timeoutMs = METRICS_WAIT_MS,
): Promise<void> {
  await waitFor(
    `${count} connection(s) to hold a slot`,
    () => server.metrics.connectionsActive === count,
    timeoutMs,
  );
}

/** Waits until the in-process `server` has read exactly `bytes` bytes from its clients. */
export async function untilReceived(
  server: LineServer,
  bytes: number,
): Promise<void> {
  await waitFor(
    `the server to read ${bytes} bytes`,
    () => server.metrics.bytesReceived === bytes,
    METRICS_WAIT_MS,
  );
}

const encoder = new TextEncoder();

/** Concatenates strings (as UTF-8), byte arrays and byte lists into one array. */
export function bytes(
  ...parts: (string | number[] | Uint8Array)[]
): Uint8Array {
  const arrays = parts.map((part) =>
    typeof part === "string"
      ? encoder.encode(part)
      : part instanceof Uint8Array
      ? part
      : Uint8Array.from(part)
  );
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let offset = 0;
  for (const array of arrays) {
    out.set(array, offset);
    offset += array.length;
  }
  return out;
}

/**
 * Reads raw reply lines (bytes up to and including LF) from a connection.
 * Use it instead of, never together with, `LineClient`'s read methods on the
 * same connection: it sees the bytes before any decoding.
 */
export class ByteReader {
  readonly #conn: Deno.Conn;
  #pending: Uint8Array = new Uint8Array(0);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Returns the next line's raw bytes including its `\n`; fails on EOF or timeout. */
  async readLineBytes(
    timeoutMs = DEFAULT_READ_TIMEOUT_MS,
  ): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const lf = this.#pending.indexOf(10);
      if (lf >= 0) {
        const line = this.#pending.slice(0, lf + 1);
        this.#pending = this.#pending.slice(lf + 1);
        return line;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms reading raw reply bytes`,
        );
      }
      const chunk = new Uint8Array(65536);
      const n = await withTimeout(
        this.#conn.read(chunk),
        left,
        "reading raw reply bytes",
      );
      if (n === null) {
        throw new Error(
          `Connection ended before a full line; got bytes [${this.#pending}]`,
        );
      }
      this.#pending = bytes(this.#pending, chunk.subarray(0, n));
    }
  }
}

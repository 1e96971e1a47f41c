/**
 * The bulk-push server: after a client's `start`, it pushes three messages
 * of exactly 3 MiB, each ended by `\r<--EOM-->\r`, and logs every
 * acknowledgement the client sends back. Written only against `mod.ts`.
 *
 * Run: `deno run --allow-net examples/bulk_push/server.ts [--port 9000]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type CloseReason,
  type LineConnection,
  type LineProtocol,
  type LineSession,
  startServer,
} from "../../mod.ts";
import {
  acknowledged,
  message,
  MESSAGE_BYTES,
  MESSAGES,
  START,
  TERMINATOR,
} from "./messages.ts";
import { log } from "./log.ts";

/** Made once: every client gets the same three messages. */
const messages = Array.from({ length: MESSAGES }, (_, i) => message(i + 1));

class BulkPushSession implements LineSession {
  readonly #connection: LineConnection;

  constructor(connection: LineConnection) {
    this.#connection = connection;
    log(
      `client ${connection.id} connected from ${connection.peer.hostname}:${connection.peer.port}`,
    );
  }

  reply(line: string): undefined {
    const id = this.#connection.id;
    if (line === START) {
      log(
        `client ${id} sent start: pushing ${MESSAGES} messages of ${MESSAGE_BYTES} bytes`,
      );
      // Not awaited: the acknowledgements must be read while pushing.
      this.#push();
      return;
    }
    if (acknowledged(line) !== undefined) {
      log(`client ${id} acknowledged: ${line}`);
    } else {
      log(
        `client ${id} sent something else: ${
          JSON.stringify(line.slice(0, 80))
        }`,
      );
    }
  }

  /**
   * One message at a time: send() takes whole lines, so the connection's
   * queue must hold one message (see maxQueuedBytes below); waiting for
   * drained() before the next keeps it at one.
   */
  async #push() {
    for (const text of messages) {
      if (this.#connection.closed) return;
      this.#connection.send(text);
      await this.#connection.drained();
    }
  }

  onClose(reason: CloseReason) {
    log(`client ${this.#connection.id} disconnected (${reason})`);
  }
}

/** Frames end with the terminator both ways; a client's frames are short. */
export const bulkPushProtocol: LineProtocol = {
  name: "bulk-push",
  framing: { terminator: TERMINATOR, maxFrameBytes: 1024 },
  // One whole message (and the terminator) may wait for a client; the
  // default bound (1 MiB) would disconnect it as a slow consumer.
  maxQueuedBytes: MESSAGE_BYTES + 64 * 1024,
  createSession: (connection) => new BulkPushSession(connection),
};

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "9000" },
    },
  });
  const server = await startServer({
    hostname: values.host,
    port: Number(values.port),
    protocol: bulkPushProtocol,
  });
  log(
    `bulk-push server listening on ${server.addr.hostname}:${server.addr.port}`,
  );
  Deno.addSignalListener("SIGINT", () => server.shutdown());
  await server.finished;
}

/**
 * The entry point of one `--workers` thread: runs a LineServer on the shared
 * port and answers the supervisor's messages (see cluster.ts).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { startServer } from "./line_server.ts";
import { builtinProtocols } from "../protocol.ts";
import { configureLogging, firstLine, flushLogs } from "./logging.ts";
import type { FromWorker, ToWorker } from "./cluster.ts";
import type { LineServer } from "./line_server.ts";
import {
  ChatRoomUnreachableError,
  openProtocol,
  type ServedProtocol,
} from "./served_protocol.ts";

let server: LineServer | undefined;

function send(message: FromWorker) {
  self.postMessage(message);
}

/**
 * Sends the last message of this worker once its log lines are out (or have
 * had a second): the main thread ends the worker when it has the message.
 */
async function sendLast(message: FromWorker) {
  await flushLogs(1000);
  send(message);
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "start": {
      configureLogging({
        level: message.logLevel,
        format: message.logFormat,
        dropCounter: message.logDropCounter,
      });
      const makeProtocol = builtinProtocols[message.protocol];
      if (makeProtocol === undefined) {
        await sendLast({
          type: "failed",
          error: `Protocol ${message.protocol} is not built in`,
          addrInUse: false,
        });
        return;
      }
      let served: ServedProtocol;
      try {
        served = await openProtocol(makeProtocol, message.chat);
      } catch (error) {
        await sendLast({
          type: "failed",
          error: firstLine(error),
          addrInUse: false,
          chatUnreachable: error instanceof ChatRoomUnreachableError,
        });
        return;
      }
      try {
        server = await startServer({
          ...message.options,
          protocol: served.protocol,
        });
      } catch (error) {
        await served.close();
        await sendLast({
          type: "failed",
          error: firstLine(error),
          addrInUse: error instanceof Deno.errors.AddrInUse,
        });
        return;
      }
      send({ type: "listening", addr: server.addr });
      const summary = await server.finished;
      await served.close();
      await sendLast({ type: "finished", summary });
      return;
    }
    case "shutdown":
      server?.shutdown();
      return;
    case "abort":
      server?.abort();
      return;
    case "metrics":
      if (server) {
        send({
          type: "metrics",
          id: message.id,
          snapshot: server.metrics.snapshot(),
        });
      }
      return;
  }
};

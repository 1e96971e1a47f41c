/**
 * Flooding clients in a Worker of their own (an event loop apart from the
 * test's bystander): each connection writes 64 KiB of empty lines whenever
 * its socket takes more, and reads and drops the error replies, so the
 * server always has their lines to answer and never waits for them to read.
 *
 * Messages: `{ host, port, connections }` connects and answers
 * `{ type: "ready" }` once every connection has its welcome line; `stop`
 * closes them and answers `{ type: "stopped", bytesIn }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import net from "node:net";
import { Buffer } from "node:buffer";

/** What the flood worker is sent. */
export type ToFlooders =
  | { host: string; port: number; connections: number }
  | "stop";
/** What it answers. */
export type FromFlooders =
  | { type: "ready" }
  | { type: "stopped"; bytesIn: number };

const EMPTY_LINES = Buffer.alloc(64 * 1024, 0x0a);
const sockets: net.Socket[] = [];
let flooding = true;
let bytesIn = 0;

function flood(socket: net.Socket) {
  while (flooding && socket.write(EMPTY_LINES));
}

function answer(message: FromFlooders) {
  self.postMessage(message);
}

self.onmessage = (event: MessageEvent<ToFlooders>) => {
  if (event.data === "stop") {
    flooding = false;
    for (const socket of sockets) socket.destroy();
    answer({ type: "stopped", bytesIn });
    return;
  }
  const { host, port, connections } = event.data;
  let welcomed = 0;
  for (let i = 0; i < connections; i++) {
    const socket = net.connect({ host, port });
    sockets.push(socket);
    let greeted = false;
    socket.on("error", () => {});
    socket.on("drain", () => flood(socket));
    socket.on("data", (chunk: Buffer) => {
      bytesIn += chunk.length;
      if (greeted) return;
      greeted = true;
      if (++welcomed === connections) {
        answer({ type: "ready" });
        for (const s of sockets) flood(s);
      }
    });
  }
};

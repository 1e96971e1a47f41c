/**
 * Small `node:net` servers that misbehave on purpose, for client tests: one
 * that closes first, resets, never answers, floods, or speaks another
 * framing. Every socket it accepted is destroyed and the listener closed
 * when the test body ends, so the sanitizers see nothing leaked.
 *
 * @module
 */
import net from "node:net";
import { withTimeout } from "./deadline.ts";

/** What a test body gets: the port, and the sockets it accepts. */
export interface ScriptedServer {
  readonly port: number;
  /** Resolves with the next socket accepted (or one already waiting). */
  accepted(): Promise<net.Socket>;
}

/**
 * Listens on 127.0.0.1:0, calls `onConnection` for every accepted socket,
 * runs `body`, then destroys every socket and closes the listener.
 */
export async function withScriptedServer(
  onConnection: (socket: net.Socket) => void,
  body: (server: ScriptedServer) => Promise<void>,
): Promise<void> {
  const sockets: net.Socket[] = [];
  let taken = 0;
  let wake: (() => void) | undefined;
  const listener = net.createServer((socket) => {
    sockets.push(socket);
    // A client that goes away mid-script is expected; never crash on it.
    socket.on("error", () => {});
    onConnection(socket);
    wake?.();
  });
  await new Promise<void>((resolve) =>
    listener.listen(0, "127.0.0.1", resolve)
  );
  const port = (listener.address() as net.AddressInfo).port;
  try {
    await body({
      port,
      async accepted() {
        while (taken >= sockets.length) {
          await withTimeout(
            new Promise<void>((resolve) => wake = resolve),
            5000,
            "a connection to the scripted server",
          );
        }
        return sockets[taken++];
      },
    });
  } finally {
    for (const socket of sockets) socket.destroy();
    await Promise.all(
      sockets.filter((socket) => !socket.closed).map((socket) =>
        new Promise((resolve) => socket.once("close", resolve))
      ),
    );
    await new Promise((resolve) => listener.close(resolve));
  }
}

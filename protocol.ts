/**
 * Pure protocol logic (no I/O): line framing, the calculator and echo
 * protocols, and the interfaces a custom protocol implements.
 *
 * @module
 */
import type { LineProtocol, LineSession } from "./src/session.ts";
import { calculatorProtocol } from "./src/calculator.ts";
import { createChatProtocol } from "./src/chat.ts";

export type {
  CloseReason,
  LineConnection,
  LineProtocol,
  LineSession,
  PeerAddress,
  Reply,
  ReplyContext,
} from "./src/session.ts";
export {
  type Frame,
  FrameEncoder,
  type FramingOptions,
  LINE_TOO_LONG,
} from "./src/framing.ts";
export { FrameDecoder } from "./src/frame_decoder.ts";
export {
  type CalculatorMode,
  calculatorProtocol,
  CalculatorReplies,
  CalculatorSession,
  evaluateIntegers,
} from "./src/calculator.ts";

/**
 * Echo: no welcome; every framed request line comes back as the reply.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EchoSession } from "./protocol.ts";
 * assert.equal(new EchoSession().reply("hello"), "hello");
 * ```
 */
export class EchoSession implements LineSession {
  /** Returns the line unchanged. */
  reply(line: string): string {
    return line;
  }
}

/**
 * The echo protocol.
 *
 * @example
 * ```ts
 * import { echoProtocol, startServer } from "./mod.ts";
 * await using server = await startServer({ port: 0, protocol: echoProtocol });
 * ```
 */
export const echoProtocol: LineProtocol = {
  name: "echo",
  createSession: () => new EchoSession(),
};

/**
 * The built-in protocols by their `--protocol` name, each as a function that
 * makes the protocol for one server. Call it once per server: `calc` and
 * `echo` keep nothing between connections and are the same value every
 * time, but `chat` holds its room, so every call makes a room of its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { builtinProtocols } from "./protocol.ts";
 * assert.equal(builtinProtocols.echo().name, "echo");
 * assert.notEqual(builtinProtocols.chat(), builtinProtocols.chat());
 * ```
 */
export const builtinProtocols: Readonly<Record<string, () => LineProtocol>> = {
  calc: () => calculatorProtocol,
  echo: () => echoProtocol,
  chat: createChatProtocol,
};

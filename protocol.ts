/**
 * Pure protocol logic (no I/O): line framing, the calculator and echo
 * protocols, and the interfaces a custom protocol implements.
 *
 * @module
 */
import type { LineProtocol, LineSession } from "./src/session.ts";
import { calculatorProtocol } from "./src/calculator.ts";

export type { LineProtocol, LineSession } from "./src/session.ts";
export {
  type Frame,
  LINE_TOO_LONG,
  LineDecoder,
  stripTrailingWhitespace,
} from "./src/line_decoder.ts";
export {
  type CalculatorMode,
  calculatorProtocol,
  CalculatorReplies,
  CalculatorSession,
  evaluateIntegers,
} from "./src/calculator.ts";

/**
 * The reply to a request line longer than the limit, in both protocols.
 *
 * @example
 * ```ts
 * import { lineTooLongReply } from "./protocol.ts";
 * lineTooLongReply(65536); // "ERROR. Line too long (max 65536 bytes)"
 * ```
 */
export function lineTooLongReply(maxLineBytes: number): string {
  return `ERROR. Line too long (max ${maxLineBytes} bytes)`;
}

/**
 * Echo: no welcome; every framed request line comes back as the reply.
 *
 * @example
 * ```ts
 * import { EchoSession } from "./protocol.ts";
 * new EchoSession().reply("hello"); // "hello"
 * ```
 */
export class EchoSession implements LineSession {
  /** Echo sends no welcome line. */
  readonly greeting: undefined = undefined;
  /** Echo never ends a connection by itself. */
  readonly ended = false;

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
 * import { echoProtocol } from "./protocol.ts";
 * echoProtocol.createSession().reply("ping"); // "ping"
 * ```
 */
export const echoProtocol: LineProtocol = {
  name: "echo",
  createSession: () => new EchoSession(),
};

/** The built-in protocols by their `--protocol` name. */
export const builtinProtocols: Readonly<Record<string, LineProtocol>> = {
  calc: calculatorProtocol,
  echo: echoProtocol,
};

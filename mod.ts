/**
 * lineserver: a concurrent TCP line-protocol server for Deno.
 *
 * Start a server with a protocol (the calculator, echo, or your own
 * {@linkcode LineProtocol}), read its bound address, shut it down gracefully.
 *
 * @example
 * ```ts
 * import { type LineProtocol, startServer } from "./mod.ts";
 *
 * const upper: LineProtocol = {
 *   name: "upper",
 *   createSession: () => ({
 *     greeting: "hello",
 *     ended: false,
 *     reply: (line) => line.toUpperCase(),
 *   }),
 * };
 * const server = await startServer({ port: 0, protocol: upper });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.shutdown();
 * ```
 *
 * @module
 */
export {
  LineServer,
  type ServerOptions,
  type ShutdownSummary,
  startServer,
} from "./src/line_server.ts";
export {
  builtinProtocols,
  calculatorProtocol,
  CalculatorReplies,
  CalculatorSession,
  echoProtocol,
  EchoSession,
  evaluateIntegers,
  type Frame,
  LINE_TOO_LONG,
  LineDecoder,
  type LineProtocol,
  type LineSession,
} from "./protocol.ts";
export { ServerReplies } from "./src/replies.ts";
export {
  type ConnectionOutcome,
  type ErrorKind,
  ServerMetrics,
} from "./src/metrics.ts";

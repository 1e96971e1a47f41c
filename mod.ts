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
  type CalculatorMode,
  calculatorProtocol,
  CalculatorReplies,
  CalculatorSession,
  type CloseReason,
  echoProtocol,
  EchoSession,
  evaluateIntegers,
  type Frame,
  FrameDecoder,
  FrameEncoder,
  type FramingOptions,
  LINE_TOO_LONG,
  type LineConnection,
  type LineProtocol,
  type LineSession,
  type PeerAddress,
  type Reply,
  type ReplyContext,
} from "./protocol.ts";
export { createChatProtocol } from "./src/chat.ts";
export {
  ChatReplies,
  type ChatRoom,
  ChatUnavailableError,
  LocalChatRoom,
} from "./src/chat_room.ts";
export {
  type FoldingSink,
  foldingSink,
  type FoldingSinkOptions,
} from "./src/log_folding.ts";
export { type LogRecordFields, logTextFormatter } from "./src/log_format.ts";
export type { Clock } from "./src/timeout_tracker.ts";
export { ConnectionGroup } from "./src/connection_group.ts";
export { ServerReplies } from "./src/replies.ts";
export {
  type AcceptErrorKind,
  type ConnectionOutcome,
  type ErrorKind,
  type MetricsSnapshot,
  type NotAdmittedOutcome,
  ServerMetrics,
} from "./src/metrics.ts";
export {
  LineClient,
  type LineClientOptions,
  type ReadOptions,
} from "./src/line_client.ts";
export {
  LineClientError,
  type LineClientErrorCode,
} from "./src/client_error.ts";
export {
  type ClientTlsOptions,
  type RetryOptions,
} from "./src/client_connect.ts";

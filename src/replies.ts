/**
 * The lines the server itself sends, whatever the protocol.
 *
 * @module
 */

/**
 * Lines the server itself sends, whatever the protocol (without CRLF).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ServerReplies } from "./replies.ts";
 * assert.equal(
 *   ServerReplies.lineTooLong(16),
 *   "ERROR. Line too long (max 16 bytes)",
 * );
 * ```
 */
export const ServerReplies = {
  tooManyConnections: "ERROR. Too many connections, try again later",
  tooManyFromAddress:
    "ERROR. Too many connections from your address, try again later",
  idleTimeout: "<idle timeout: closing connection>",
  lineTimeout: "<line timeout: closing connection>",
  shuttingDown: "<server shutting down>",
  lineTooLong: (maxLineBytes: number) =>
    `ERROR. Line too long (max ${maxLineBytes} bytes)`,
} as const;

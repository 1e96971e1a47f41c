/**
 * How a client connection fails: one error class whose `code` says what
 * happened, so a caller can decide (retry on `refused`, reconnect on
 * `closed` or `reset`, give up on `tls`) without parsing messages.
 *
 * @module
 */
import { firstLine } from "./logging.ts";

/**
 * What went wrong:
 * - `refused`: nothing listens at the address (connection refused);
 * - `unreachable`: the host or network cannot be reached, or the name does
 *   not resolve;
 * - `connect-timeout`: connecting (TCP and the TLS handshake) took longer
 *   than the connect timeout;
 * - `tls`: the TLS handshake failed (an untrusted certificate, say);
 * - `closed`: the server ended the connection (end of stream) before the
 *   line or reply that was waited for;
 * - `reset`: the connection was reset or broke;
 * - `timeout`: a read waited longer than its timeout, or the server stayed
 *   silent longer than the read deadline;
 * - `frame-too-long`: a frame was longer than the client's maximum; its
 *   bytes were dropped and the connection stays usable;
 * - `aborted`: this side closed the connection.
 */
export type LineClientErrorCode =
  | "refused"
  | "unreachable"
  | "connect-timeout"
  | "tls"
  | "closed"
  | "reset"
  | "timeout"
  | "frame-too-long"
  | "aborted";

/**
 * An error of the line client; `code` says what happened.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LineClientError } from "./client_error.ts";
 *
 * const error = new LineClientError("refused", "Cannot connect to 127.0.0.1:9: connection refused");
 * assert.equal(error.code, "refused");
 * assert.equal(error.name, "LineClientError");
 * ```
 */
export class LineClientError extends Error {
  /** What happened. */
  readonly code: LineClientErrorCode;
  /**
   * With `closed`: the text of the last line when the server ended its
   * stream in the middle of it (a line is delivered only once it is whole).
   */
  partial?: string;

  /** An error with its code, a message, and optionally the error behind it. */
  constructor(
    code: LineClientErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LineClientError";
    this.code = code;
  }
}

/** A system error as `node:net` reports it. */
interface SystemError {
  code?: string;
  message?: string;
}

/** The codes of a host or network that cannot be reached, and what they mean. */
const UNREACHABLE: Record<string, string> = {
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EHOSTDOWN: "host is down",
  ENOTFOUND: "no such host",
  EAI_NONAME: "no such host",
  EAI_AGAIN: "the name could not be resolved (temporary failure)",
  EADDRNOTAVAIL: "address not available",
};

/**
 * Why connecting to `where` failed, as a {@linkcode LineClientError}.
 * `handshaking` is true once TCP was connected: a failure is then the TLS
 * handshake's.
 */
export function connectError(
  error: unknown,
  where: string,
  handshaking: boolean,
): LineClientError {
  const code = (error as SystemError)?.code ?? "";
  const prefix = `Cannot connect to ${where}`;
  if (code === "ECONNREFUSED") {
    return new LineClientError("refused", `${prefix}: connection refused`, {
      cause: error,
    });
  }
  if (code in UNREACHABLE) {
    return new LineClientError(
      "unreachable",
      `${prefix}: ${UNREACHABLE[code]}`,
      {
        cause: error,
      },
    );
  }
  if (code === "ETIMEDOUT") {
    return new LineClientError("connect-timeout", `${prefix}: timed out`, {
      cause: error,
    });
  }
  if (handshaking && !isResetCode(code)) {
    return new LineClientError(
      "tls",
      `${prefix}: TLS handshake failed: ${firstLine(error)}`,
      { cause: error },
    );
  }
  if (isResetCode(code)) {
    return new LineClientError("reset", `${prefix}: connection reset`, {
      cause: error,
    });
  }
  return new LineClientError("unreachable", `${prefix}: ${firstLine(error)}`, {
    cause: error,
  });
}

/** Why an open connection to `where` broke, as a {@linkcode LineClientError}. */
export function connectionError(
  error: unknown,
  where: string,
): LineClientError {
  const code = (error as SystemError)?.code ?? "";
  if (code === "ETIMEDOUT") {
    return new LineClientError(
      "timeout",
      `Connection to ${where} timed out (keep-alive probes unanswered)`,
      { cause: error },
    );
  }
  if (isResetCode(code)) {
    return new LineClientError("reset", `Connection to ${where} reset`, {
      cause: error,
    });
  }
  return new LineClientError(
    "reset",
    `Connection to ${where} broke: ${firstLine(error)}`,
    { cause: error },
  );
}

function isResetCode(code: string): boolean {
  return code === "ECONNRESET" || code === "EPIPE" ||
    code === "ECONNABORTED";
}

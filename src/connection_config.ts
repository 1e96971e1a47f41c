/**
 * What every connection of a server shares, made once per server: the
 * protocol and its framing, the bounds, the timeout trackers, the logger
 * and the metrics. An idle connection holds a reference to this, not
 * copies of it.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { FrameEncoder, type FramingOptions } from "./framing.ts";
import type { LineProtocol } from "./session.ts";
import type { ServerMetrics } from "./metrics.ts";
import { TimeoutTracker } from "./timeout_tracker.ts";
import { ServerReplies } from "./replies.ts";
import type { Settings } from "./server_options.ts";

/**
 * Past this many bytes waiting for a client, no further request of it is
 * answered (or read) until it reads; `send` answers false; a group counts
 * the member as behind.
 */
export const HIGH_WATER_BYTES = 64 * 1024;
/** Default bound of {@linkcode LineProtocol.maxQueuedBytes}. */
export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;
/** How long a closing connection waits for the client's FIN (see ConnectionConfig.lingerMs). */
const LINGER_MS = 500;

/** What the timeouts of a server call on a connection whose time is up. */
export interface TimedConnection {
  onIdleTimeout(): void;
  onLineTimeout(): void;
  onReplyTimeout(): void;
}

/** Settings every connection of a server shares; `C` is the connection. */
export interface ConnectionConfig<C extends TimedConnection = TimedConnection> {
  /** The protocol spoken on every connection. */
  protocol: LineProtocol;
  /** The protocol's framing, its limit resolved. */
  framing: FramingOptions & { maxFrameBytes: number };
  /** Ends and checks every line written. */
  encoder: FrameEncoder;
  /** The reply to a frame over the limit, ended. */
  tooLongReply: string;
  /** Bound of everything waiting for a client (see `LineProtocol.maxQueuedBytes`). */
  maxQueuedBytes: number;
  /** Whether request lines are logged (debug level). */
  logLines: boolean;
  /** Closes connections that received nothing for the idle timeout; absent when disabled. */
  idle: TimeoutTracker<C> | undefined;
  /** Closes connections whose line is unfinished after the line timeout; absent when disabled. */
  line: TimeoutTracker<C> | undefined;
  /** Ends a reply promise that has not settled in time; absent when disabled. */
  replyDeadline: TimeoutTracker<C> | undefined;
  /**
   * After our FIN, how long to keep reading (and dropping) what the client
   * still sends before closing. Closing a socket with unread input makes the
   * kernel send a reset, which can destroy replies the client has not read
   * yet; waiting for the client's own FIN avoids that.
   */
  lingerMs: number;
  /** True once the server is draining. */
  draining: () => boolean;
  /** Called once when a connection has ended (its stream is closed): the server counts it and frees its slot. */
  onEnd: (connection: C) => void;
  /** The next connection number (a health check takes one when it sends a line). */
  nextId: () => number;
  metrics: ServerMetrics;
  logger: Logger;
}

/**
 * The settings every connection of a server shares, made once per server:
 * the protocol's framing (its own frame limit, or the server's line limit),
 * the replies and bounds, and one tracker per timeout.
 */
export function connectionConfig<C extends TimedConnection>(
  settings: Settings,
  server: Pick<ConnectionConfig<C>, "draining" | "onEnd" | "nextId">,
): ConnectionConfig<C> {
  const protocol = settings.protocol;
  const maxFrameBytes = protocol.framing?.maxFrameBytes ??
    settings.maxLineBytes;
  const encoder = new FrameEncoder(protocol.framing);
  const tracker = (ms: number, expire: (connection: C) => void) =>
    ms > 0 ? new TimeoutTracker<C>(ms, expire) : undefined;
  return {
    protocol,
    framing: { terminator: protocol.framing?.terminator, maxFrameBytes },
    encoder,
    tooLongReply: ServerReplies.lineTooLong(maxFrameBytes) + encoder.ending,
    maxQueuedBytes: protocol.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES,
    logLines: settings.logger.isEnabledFor("debug"),
    idle: tracker(settings.idleTimeoutMs, (c) => c.onIdleTimeout()),
    line: tracker(settings.lineTimeoutMs, (c) => c.onLineTimeout()),
    replyDeadline: tracker(settings.replyTimeoutMs, (c) => c.onReplyTimeout()),
    lingerMs: LINGER_MS,
    metrics: settings.metrics,
    logger: settings.logger,
    ...server,
  };
}

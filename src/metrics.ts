/**
 * Counters and gauges, kept where the events happen and rendered in the
 * Prometheus text format for the admin endpoint.
 *
 * @module
 */
import type { CloseReason } from "./session.ts";

/**
 * How a connection ended; also the `outcome` label of
 * `lineserver_connections_total`: the reasons an admitted connection ends
 * with, and those of a client that was never admitted.
 */
export type ConnectionOutcome =
  | CloseReason
  | "refused_busy"
  | "refused_per_ip"
  | "handshake_failed"
  | "proxy_header_invalid";

/** The `kind` label of `lineserver_errors_total`. */
export type ErrorKind =
  | "line_too_long"
  | "refused_busy"
  | "refused_per_ip"
  | "idle_timeout"
  | "line_timeout"
  | "slow_consumer"
  | "reset"
  | "handler_fault"
  | "handshake_failed"
  | "proxy_header_invalid";

/** The `kind` label of `lineserver_accept_errors_total`. */
export type AcceptErrorKind = "peer_reset" | "exhausted" | "other";

const ACCEPT_ERROR_KINDS: readonly AcceptErrorKind[] = [
  "peer_reset",
  "exhausted",
  "other",
];
const OUTCOMES: readonly ConnectionOutcome[] = [
  "quit",
  "peer_closed",
  "idle_timeout",
  "line_timeout",
  "shutdown",
  "forced",
  "reset",
  "slow_consumer",
  "fault",
  "refused_busy",
  "refused_per_ip",
  "handshake_failed",
  "proxy_header_invalid",
];
const ERROR_KINDS: readonly ErrorKind[] = [
  "line_too_long",
  "refused_busy",
  "refused_per_ip",
  "idle_timeout",
  "line_timeout",
  "slow_consumer",
  "reset",
  "handler_fault",
  "handshake_failed",
  "proxy_header_invalid",
];

/** The values of a {@linkcode ServerMetrics}, as plain data. */
export interface MetricsSnapshot {
  /** `lineserver_connections_active`: connections holding a slot. */
  connectionsActive: number;
  /** `lineserver_lines_total`: request lines answered. */
  linesTotal: number;
  /** `lineserver_bytes_received_total`: bytes read from clients. */
  bytesReceived: number;
  /** `lineserver_bytes_sent_total`: bytes written to clients. */
  bytesSent: number;
  /** `lineserver_draining`: 1 from the start of a shutdown on, else 0. */
  draining: number;
  /** `lineserver_connections_total`, by outcome. */
  connectionsClosed: Record<ConnectionOutcome, number>;
  /** `lineserver_errors_total`, by kind. */
  errors: Record<ErrorKind, number>;
  /** `lineserver_accept_errors_total`, by kind. */
  acceptErrors: Record<AcceptErrorKind, number>;
}

/**
 * A server's metrics. Plain fields: incrementing one is as cheap as the
 * event it counts, so the hot path pays nothing noticeable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ServerMetrics } from "./metrics.ts";
 * const metrics = new ServerMetrics();
 * metrics.linesTotal += 3;
 * assert.match(metrics.render(), /^lineserver_lines_total 3$/m);
 * ```
 */
export class ServerMetrics {
  /** Connections currently holding a slot. */
  connectionsActive = 0;
  /** Request lines answered (too-long lines included). */
  linesTotal = 0;
  /** Bytes read from clients (as decrypted under TLS; a PROXY header not counted). */
  bytesReceived = 0;
  /** Bytes written to clients (before TLS): greetings, replies, pushed lines, refusals. */
  bytesSent = 0;
  /** 1 from the first shutdown signal on. */
  draining = 0;
  /** Connections ended, by how they ended (refused clients included). */
  readonly connectionsClosed: Record<ConnectionOutcome, number> = zeroed(
    OUTCOMES,
  );
  /** Errors, by kind. */
  readonly errors: Record<ErrorKind, number> = zeroed(ERROR_KINDS);
  /** Failed accepts: a client that reset before it was taken, or exhaustion. */
  readonly acceptErrors: Record<AcceptErrorKind, number> = zeroed(
    ACCEPT_ERROR_KINDS,
  );

  /** A plain copy of every value, to send between workers. */
  snapshot(): MetricsSnapshot {
    return {
      connectionsActive: this.connectionsActive,
      linesTotal: this.linesTotal,
      bytesReceived: this.bytesReceived,
      bytesSent: this.bytesSent,
      draining: this.draining,
      connectionsClosed: { ...this.connectionsClosed },
      errors: { ...this.errors },
      acceptErrors: { ...this.acceptErrors },
    };
  }

  /** Adds another server's values into these (for one view over all workers). */
  add(other: MetricsSnapshot): void {
    this.connectionsActive += other.connectionsActive;
    this.linesTotal += other.linesTotal;
    this.bytesReceived += other.bytesReceived;
    this.bytesSent += other.bytesSent;
    this.draining = Math.max(this.draining, other.draining);
    for (const o of OUTCOMES) {
      this.connectionsClosed[o] += other.connectionsClosed[o];
    }
    for (const k of ERROR_KINDS) this.errors[k] += other.errors[k];
    for (const k of ACCEPT_ERROR_KINDS) {
      this.acceptErrors[k] += other.acceptErrors[k];
    }
  }

  /** The Prometheus text exposition of every metric. */
  render(): string {
    const lines = [
      "# HELP lineserver_connections_active Connections currently open (holding a slot).",
      "# TYPE lineserver_connections_active gauge",
      `lineserver_connections_active ${this.connectionsActive}`,
      "# HELP lineserver_connections_total Connections ended, by how they ended.",
      "# TYPE lineserver_connections_total counter",
      ...OUTCOMES.map((o) =>
        `lineserver_connections_total{outcome="${o}"} ${
          this.connectionsClosed[o]
        }`
      ),
      "# HELP lineserver_lines_total Request lines answered.",
      "# TYPE lineserver_lines_total counter",
      `lineserver_lines_total ${this.linesTotal}`,
      "# HELP lineserver_errors_total Errors, by kind.",
      "# TYPE lineserver_errors_total counter",
      ...ERROR_KINDS.map((k) =>
        `lineserver_errors_total{kind="${k}"} ${this.errors[k]}`
      ),
      "# HELP lineserver_accept_errors_total Failed accepts, by kind.",
      "# TYPE lineserver_accept_errors_total counter",
      ...ACCEPT_ERROR_KINDS.map((k) =>
        `lineserver_accept_errors_total{kind="${k}"} ${this.acceptErrors[k]}`
      ),
      "# HELP lineserver_bytes_received_total Bytes read from clients.",
      "# TYPE lineserver_bytes_received_total counter",
      `lineserver_bytes_received_total ${this.bytesReceived}`,
      "# HELP lineserver_bytes_sent_total Bytes written to clients.",
      "# TYPE lineserver_bytes_sent_total counter",
      `lineserver_bytes_sent_total ${this.bytesSent}`,
      "# HELP lineserver_draining 1 while the server is shutting down.",
      "# TYPE lineserver_draining gauge",
      `lineserver_draining ${this.draining}`,
    ];
    return lines.join("\n") + "\n";
  }
}

function zeroed<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

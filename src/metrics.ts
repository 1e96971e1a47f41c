/**
 * Counters and gauges, rendered in the Prometheus text format for the admin
 * endpoint. Every event is counted by one method of {@linkcode ServerMetrics},
 * called once where the event happens; the method updates every series the
 * event belongs to, so no two places can count it differently.
 *
 * @module
 */
import type { CloseReason } from "./session.ts";
import { logLinesDropped } from "./logging.ts";

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
  | "proxy_header_invalid"
  | "proxy_untrusted";

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
  | "proxy_header_invalid"
  | "proxy_untrusted"
  | "reply_timeout";

/**
 * How a client that was never admitted ended: refused by a limit, failed
 * its TLS handshake or PROXY header, or reset during them. Each is an
 * outcome and an error kind of the same name.
 */
export type NotAdmittedOutcome =
  | "refused_busy"
  | "refused_per_ip"
  | "handshake_failed"
  | "proxy_header_invalid"
  | "proxy_untrusted"
  | "reset";

/**
 * The error kind counted when an admitted connection's way of ending is
 * decided, for the outcomes that are errors. (`fault` is not here: its
 * error, `handler_fault`, is counted at the fault itself, which a close
 * hook can also raise.)
 */
const ERROR_OF_ENDING: Partial<Record<CloseReason, ErrorKind>> = {
  idle_timeout: "idle_timeout",
  line_timeout: "line_timeout",
  slow_consumer: "slow_consumer",
  reset: "reset",
  reply_timeout: "reply_timeout",
};

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
  "reply_timeout",
  "refused_busy",
  "refused_per_ip",
  "handshake_failed",
  "proxy_header_invalid",
  "proxy_untrusted",
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
  "proxy_untrusted",
  "reply_timeout",
];

/** The values of a {@linkcode ServerMetrics}, as plain data. */
export interface MetricsSnapshot {
  /** `lineserver_connections_active`: connections being served (health checks included; sockets still in their PROXY header or TLS handshake not). */
  connectionsActive: number;
  /** `lineserver_lines_total`: request lines answered. */
  linesTotal: number;
  /** `lineserver_bytes_received_total`: bytes read from clients. */
  bytesReceived: number;
  /** `lineserver_bytes_sent_total`: bytes written to clients. */
  bytesSent: number;
  /** `lineserver_draining`: 1 from the start of a shutdown on, else 0. */
  draining: number;
  /** `lineserver_health_checks_total`: balancer health checks (PROXY v2 LOCAL connections). */
  healthChecks: number;
  /** `lineserver_connections_total`, by outcome. */
  connectionsClosed: Record<ConnectionOutcome, number>;
  /** `lineserver_errors_total`, by kind. */
  errors: Record<ErrorKind, number>;
  /** `lineserver_accept_errors_total`, by kind. */
  acceptErrors: Record<AcceptErrorKind, number>;
}

/**
 * A server's metrics: plain fields to read, and one method per event to
 * count it. Each method is a few field increments, so the hot path (bytes
 * and lines) pays nothing noticeable.
 *
 * Where a connection ends with an error (an idle timeout, say), the error is
 * counted when it happens and the outcome once the connection has closed,
 * usually a moment later: `lineserver_errors_total{kind="idle_timeout"}`
 * can run ahead of `lineserver_connections_total{outcome="idle_timeout"}`
 * for as long as the closing takes, never behind it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ServerMetrics } from "./metrics.ts";
 * const metrics = new ServerMetrics();
 * metrics.connectionAdmitted();
 * metrics.lineAnswered();
 * metrics.lineTooLong();
 * metrics.connectionClosing("idle_timeout");
 * metrics.connectionEnded("idle_timeout");
 * metrics.notAdmitted("refused_busy");
 * const text = metrics.render();
 * assert.match(text, /^lineserver_lines_total 2$/m);
 * assert.match(text, /^lineserver_errors_total\{kind="line_too_long"\} 1$/m);
 * assert.match(text, /^lineserver_errors_total\{kind="idle_timeout"\} 1$/m);
 * assert.match(text, /^lineserver_connections_total\{outcome="idle_timeout"\} 1$/m);
 * assert.match(text, /^lineserver_errors_total\{kind="refused_busy"\} 1$/m);
 * assert.match(text, /^lineserver_connections_total\{outcome="refused_busy"\} 1$/m);
 * assert.match(text, /^lineserver_connections_active 0$/m);
 * assert.match(text, /^lineserver_log_lines_dropped_total 0$/m);
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
  /** Balancer health checks (PROXY v2 LOCAL connections), not counted as connections. */
  healthChecks = 0;
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

  /** Bytes were read from a client. */
  received(bytes: number): void {
    this.bytesReceived += bytes;
  }

  /** Bytes were written to a client. */
  sent(bytes: number): void {
    this.bytesSent += bytes;
  }

  /** A request line was answered. */
  lineAnswered(): void {
    this.linesTotal++;
  }

  /** A request line over the limit was answered with the line-too-long error. */
  lineTooLong(): void {
    this.errors.line_too_long++;
    this.linesTotal++;
  }

  /** A session threw (in `createSession`, `reply` or `onClose`). */
  handlerFault(): void {
    this.errors.handler_fault++;
  }

  /** A client took a slot. */
  connectionAdmitted(): void {
    this.connectionsActive++;
  }

  /**
   * An admitted connection's way of ending is decided (its last lines may
   * still be on their way): counts the error of that outcome, if it is one.
   */
  connectionClosing(outcome: CloseReason): void {
    const kind = ERROR_OF_ENDING[outcome];
    if (kind !== undefined) this.errors[kind]++;
  }

  /** An admitted connection has closed and given its slot back. */
  connectionEnded(outcome: CloseReason): void {
    this.connectionsClosed[outcome]++;
    this.connectionsActive--;
  }

  /** A client was never admitted: its outcome, and the error of the same name. */
  notAdmitted(outcome: NotAdmittedOutcome): void {
    this.errors[outcome]++;
    this.connectionsClosed[outcome]++;
  }

  /**
   * A balancer's health check (a PROXY v2 LOCAL connection) began: it holds
   * a slot, but is not counted among the connections.
   */
  healthCheckStarted(): void {
    this.healthChecks++;
    this.connectionsActive++;
  }

  /** A health check has closed and given its slot back. */
  healthCheckEnded(): void {
    this.connectionsActive--;
  }

  /** An accept failed. */
  acceptFailed(kind: AcceptErrorKind): void {
    this.acceptErrors[kind]++;
  }

  /** The server began to shut down. */
  drainingStarted(): void {
    this.draining = 1;
  }

  /** A plain copy of every value, to send between workers. */
  snapshot(): MetricsSnapshot {
    return {
      connectionsActive: this.connectionsActive,
      linesTotal: this.linesTotal,
      bytesReceived: this.bytesReceived,
      bytesSent: this.bytesSent,
      draining: this.draining,
      healthChecks: this.healthChecks,
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
    this.healthChecks += other.healthChecks;
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
      "# HELP lineserver_connections_active Connections being served now (balancer health checks included; sockets still in their PROXY header or TLS handshake hold a slot but are not counted). Alert when near --max-connections.",
      "# TYPE lineserver_connections_active gauge",
      `lineserver_connections_active ${this.connectionsActive}`,
      "# HELP lineserver_connections_total Connections ended, by how they ended, counted once closed (clients never admitted included). Alert on forced rising (drains do not finish in --shutdown-timeout).",
      "# TYPE lineserver_connections_total counter",
      ...OUTCOMES.map((o) =>
        `lineserver_connections_total{outcome="${o}"} ${
          this.connectionsClosed[o]
        }`
      ),
      "# HELP lineserver_lines_total Request lines answered (too-long lines included).",
      "# TYPE lineserver_lines_total counter",
      `lineserver_lines_total ${this.linesTotal}`,
      "# HELP lineserver_errors_total Errors, by kind, counted when they happen. Kinds named like an outcome of lineserver_connections_total count the same clients (the connection closes a moment later). Alert on handler_fault above 0 (a bug), refused_busy rising (the server is full), proxy_header_invalid above 0.",
      "# TYPE lineserver_errors_total counter",
      ...ERROR_KINDS.map((k) =>
        `lineserver_errors_total{kind="${k}"} ${this.errors[k]}`
      ),
      "# HELP lineserver_accept_errors_total Failed accepts, by kind. peer_reset is harmless; alert on exhausted above 0 (out of file descriptors: raise the limit).",
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
      "# HELP lineserver_health_checks_total Balancer health checks (PROXY v2 LOCAL connections): sent nothing they do not ask for, not counted in lineserver_connections_total.",
      "# TYPE lineserver_health_checks_total counter",
      `lineserver_health_checks_total ${this.healthChecks}`,
      "# HELP lineserver_log_lines_dropped_total Log lines not written because stderr was not read fast enough, by the whole process (the log says how many once writing resumes). Alert above 0: whatever reads the log is stuck or too slow.",
      "# TYPE lineserver_log_lines_dropped_total counter",
      `lineserver_log_lines_dropped_total ${logLinesDropped()}`,
      "# HELP lineserver_draining 1 while the server is shutting down. Alert when 1 for longer than --shutdown-timeout (a stuck stop).",
      "# TYPE lineserver_draining gauge",
      `lineserver_draining ${this.draining}`,
    ];
    return lines.join("\n") + "\n";
  }
}

function zeroed<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

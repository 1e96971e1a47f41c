/**
 * The admin HTTP endpoint (`--admin-port`): `GET /healthz` for load balancers and
 * orchestrators, `GET /metrics` for Prometheus. It knows nothing about
 * connections; the server hands it two callbacks.
 *
 * It is a small HTTP/1.1 server of its own on the same kind of listener as
 * the line port, so running out of file descriptors stalls it (and it
 * resumes once they are free) instead of ending the process. Probes come all the time, so
 * it holds few connections at once, each for a bounded time: one request per
 * connection, a head of at most 8 KiB that must arrive within a deadline,
 * then the answer and `Connection: close`.
 *
 * @module
 */
import type net from "node:net";
import { getLogger, type Logger } from "@logtape/logtape";
import { ServerMetrics } from "./metrics.ts";
import { formatAddr, TcpListener } from "./transport.ts";
import {
  formatResponse,
  type HttpResponse,
  type RequestHead,
} from "./http_request.ts";
import { renderProcessMetrics } from "./process_metrics.ts";
import { AdminConnection, type ReceivedHead } from "./admin_connection.ts";

/** The Prometheus text exposition format, version 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * How many admin connections are served at once by default. A few probes
 * and a scraper need a handful; each answer takes about a millisecond.
 */
export const ADMIN_MAX_CONNECTIONS = 16;
/** How long a client has by default, from accept, to send its whole request head. */
export const ADMIN_REQUEST_TIMEOUT_MS = 10_000;

/** Options for {@linkcode startAdminServer}. */
export interface AdminServerOptions {
  /** Address to bind (the server's `--host`). */
  hostname: string;
  /** Port to bind; 0 picks a free one (read it from `addr`). */
  port: number;
  /** True from the first shutdown signal on: `/healthz` then answers 503. */
  isDraining: () => boolean;
  /**
   * The server's own `/metrics` series, in the Prometheus text format. The
   * process's memory and descriptors are added after them.
   */
  renderMetrics: () => string | Promise<string>;
  /** Aborting it shuts the admin server down, like `shutdown()`. */
  signal?: AbortSignal;
  /** Called once the listener is bound, with the real address. */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * Connections served at once (default {@linkcode ADMIN_MAX_CONNECTIONS});
   * one more is closed as soon as it is accepted, unanswered.
   */
  maxConnections?: number;
  /**
   * Milliseconds from accept until the request head must be complete
   * (default {@linkcode ADMIN_REQUEST_TIMEOUT_MS}); then the connection is
   * closed unanswered.
   */
  requestTimeoutMs?: number;
  /** Where accept failures and a full admin port are logged (default `lineserver.admin`). */
  logger?: Logger;
}

/** A running admin server. */
export interface AdminServer {
  /** The bound address, with the real port. */
  readonly addr: Deno.NetAddr;
  /** Settles once the admin server has stopped, however that happened. */
  readonly finished: Promise<void>;
  /**
   * Stops listening, closes connections still sending their request, lets
   * those being answered finish, and waits for them.
   */
  shutdown(): Promise<void>;
  /** Same as `shutdown()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";

function text(
  body: string,
  status: number,
  headers: Record<string, string> = {},
): HttpResponse {
  return {
    status,
    headers: { "content-type": TEXT, "cache-control": "no-store", ...headers },
    body,
  };
}

/**
 * Starts the admin HTTP server. Rejects with `Deno.errors.AddrInUse` when
 * the port is taken. Requests are not logged. Keep it running through the
 * drain (so `/healthz` can say `draining`) and shut it down last.
 *
 * @example Serve health and metrics on a free port
 * ```ts
 * import assert from "node:assert/strict";
 * import { startAdminServer } from "./admin.ts";
 *
 * let draining = false;
 * await using admin = await startAdminServer({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   isDraining: () => draining,
 *   renderMetrics: () => "lineserver_draining 0\n",
 * });
 * const url = `http://127.0.0.1:${admin.addr.port}`;
 * const ok = await fetch(`${url}/healthz`);
 * assert.equal(ok.status, 200);
 * assert.equal(await ok.text(), "ok");
 * draining = true;
 * const busy = await fetch(`${url}/healthz`);
 * assert.equal(busy.status, 503);
 * assert.equal(await busy.text(), "draining");
 * const metrics = await (await fetch(`${url}/metrics`)).text();
 * assert.match(metrics, /^lineserver_draining 0\n/);
 * assert.match(metrics, /^process_resident_memory_bytes \d+$/m);
 * ```
 */
export async function startAdminServer(
  options: AdminServerOptions,
): Promise<AdminServer> {
  const logger = options.logger ?? getLogger(["lineserver", "admin"]);
  // The listener counts its failed accepts here; /metrics shows them apart
  // from the line port's.
  const acceptMetrics = new ServerMetrics();
  const listener = await TcpListener.listen({
    hostname: options.hostname,
    port: options.port,
    // A handful of small requests: the ordinary read path is simplest.
    sharedReadBuffer: false,
    logger,
    metrics: acceptMetrics,
  });
  const server = new AdminHttpServer(listener, acceptMetrics, {
    ...options,
    logger,
  });
  options.onListen?.(server.addr);
  return server;
}

class AdminHttpServer implements AdminServer {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;
  readonly #listener: TcpListener;
  readonly #acceptMetrics: ServerMetrics;
  readonly #options: AdminServerOptions & { logger: Logger };
  readonly #maxConnections: number;
  /** Accepted and not yet closed; one is removed as its socket closes. */
  readonly #connections = new Set<AdminConnection>();
  /**
   * Connections closed unanswered since the port last filled up, or
   * undefined while it has not: an episode is logged when it begins and
   * when the port is empty again, not once per connection.
   */
  #refusedWhileFull: number | undefined;
  #stopping = false;

  constructor(
    listener: TcpListener,
    acceptMetrics: ServerMetrics,
    options: AdminServerOptions & { logger: Logger },
  ) {
    this.#listener = listener;
    this.#acceptMetrics = acceptMetrics;
    this.#options = options;
    this.#maxConnections = options.maxConnections ?? ADMIN_MAX_CONNECTIONS;
    this.addr = { transport: "tcp", ...listener.addr };
    const onAbort = () => void this.shutdown();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.finished = this.#run().finally(() =>
      options.signal?.removeEventListener("abort", onAbort)
    );
    if (options.signal?.aborted) onAbort();
  }

  async #run() {
    for await (const socket of this.#listener) this.#admit(socket);
    await Promise.all([...this.#connections].map((c) => c.closed));
  }

  #admit(socket: net.Socket) {
    if (this.#stopping) return void socket.destroy();
    if (this.#connections.size >= this.#maxConnections) {
      if (this.#refusedWhileFull === undefined) {
        this.#refusedWhileFull = 0;
        this.#options.logger.warn(
          "admin port {address}: {max} connections open, closing new ones unanswered",
          { address: formatAddr(this.addr), max: this.#maxConnections },
        );
      }
      this.#refusedWhileFull++;
      socket.destroy();
      return;
    }
    const connection = new AdminConnection(socket, {
      requestTimeoutMs: this.#options.requestTimeoutMs ??
        ADMIN_REQUEST_TIMEOUT_MS,
      answer: (head) => this.#answer(head),
    });
    this.#connections.add(connection);
    connection.closed.then(() => {
      this.#connections.delete(connection);
      if (this.#connections.size === 0) this.#endFullEpisode();
    });
  }

  #endFullEpisode() {
    if (this.#refusedWhileFull === undefined) return;
    this.#options.logger.warn(
      "admin port {address}: free again; {refused} connections were closed unanswered while it was full",
      { address: formatAddr(this.addr), refused: this.#refusedWhileFull },
    );
    this.#refusedWhileFull = undefined;
  }

  /** The bytes that answer a request head, or a broken one. */
  async #answer(parsed: ReceivedHead): Promise<Uint8Array> {
    if (parsed.kind === "invalid") {
      return formatResponse(text("bad request\n", 400));
    }
    let response: HttpResponse;
    try {
      response = await this.#route(parsed.head);
    } catch (error) {
      this.#options.logger.error("admin request failed: {error}", {
        error: String(error),
      });
      response = text("internal error\n", 500);
    }
    return formatResponse(response, {
      omitBody: parsed.head.method === "HEAD",
    });
  }

  async #route(head: RequestHead): Promise<HttpResponse> {
    if (head.path !== "/healthz" && head.path !== "/metrics") {
      return text("not found\n", 404);
    }
    if (head.method !== "GET" && head.method !== "HEAD") {
      return text("method not allowed\n", 405, { allow: "GET, HEAD" });
    }
    if (head.path === "/healthz") {
      return this.#options.isDraining()
        ? text("draining", 503)
        : text("ok", 200);
    }
    const own = await this.#options.renderMetrics();
    const body = (own === "" || own.endsWith("\n") ? own : `${own}\n`) +
      renderAcceptErrors(this.#acceptMetrics) + renderProcessMetrics();
    return text(body, 200, { "content-type": METRICS_CONTENT_TYPE });
  }

  shutdown(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      this.#listener.close();
      for (const connection of this.#connections) connection.stop();
    }
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

/** The admin listener's failed accepts, apart from the line port's. */
function renderAcceptErrors(metrics: ServerMetrics): string {
  const name = "lineserver_admin_accept_errors_total";
  return [
    `# HELP ${name} Failed accepts on the admin port, by kind. Alert on exhausted above 0 (out of file descriptors: raise the limit).`,
    `# TYPE ${name} counter`,
    ...Object.entries(metrics.acceptErrors).map(([kind, n]) =>
      `${name}{kind="${kind}"} ${n}`
    ),
  ].join("\n") + "\n";
}

/**
 * The admin HTTP endpoint (`--admin-port`): `GET /healthz` for load balancers and
 * orchestrators, `GET /metrics` for Prometheus. It knows nothing about
 * connections; the server hands it two callbacks.
 *
 * @module
 */

/** The Prometheus text exposition format, version 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Options for {@linkcode startAdminServer}. */
export interface AdminServerOptions {
  /** Address to bind (the server's `--host`). */
  hostname: string;
  /** Port to bind; 0 picks a free one (read it from `addr`). */
  port: number;
  /** True from the first shutdown signal on: `/healthz` then answers 503. */
  isDraining: () => boolean;
  /** The `/metrics` body, in the Prometheus text format. */
  renderMetrics: () => string | Promise<string>;
  /** Aborting it shuts the admin server down, like `shutdown()`. */
  signal?: AbortSignal;
  /** Called once the listener is bound, with the real address. */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** A running admin server. */
export interface AdminServer {
  /** The bound address, with the real port. */
  readonly addr: Deno.NetAddr;
  /** Settles once the admin server has stopped, however that happened. */
  readonly finished: Promise<void>;
  /** Stops listening and waits for requests in progress to finish. */
  shutdown(): Promise<void>;
  /** Same as `shutdown()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";

function text(
  body: string,
  status: number,
  headers: Record<string, string> = {},
) {
  return new Response(body, {
    status,
    headers: { "content-type": TEXT, "cache-control": "no-store", ...headers },
  });
}

/** Answers one admin request. */
async function handleAdminRequest(
  request: Request,
  options: Pick<AdminServerOptions, "isDraining" | "renderMetrics">,
): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (path !== "/healthz" && path !== "/metrics") {
    return text("not found\n", 404);
  }
  // HEAD is GET without a body (Deno.serve drops the body for HEAD).
  if (request.method !== "GET" && request.method !== "HEAD") {
    return text("method not allowed\n", 405, { allow: "GET, HEAD" });
  }
  if (path === "/healthz") {
    return options.isDraining() ? text("draining", 503) : text("ok", 200);
  }
  return text(await options.renderMetrics(), 200, {
    "content-type": METRICS_CONTENT_TYPE,
  });
}

/**
 * Starts the admin HTTP server. Binding happens synchronously, so a port in
 * use throws `Deno.errors.AddrInUse` from this call. Requests are not logged.
 * Keep it running through the drain (so `/healthz` can say `draining`) and
 * shut it down last.
 *
 * @example Serve health and metrics on a free port
 * ```ts
 * import assert from "node:assert/strict";
 * import { startAdminServer } from "./admin.ts";
 *
 * let draining = false;
 * const admin = startAdminServer({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   isDraining: () => draining,
 *   renderMetrics: () => "lineserver_draining 0\n",
 * });
 * const url = `http://127.0.0.1:${admin.addr.port}/healthz`;
 * const ok = await fetch(url);
 * assert.equal(ok.status, 200);
 * assert.equal(await ok.text(), "ok");
 * draining = true;
 * const busy = await fetch(url);
 * assert.equal(busy.status, 503);
 * assert.equal(await busy.text(), "draining");
 * await admin.shutdown();
 * ```
 */
export function startAdminServer(options: AdminServerOptions): AdminServer {
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    signal: options.signal,
    // Passing onListen also silences Deno.serve's own "Listening on" line.
    onListen: (addr) => options.onListen?.(addr as Deno.NetAddr),
  }, (request) => handleAdminRequest(request, options));
  const finished = server.finished.then(() => {});
  const shutdown = async () => {
    await server.shutdown();
    await finished;
  };
  return {
    addr: server.addr as Deno.NetAddr,
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

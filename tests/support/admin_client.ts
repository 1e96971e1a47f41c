/**
 * Talks to the admin HTTP endpoint (`--admin-port`): health checks and
 * Prometheus scrapes, each bounded in time, each body consumed.
 *
 * @module
 */
import { pollUntil, withTimeout } from "./deadline.ts";

/** Status and body of one HTTP response. */
export interface HttpResult {
  status: number;
  headers: Headers;
  body: string;
}

/** `fetch`es `http://127.0.0.1:port` + `path` and reads the whole body. */
export async function httpGet(
  port: number,
  path: string,
  options: { method?: string; timeoutMs?: number } = {},
): Promise<HttpResult> {
  const controller = new AbortController();
  const request = (async () => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method: options.method ?? "GET",
      signal: controller.signal,
    });
    return {
      status: response.status,
      headers: response.headers,
      body: await response.text(),
    };
  })();
  try {
    return await withTimeout(
      request,
      options.timeoutMs ?? 5000,
      `${options.method ?? "GET"} ${path} on port ${port}`,
    );
  } catch (error) {
    controller.abort();
    await request.catch(() => {});
    throw error;
  }
}

/** One scrape: sample values by series (`name` or `name{labels}`) and declared types. */
export interface Scrape {
  samples: Map<string, number>;
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$/;
const TYPE = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/;

/**
 * Parses the Prometheus text format (0.0.4). Labels are kept as written, so
 * write series keys the way the server writes them, e.g.
 * `lineserver_errors_total{kind="reset"}`. Throws on a malformed line.
 */
export function parsePrometheusText(text: string): Scrape {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const type = line.match(TYPE);
      if (type) types.set(type[1], type[2]);
      continue;
    }
    const match = line.match(SAMPLE);
    if (!match) {
      throw new Error(`Malformed metrics line: ${JSON.stringify(line)}`);
    }
    const key = match[1] + (match[2] ?? "");
    if (samples.has(key)) throw new Error(`Duplicate series: ${key}`);
    samples.set(key, Number(match[3]));
  }
  return { samples, types };
}

/** GETs `/metrics` and parses it; fails unless the status is 200. */
export async function scrapeMetrics(port: number): Promise<Scrape> {
  const result = await httpGet(port, "/metrics");
  if (result.status !== 200) {
    throw new Error(`/metrics answered ${result.status}: ${result.body}`);
  }
  return parsePrometheusText(result.body);
}

/**
 * Scrapes `/metrics` every 25 ms until the value of `series` (written as the
 * server writes it, e.g. `lineserver_errors_total{kind="reset"}`) satisfies
 * `accept`, and returns that value; fails on timeout. The way to wait for
 * the server to have done something that the wire does not show (read
 * bytes, closed a connection) without guessing how long it takes.
 */
export async function waitForMetric(
  port: number,
  series: string,
  accept: (value: number) => boolean,
  timeoutMs = 10000,
): Promise<number> {
  const value = await pollUntil(
    `${series} on port ${port}`,
    async () => (await scrapeMetrics(port)).samples.get(series),
    (value) => value !== undefined && accept(value),
    timeoutMs,
  );
  return value!;
}

/**
 * Polls `/healthz` every 25 ms until `accept(result)` holds; fails on timeout.
 * A refused connection counts as a result with status 0.
 */
export function waitForHealth(
  port: number,
  accept: (result: HttpResult) => boolean,
  timeoutMs = 10000,
): Promise<HttpResult> {
  return pollUntil(
    `/healthz on port ${port}`,
    async () => {
      try {
        return await httpGet(port, "/healthz", { timeoutMs: 2000 });
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // fetch: connection failed
        return { status: 0, headers: new Headers(), body: String(error) };
      }
    },
    accept,
    timeoutMs,
  );
}

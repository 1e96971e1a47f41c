/**
 * How a Redis URL is shown in logs and on the admin port. Its own module so
 * that the command line can show it without loading the Redis client.
 *
 * @module
 */

/**
 * `url` as it may be shown: without user name and password.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redisWhere } from "./redis_url.ts";
 * assert.equal(redisWhere("redis://:secret@cache:6380/2"), "redis://cache:6380/2");
 * ```
 */
export function redisWhere(url: string): string {
  const parsed = new URL(url);
  const path = parsed.pathname === "/" ? "" : parsed.pathname;
  return `${parsed.protocol}//${parsed.host}${path}`;
}

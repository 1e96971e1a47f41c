/**
 * A fixed-size latency histogram (log-linear buckets, microseconds) that load
 * workers fill without allocating and the orchestrator merges by adding counts.
 *
 * Values below 128 µs have their own bucket; above, each power of two is split
 * into 64 buckets, so a reported percentile is within 1.6 % of the true value.
 * The exact maximum is tracked separately.
 *
 * @module
 */

/** Number of buckets: enough for values up to 2^31 µs (about 35 minutes). */
export const BUCKETS = 128 + 24 * 64;

/** Bucket index for a latency of `us` microseconds. */
export function bucketOf(us: number): number {
  const v = us <= 0 ? 0 : Math.min(Math.floor(us), 0x7fffffff);
  if (v < 128) return v;
  const msb = 31 - Math.clz32(v);
  const shift = msb - 6;
  return 128 + (shift - 1) * 64 + ((v >>> shift) - 64);
}

/** Middle of the value range that bucket `index` stands for, in microseconds. */
export function bucketValue(index: number): number {
  if (index < 128) return index + 0.5;
  const shift = Math.floor((index - 128) / 64) + 1;
  const mantissa = ((index - 128) % 64) + 64;
  return (mantissa + 0.5) * 2 ** shift;
}

/** Latency counts plus the exact maximum; plain data so it can be posted between workers. */
export interface LatencyHistogram {
  counts: Float64Array;
  total: number;
  maxUs: number;
}

/** An empty histogram. */
export function newHistogram(): LatencyHistogram {
  return { counts: new Float64Array(BUCKETS), total: 0, maxUs: 0 };
}

/** Records one latency. */
export function record(h: LatencyHistogram, us: number): void {
  h.counts[bucketOf(us)]++;
  h.total++;
  if (us > h.maxUs) h.maxUs = us;
}

/** Adds `from` into `into`. */
export function merge(into: LatencyHistogram, from: LatencyHistogram): void {
  for (let i = 0; i < BUCKETS; i++) into.counts[i] += from.counts[i];
  into.total += from.total;
  if (from.maxUs > into.maxUs) into.maxUs = from.maxUs;
}

/** The `q` quantile (0..1) in microseconds, or NaN when nothing was recorded. */
export function quantile(h: LatencyHistogram, q: number): number {
  if (h.total === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * h.total));
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += h.counts[i];
    if (seen >= rank) return Math.min(bucketValue(i), h.maxUs);
  }
  return h.maxUs;
}

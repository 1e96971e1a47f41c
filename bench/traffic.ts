/**
 * The request traffic: a fixed, seeded pool of calculator lines (sum mode) and
 * the exact reply each one must get. The same request bytes are sent to the
 * raw echo reference, whose expected reply is the request itself.
 *
 * @module
 */

/** Greeting the calculator sends first on every connection. */
export const CALC_WELCOME = "<welcome: starting in sum mode>\r\n";

/** One request line (with its `\r\n`) and the reply line it must get (with `\r\n`). */
export interface Exchange {
  request: string;
  reply: string;
}

/** Which server a scenario drives. */
export type Target = "calc" | "echo";

/**
 * mulberry32: a tiny deterministic PRNG, so every run sends the same lines
 * (the hostile-input test uses it too, so a printed seed replays a failure).
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Builds `size` sum-mode lines: 1 to 8 integers, mostly small, some negative,
 * some with spaces after the comma, one in 16 with a 20-digit integer (exact
 * arithmetic). Lines are `\r\n` terminated.
 */
export function calculatorPool(size = 256, seed = 5): Exchange[] {
  const random = prng(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const pool: Exchange[] = [];
  for (let i = 0; i < size; i++) {
    const count = 1 + pick(8);
    const items: string[] = [];
    let sum = 0n;
    for (let k = 0; k < count; k++) {
      let digits: string;
      if (i % 16 === 15 && k === 0) {
        digits = String(1 + pick(9));
        for (let d = 0; d < 19; d++) digits += String(pick(10));
      } else {
        digits = String(pick(k % 2 === 0 ? 100 : 100000));
      }
      const negative = pick(6) === 0;
      const value = BigInt(digits) * (negative ? -1n : 1n);
      sum += value;
      const spaced = i % 8 === 3 && k > 0 ? " " : "";
      items.push(spaced + (negative ? "-" : "") + digits);
    }
    pool.push({
      request: items.join(",") + "\r\n",
      reply: `Sum of input integers: '${sum}'\r\n`,
    });
  }
  return pool;
}

/** The same requests with echo's expected replies (the request bytes themselves). */
export function echoPool(calc: Exchange[]): Exchange[] {
  return calc.map(({ request }) => ({ request, reply: request }));
}

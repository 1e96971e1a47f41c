/**
 * The calculator protocol: per-connection sum or product mode over
 * comma-separated integers, with exact (BigInt) arithmetic.
 *
 * Pure: no sockets, no timers.
 *
 * @module
 */
import type { LineProtocol, LineSession } from "./session.ts";

/** Byte-exact replies of the calculator protocol (without the CRLF). */
export const CalculatorReplies = {
  welcome: "<welcome: starting in sum mode>",
  sumMode: "<switching to sum mode>",
  productMode: "<switching to product mode>",
  help:
    "Commands: sum, product, quit, help. Or send integers separated by commas, e.g. 1,2,4",
  quit: "connection closed",
  inputError: "ERROR. Enter only integers separated by commas",
} as const;

/** The operation a calculator connection applies to a number list. */
export type CalculatorMode = "sum" | "product";

const SPACE = 0x20;
const TAB = 0x09;
const PLUS = 0x2b;
const MINUS = 0x2d;
const COMMA = 0x2c;
const UNDERSCORE = 0x5f;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
/** Up to 15 decimal digits always fit a double exactly (2^53 has 16). */
const MAX_NUMBER_DIGITS = 15;

/**
 * Folds the integers of `line` into their sum or product, exactly.
 *
 * The grammar is Python's `int()` for ASCII base-10 input, applied to each
 * comma-separated item: optional spaces/tabs around it, an optional sign,
 * digits with single underscores only between digits. Returns the result in
 * decimal, or `undefined` if any item is not such an integer (or the line is
 * empty). A hand-written scanner: linear time whatever the input, no regex
 * backtracking, and no per-item allocation for numbers of up to 15 digits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { evaluateIntegers } from "./calculator.ts";
 * assert.equal(evaluateIntegers("1, 2,4", "sum"), "7");
 * assert.equal(
 *   evaluateIntegers("99999999999,99999999999", "product"),
 *   "9999999999800000000001",
 * );
 * assert.equal(evaluateIntegers("1.5", "sum"), undefined);
 * ```
 */
export function evaluateIntegers(
  line: string,
  mode: CalculatorMode,
): string | undefined {
  const length = line.length;
  if (length === 0) return undefined;
  const sum = mode === "sum";
  // Exact in a double until an intermediate result leaves the safe range;
  // only then (or for a big item) is a BigInt fold allocated.
  let small = sum ? 0 : 1;
  let fold: SumFold | ProductFold | null = null;
  let pos = 0;
  while (true) {
    let c = line.charCodeAt(pos);
    while (c === SPACE || c === TAB) c = line.charCodeAt(++pos);
    let negative = false;
    if (c === PLUS || c === MINUS) {
      negative = c === MINUS;
      c = line.charCodeAt(++pos);
    }
    if (!(c >= DIGIT_0 && c <= DIGIT_9)) return undefined;
    const digitsStart = pos;
    let digits = 0;
    let value = 0;
    let afterUnderscore = false;
    while (pos < length) {
      if (c >= DIGIT_0 && c <= DIGIT_9) {
        if (digits < MAX_NUMBER_DIGITS) value = value * 10 + (c - DIGIT_0);
        digits++;
        afterUnderscore = false;
      } else if (c === UNDERSCORE && !afterUnderscore) {
        afterUnderscore = true;
      } else {
        break;
      }
      c = line.charCodeAt(++pos);
    }
    if (afterUnderscore) return undefined;
    if (negative) value = -value;
    if (digits <= MAX_NUMBER_DIGITS && fold === null) {
      const next = sum ? small + value : small * value;
      if (Number.isSafeInteger(next)) {
        small = next;
      } else {
        fold = sum ? new SumFold(small) : new ProductFold(small);
        fold.addNumber(value);
      }
    } else {
      fold ??= sum ? new SumFold(small) : new ProductFold(small);
      if (digits <= MAX_NUMBER_DIGITS) {
        fold.addNumber(value);
      } else {
        const text = line.slice(digitsStart, pos);
        const big = BigInt(
          digits === pos - digitsStart ? text : text.replaceAll("_", ""),
        );
        fold.addBigInt(negative ? -big : big);
      }
    }
    while (c === SPACE || c === TAB) c = line.charCodeAt(++pos);
    if (pos === length) return fold === null ? String(small) : fold.result();
    if (c !== COMMA) return undefined;
    pos++;
  }
}

/** Accumulates in doubles while exact, then in BigInt. */
class SumFold {
  #small: number;
  #big: bigint | null = null;

  constructor(start: number) {
    this.#small = start;
  }

  addNumber(value: number) {
    if (this.#big === null) {
      const next = this.#small + value;
      if (Number.isSafeInteger(next)) {
        this.#small = next;
        return;
      }
      this.#big = BigInt(this.#small);
    }
    this.#big += BigInt(value);
  }

  addBigInt(value: bigint) {
    this.#big = (this.#big ?? BigInt(this.#small)) + value;
  }

  result(): string {
    return this.#big === null ? String(this.#small) : this.#big.toString();
  }
}

/**
 * Multiplies in doubles while exact; big factors go through a balanced
 * product tree (a binary counter of partial products) so that thousands of
 * factors cost O(M(n) log n) rather than quadratic time.
 */
class ProductFold {
  #small: number;
  /** Partial products; #weights[i] counts the factors folded into #partials[i]. */
  #partials: bigint[] = [];
  #weights: number[] = [];

  constructor(start: number) {
    this.#small = start;
  }

  addNumber(value: number) {
    const next = this.#small * value;
    if (Number.isSafeInteger(next)) {
      this.#small = next;
      return;
    }
    this.#pushBig(BigInt(this.#small));
    this.#small = value;
  }

  addBigInt(value: bigint) {
    this.#pushBig(value);
  }

  #pushBig(value: bigint) {
    let weight = 1;
    while (
      this.#weights.length > 0 &&
      this.#weights[this.#weights.length - 1] === weight
    ) {
      value *= this.#partials.pop()!;
      weight += this.#weights.pop()!;
    }
    this.#partials.push(value);
    this.#weights.push(weight);
  }

  result(): string {
    if (this.#partials.length === 0) return String(this.#small + 0);
    let product = BigInt(this.#small);
    for (let i = this.#partials.length - 1; i >= 0; i--) {
      product *= this.#partials[i];
    }
    return product.toString();
  }
}

/**
 * One client's calculator: its mode starts as sum and changes only by its
 * own `sum` and `product` commands.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CalculatorSession } from "./calculator.ts";
 * const session = new CalculatorSession();
 * assert.equal(session.reply("product"), "<switching to product mode>");
 * assert.equal(session.reply("1,2,4"), "Product of input integers: '8'");
 * ```
 */
export class CalculatorSession implements LineSession {
  #mode: CalculatorMode = "sum";
  #ended = false;

  /** The welcome line sent when the connection opens. */
  get greeting(): string {
    return CalculatorReplies.welcome;
  }

  /** True once the client sent `quit`. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The current mode. */
  get mode(): CalculatorMode {
    return this.#mode;
  }

  /** Answers one framed request line. */
  reply(line: string): string {
    switch (line) {
      case "sum":
        this.#mode = "sum";
        return CalculatorReplies.sumMode;
      case "product":
        this.#mode = "product";
        return CalculatorReplies.productMode;
      case "help":
        return CalculatorReplies.help;
      case "quit":
        this.#ended = true;
        return CalculatorReplies.quit;
    }
    const result = evaluateIntegers(line, this.#mode);
    if (result === undefined) return CalculatorReplies.inputError;
    return this.#mode === "sum"
      ? `Sum of input integers: '${result}'`
      : `Product of input integers: '${result}'`;
  }
}

/**
 * The calculator protocol (the default).
 *
 * @example
 * ```ts
 * import { calculatorProtocol, startServer } from "../mod.ts";
 * await using server = await startServer({ port: 0, protocol: calculatorProtocol });
 * ```
 */
export const calculatorProtocol: LineProtocol = {
  name: "calc",
  createSession: () => new CalculatorSession(),
};

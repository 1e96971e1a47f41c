/**
 * What a session may answer, checked: a library must contain whatever a
 * protocol returns, so a value it cannot send is an error of that
 * connection (a fault, logged with what was returned), never of the process.
 *
 * @module
 */
import { describeValue, type FrameEncoder } from "./framing.ts";

/**
 * The text a reply stands for, each line ended by `encoder`: "" for
 * `undefined` or an empty array. Throws a `TypeError` for anything else than
 * a string, an array of strings or `undefined`, or for a line that would not
 * arrive as one line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameEncoder } from "./framing.ts";
 * import { replyText } from "./reply_value.ts";
 * const encoder = new FrameEncoder();
 * assert.equal(replyText(["a", "b"], encoder), "a\r\nb\r\n");
 * assert.equal(replyText(undefined, encoder), "");
 * assert.throws(() => replyText(null, encoder), /received null/);
 * assert.throws(() => replyText("a\nb", encoder), /contains LF/);
 * ```
 */
export function replyText(reply: unknown, encoder: FrameEncoder): string {
  if (reply === undefined) return "";
  if (typeof reply === "string") return encoder.line(reply);
  if (!Array.isArray(reply)) {
    throw new TypeError(
      `A reply must be a string, an array of strings or undefined; received ${
        describeValue(reply)
      }`,
    );
  }
  for (const line of reply) encoder.check(line);
  let text = "";
  for (const line of reply) text += line + encoder.ending;
  return text;
}

/**
 * True for a promise or any object with a `then` method (which is awaited
 * like one).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isThenable } from "./reply_value.ts";
 * assert.equal(isThenable(Promise.resolve(1)), true);
 * assert.equal(isThenable({ then: () => {} }), true);
 * assert.equal(isThenable("x"), false);
 * ```
 */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null &&
    (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function";
}

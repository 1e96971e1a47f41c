/**
 * The calculator's reply lines, without their `\r\n`, and `ask`,
 * the one-request-one-reply assertion the socket tests share.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { LineClient } from "./line_client.ts";

/** The calculator's greeting. */
export const WELCOME = "<welcome: starting in sum mode>";
/** The reply to `sum`. */
export const TO_SUM = "<switching to sum mode>";
/** The reply to `product`. */
export const TO_PRODUCT = "<switching to product mode>";
/** The reply to `help`. */
export const HELP =
  "Commands: sum, product, quit, help. Or send integers separated by commas, e.g. 1,2,4";
/** The reply to `quit`, the last line before the server closes. */
export const BYE = "connection closed";
/** The reply to anything that is neither a command nor a number list. */
export const NOT_INTEGERS = "ERROR. Enter only integers separated by commas";

/** The reply to a number list in sum mode whose sum is `n`. */
export const sum = (n: string | number | bigint) =>
  `Sum of input integers: '${n}'`;
/** The reply to a number list in product mode whose product is `n`. */
export const product = (n: string | number | bigint) =>
  `Product of input integers: '${n}'`;
/** The reply to a line longer than `max` bytes (`--max-line-bytes`). */
export const tooLong = (max: number) =>
  `ERROR. Line too long (max ${max} bytes)`;

/**
 * Sends `request` and asserts the next reply line is exactly `expected`
 * (read within `timeoutMs`, the client's default unless given).
 */
export async function ask(
  client: LineClient,
  request: string,
  expected: string,
  timeoutMs?: number,
): Promise<void> {
  await client.send(request);
  assert.equal(
    await client.readLine(timeoutMs),
    expected,
    `reply to ${JSON.stringify(request)}`,
  );
}

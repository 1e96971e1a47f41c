/**
 * What the bulk-push server and its clients agree on: the terminator, the
 * three messages of exactly 3 MiB, and the acknowledgement of each.
 *
 * @module
 */

/** Ends every frame, both ways. */
export const TERMINATOR = "\r<--EOM-->\r";
/** Every message is exactly this many bytes (3 MiB), terminator excluded. */
export const MESSAGE_BYTES = 3 * 1024 * 1024;
/** Messages pushed to each client after its `start`. */
export const MESSAGES = 3;
/** What a client sends to ask for the messages. */
export const START = "start";

/**
 * Message `n` (from 1): `head`, pseudo-random lower-case letters seeded by
 * `n`, `tail`. A byte lost, repeated or taken from another message shows.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { message, MESSAGE_BYTES } from "./messages.ts";
 *
 * const first = message(1);
 * assert.equal(first.length, MESSAGE_BYTES);
 * assert.ok(first.startsWith("head") && first.endsWith("tail"));
 * assert.notEqual(first, message(2));
 * ```
 */
export function message(n: number): string {
  const bytes = new Uint8Array(MESSAGE_BYTES);
  let state = Math.imul(n, 2654435761) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    bytes[i] = 0x61 + (state >>> 16) % 26;
  }
  bytes.set([0x68, 0x65, 0x61, 0x64], 0); // "head"
  bytes.set([0x74, 0x61, 0x69, 0x6c], MESSAGE_BYTES - 4); // "tail"
  return new TextDecoder().decode(bytes);
}

/**
 * The acknowledgement of message `n` ("received n").
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acknowledgement } from "./messages.ts";
 * assert.equal(acknowledgement(2), "已收 2 条。");
 * ```
 */
export function acknowledgement(n: number): string {
  return `已收 ${n} 条。`;
}

/** The message number an acknowledgement names, or undefined. */
export function acknowledged(line: string): number | undefined {
  const match = line.match(/^已收 (\d+) 条。$/);
  return match ? Number(match[1]) : undefined;
}

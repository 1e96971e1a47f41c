/**
 * The names `--protocol` accepts, in one place: the command line, the worker
 * messages and the lookup in `builtinProtocols` all use this list.
 *
 * @module
 */

/** The `--protocol` choices, the default first. */
export const PROTOCOL_NAMES = ["calc", "echo", "chat"] as const;

/** One of {@linkcode PROTOCOL_NAMES}. */
export type ProtocolName = typeof PROTOCOL_NAMES[number];

/**
 * The protocol one server of the command line speaks (the whole process, or
 * one `--workers` thread), with what must be closed once that server has
 * finished: the connection to a shared chat room.
 *
 * @module
 */
import type { LineProtocol } from "./session.ts";
import { createChatProtocol } from "./chat.ts";

/** `--chat-redis` and `--chat-room`. */
export interface SharedChatSettings {
  /** The Redis URL. */
  url: string;
  /** The room's name in it. */
  room: string;
}

/** A protocol made for one server. */
export interface ServedProtocol {
  protocol: LineProtocol;
  /** Called once the server has finished. */
  close(): Promise<void>;
}

/** The shared chat room could not be joined (Redis unreachable): exit 1, not a usage error. */
export class ChatRoomUnreachableError extends Error {
  /** The error's name. */
  override name = "ChatRoomUnreachableError";
}

/**
 * Makes the protocol for one server: `makeProtocol()`, or with `chat`, the
 * chat protocol on a room shared through Redis (joined before this
 * resolves; rejects with {@linkcode ChatRoomUnreachableError}). The Redis
 * client is loaded only then.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { echoProtocol } from "../protocol.ts";
 * import { openProtocol } from "./served_protocol.ts";
 * const served = await openProtocol(() => echoProtocol);
 * assert.equal(served.protocol, echoProtocol);
 * await served.close();
 * ```
 */
export async function openProtocol(
  makeProtocol: () => LineProtocol,
  chat?: SharedChatSettings,
): Promise<ServedProtocol> {
  if (chat === undefined) {
    return { protocol: makeProtocol(), close: () => Promise.resolve() };
  }
  const { RedisChatRoom } = await import("./chat_redis.ts");
  let room;
  try {
    room = await RedisChatRoom.connect({ url: chat.url, room: chat.room });
  } catch (error) {
    throw new ChatRoomUnreachableError((error as Error).message);
  }
  return { protocol: createChatProtocol({ room }), close: () => room.close() };
}

/**
 * The chat protocol: every connection of a server is a member of one room.
 * A line goes to every other member; `/nick NAME`, `/who` and `/quit` are
 * commands. Written only against the public session API (sessions that
 * speak first, push to other connections and hear when theirs ends), so it
 * also serves as its example.
 *
 * @module
 */
import type {
  CloseReason,
  LineConnection,
  LineProtocol,
  LineSession,
  Reply,
} from "./session.ts";
import {
  ChatReplies,
  type ChatRoom,
  ChatUnavailableError,
  LocalChatRoom,
} from "./chat_room.ts";

export { ChatReplies };

/** 1 to 32 ASCII letters, digits, `_` or `-`. */
const VALID_NAME = /^[A-Za-z0-9_-]{1,32}$/;
/**
 * A `/nick` command, well-formed or not: `/nick` alone or followed by a
 * space or tab. (`/nickname` is an unknown command, not a bad name.)
 */
const NICK_COMMAND = /^\/nick(?:[ \t]|$)/;
/**
 * What a relayed line may not carry: C0 controls but TAB, DEL, C1 controls,
 * and the Unicode line and paragraph separators. A client that splits lines
 * on a bare CR (or on U+2028, U+0085, as `str.splitlines()` does) would show
 * `hi\r* guest1 left` as a server line; an escape sequence would drive the
 * reader's terminal.
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNRELAYABLE = /[\0-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/g;

/**
 * `line` as it may be relayed: every character in {@linkcode UNRELAYABLE}
 * replaced by U+FFFD.
 */
function relayable(line: string): string {
  return line.replace(UNRELAYABLE, "\ufffd");
}

/** How much unread chat a member may have waiting before it is disconnected. */
const MAX_QUEUED_BYTES = 1024 * 1024;

/** The reply to an operation of a room that cannot be reached. */
function unavailable(error: unknown): string {
  if (error instanceof ChatUnavailableError) return ChatReplies.unavailable;
  throw error;
}

/**
 * Answers with what `operation` gives (now, or once its promise settles),
 * mapped by `toReply`; a room that cannot be reached is answered
 * `ERROR. Chat is unavailable, try again later`.
 */
function answer<T>(
  operation: () => T | Promise<T>,
  toReply: (value: T) => Reply,
): Reply | Promise<Reply> {
  let value: T | Promise<T>;
  try {
    value = operation();
  } catch (error) {
    return unavailable(error);
  }
  return value instanceof Promise
    ? value.then(toReply, unavailable)
    : toReply(value);
}

const nothing = (): Reply => undefined;

/**
 * One member's view of the room: parses its commands, asks the room, and
 * leaves when its connection ends.
 */
class ChatSession implements LineSession {
  readonly #room: ChatRoom;
  readonly #connection: LineConnection;
  /** Until the room has admitted the member; its lines wait for it. */
  #joining: Promise<void> | undefined;

  constructor(room: ChatRoom, connection: LineConnection) {
    this.#room = room;
    this.#connection = connection;
    const joined = room.join(connection);
    if (joined instanceof Promise) {
      this.#joining = joined.then(() => {
        this.#joining = undefined;
      }, (error) => {
        // Not admitted: nothing else can be done for this member.
        connection.close(unavailable(error));
      });
    }
  }

  reply(line: string): Reply | Promise<Reply> {
    if (line === "") return;
    const joining = this.#joining;
    if (joining !== undefined) return joining.then(() => this.#answer(line));
    return this.#answer(line);
  }

  #answer(line: string): Reply | Promise<Reply> {
    const room = this.#room;
    const connection = this.#connection;
    if (connection.closed) return;
    if (!line.startsWith("/")) {
      return answer(() => room.say(connection, relayable(line)), nothing);
    }
    if (line === "/who") return answer(() => room.who(), (lines) => lines);
    if (line === "/quit") {
      // Announced now, not once the client has closed its side as well.
      room.leave(connection, { quietly: false });
      connection.close(ChatReplies.quit);
      return;
    }
    if (NICK_COMMAND.test(line)) {
      // Exactly one space, then the name.
      const name = line.startsWith("/nick ") ? line.slice("/nick ".length) : "";
      if (!VALID_NAME.test(name)) return ChatReplies.badName;
      return answer(() => room.rename(connection, name), (reply) => reply);
    }
    return ChatReplies.unknownCommand;
  }

  onClose(reason: CloseReason): void {
    // During a shutdown everyone is told the server is going; a member that
    // resets meanwhile is not announced either.
    const shuttingDown = reason === "shutdown" || reason === "forced" ||
      this.#connection.draining;
    this.#room.leave(this.#connection, { quietly: shuttingDown });
  }
}

/**
 * Makes a chat protocol with a room of its own, for one server: start each
 * server with its own `createChatProtocol()`. (A protocol value that held a
 * room would join the members of every server it is given to into one room,
 * and guests are numbered by each server's admission order
 * ({@linkcode LineConnection.id}), so their names would repeat.)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { LineConnection } from "./session.ts";
 * import { createChatProtocol } from "./chat.ts";
 *
 * // Sessions driven by hand; a server does the same over sockets.
 * const inbox: string[] = [];
 * const member = (id: number): LineConnection => ({
 *   id,
 *   peer: { hostname: "127.0.0.1", port: 40000 + id },
 *   closed: false,
 *   send: (...lines) => (inbox.push(...lines.map((l) => `${id} < ${l}`)), true),
 *   draining: false,
 *   drained: () => Promise.resolve(),
 *   readBytes: () => {},
 *   close: () => {},
 * });
 * const chat = createChatProtocol();
 * const alice = chat.createSession(member(1));
 * const bob = chat.createSession(member(2));
 * assert.equal(alice.reply("/nick alice"), "<you are now alice>");
 * assert.equal(bob.reply("hello"), undefined);
 * assert.deepEqual(bob.reply("/who"), ["* 2 online", "* alice", "* guest2"]);
 * bob.onClose?.("peer_closed");
 * assert.deepEqual(inbox, [
 *   "1 < <welcome: you are guest1>",
 *   "2 < <welcome: you are guest2>",
 *   "1 < * guest2 joined",
 *   "2 < * guest1 is now alice",
 *   "1 < guest2: hello",
 *   "1 < * guest2 left",
 * ]);
 * ```
 *
 * @example A server
 * ```ts
 * import { createChatProtocol, startServer } from "../mod.ts";
 * await using server = await startServer({
 *   port: 0,
 *   protocol: createChatProtocol(),
 * });
 * ```
 */
export function createChatProtocol(
  options: { room?: ChatRoom } = {},
): LineProtocol {
  const room = options.room ?? new LocalChatRoom();
  return {
    name: "chat",
    maxQueuedBytes: MAX_QUEUED_BYTES,
    createSession: (connection) => new ChatSession(room, connection),
  };
}

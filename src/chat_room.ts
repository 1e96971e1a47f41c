/**
 * The chat room behind the chat protocol: who is a member, under which
 * name, and how a line reaches the others. {@linkcode ChatRoom} is the
 * interface the protocol speaks to; {@linkcode LocalChatRoom} is the room of
 * one server process (the default). Another implementation can keep the
 * same room over several processes (see `chat_redis.ts`).
 *
 * @module
 */
import type { LineConnection } from "./session.ts";
import { ConnectionGroup } from "./connection_group.ts";

/**
 * Byte-exact lines of the chat protocol (without the CRLF).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ChatReplies } from "./chat_room.ts";
 * assert.equal(ChatReplies.message("alice", "hi"), "alice: hi");
 * assert.equal(ChatReplies.left("guest7"), "* guest7 left");
 * ```
 */
export const ChatReplies = {
  welcome: (name: string) => `<welcome: you are ${name}>`,
  joined: (name: string) => `* ${name} joined`,
  left: (name: string) => `* ${name} left`,
  message: (name: string, line: string) => `${name}: ${line}`,
  renamedYou: (name: string) => `<you are now ${name}>`,
  renamed: (oldName: string, name: string) => `* ${oldName} is now ${name}`,
  online: (count: number) => `* ${count} online`,
  member: (name: string) => `* ${name}`,
  quit: "connection closed",
  nameTaken: (name: string) => `ERROR. Name ${name} is taken`,
  badName: "ERROR. Names are 1-32 letters, digits, _ or -",
  unknownCommand: "ERROR. Unknown command, try /who, /nick NAME or /quit",
  unavailable: "ERROR. Chat is unavailable, try again later",
} as const;

/**
 * Thrown (or rejected with) by a {@linkcode ChatRoom} that cannot be reached
 * right now; the member is answered {@linkcode ChatReplies.unavailable}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ChatUnavailableError } from "./chat_room.ts";
 * assert.ok(new ChatUnavailableError("Redis is down") instanceof Error);
 * ```
 */
export class ChatUnavailableError extends Error {
  /** The error's name. */
  override name = "ChatUnavailableError";
}

/**
 * A chat room: its members, their names, and the delivery of lines between
 * them. Every member receives what the room sends in the order the room
 * decided it, and one sender's lines in the order they were said.
 *
 * An operation answers now or with a promise (a room in another process
 * answers after a round trip); the session reads nothing more from its
 * member until the promise settles, so a member's operations take effect in
 * the order it sent them. An operation that cannot reach the room throws or
 * rejects with {@linkcode ChatUnavailableError}.
 */
export interface ChatRoom {
  /**
   * Admits `member` under a new guest name (`guest<N>`): it receives
   * `<welcome: you are NAME>` before any other line from the room, every
   * other member `* NAME joined`. Settles once it is a member; on
   * {@linkcode ChatUnavailableError} it has been sent nothing.
   */
  join(member: LineConnection): void | Promise<void>;
  /**
   * Sends `line` from `member` to every other member as `NAME: LINE`. A
   * promise means: the members are behind, read nothing more from this
   * sender until it settles (the sender is slowed, not the readers cut).
   */
  say(member: LineConnection, line: string): void | Promise<void>;
  /**
   * Renames `member` to `name` (already checked to be well-formed) unless
   * another member holds it (compared without regard to ASCII case) or it
   * is reserved ({@linkcode isReservedName}); the others hear
   * `* OLD is now NAME`. Returns the reply for `member`.
   */
  rename(member: LineConnection, name: string): string | Promise<string>;
  /** `* K online`, then `* NAME` per member of the room in byte order. */
  who(): string[] | Promise<string[]>;
  /**
   * `member` has gone (or is going): the others hear `* NAME left` once,
   * unless `quietly` (its server is shutting down and says goodbye to its
   * own members itself). Never throws; a member that has already left, or
   * never finished joining, is handled too.
   */
  leave(member: LineConnection, options: { quietly: boolean }): void;
}

/** The names given to new members (`guest7`). */
const GUEST_NAME = /^guest[0-9]+$/i;

/**
 * True if `name` may not be taken by `/nick` from a member now called
 * `current`: `guest` followed by digits, in any case, belongs to new
 * members (but a member may take its own current name again).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isReservedName } from "./chat_room.ts";
 * assert.equal(isReservedName("Guest12", "alice"), true);
 * assert.equal(isReservedName("guest3", "guest3"), false);
 * assert.equal(isReservedName("guest", "alice"), false);
 * ```
 */
export function isReservedName(name: string, current: string): boolean {
  return name !== current && GUEST_NAME.test(name);
}

/** `* K online`, then one `* NAME` per name in byte order. */
export function whoLines(names: string[]): string[] {
  // Names are ASCII, so UTF-16 order (the default sort) is byte order.
  names.sort();
  return [ChatReplies.online(names.length), ...names.map(ChatReplies.member)];
}

/**
 * The room of one server process: members are its connections, guests are
 * numbered by the server's admission order ({@linkcode LineConnection.id}).
 * Use one per server.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { LineConnection } from "./session.ts";
 * import { LocalChatRoom } from "./chat_room.ts";
 *
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
 * const room = new LocalChatRoom();
 * const [alice, bob] = [member(1), member(2)];
 * room.join(alice);
 * room.join(bob);
 * room.say(bob, "hi");
 * assert.equal(room.rename(alice, "alice"), "<you are now alice>");
 * assert.deepEqual(room.who(), ["* 2 online", "* alice", "* guest2"]);
 * assert.deepEqual(inbox, [
 *   "1 < <welcome: you are guest1>",
 *   "2 < <welcome: you are guest2>",
 *   "1 < * guest2 joined",
 *   "1 < guest2: hi",
 *   "2 < * guest1 is now alice",
 * ]);
 * ```
 */
export class LocalChatRoom implements ChatRoom {
  /** Open members, for broadcasting; a closed one is skipped and dropped. */
  readonly #group = new ConnectionGroup();
  /**
   * Every member that has joined and not yet left, by connection. A member
   * whose connection is closing stays here (and keeps its name) until its
   * `left` line is announced.
   */
  readonly #names = new Map<LineConnection, string>();
  /** The holder of each name, by the name in lower case (names clash regardless of case). */
  readonly #holders = new Map<string, LineConnection>();

  join(member: LineConnection): void {
    const name = `guest${member.id}`;
    member.send(ChatReplies.welcome(name));
    this.#group.broadcast([ChatReplies.joined(name)]);
    this.#group.add(member);
    this.#names.set(member, name);
    this.#holders.set(name.toLowerCase(), member);
  }

  say(member: LineConnection, line: string): void | Promise<void> {
    const name = this.#names.get(member)!;
    const caughtUp = this.#group.broadcast([ChatReplies.message(name, line)], {
      except: member,
    });
    if (!caughtUp) return this.#group.drained();
  }

  rename(member: LineConnection, name: string): string {
    const current = this.#names.get(member)!;
    const holder = this.#holders.get(name.toLowerCase());
    if (
      isReservedName(name, current) ||
      (holder !== undefined && holder !== member)
    ) {
      return ChatReplies.nameTaken(name);
    }
    this.#holders.delete(current.toLowerCase());
    this.#holders.set(name.toLowerCase(), member);
    this.#names.set(member, name);
    this.#group.broadcast([ChatReplies.renamed(current, name)], {
      except: member,
    });
    return ChatReplies.renamedYou(name);
  }

  who(): string[] {
    return whoLines([...this.#names.values()]);
  }

  leave(member: LineConnection, options: { quietly: boolean }): void {
    const name = this.#names.get(member);
    if (name === undefined) return;
    this.#names.delete(member);
    this.#holders.delete(name.toLowerCase());
    this.#group.delete(member);
    if (!options.quietly) this.#group.broadcast([ChatReplies.left(name)]);
  }
}

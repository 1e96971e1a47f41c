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
import { ConnectionGroup } from "./connection_group.ts";

/**
 * Byte-exact lines of the chat protocol (without the CRLF).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ChatReplies } from "./chat.ts";
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
} as const;

/** 1 to 32 ASCII letters, digits, `_` or `-`. */
const VALID_NAME = /^[A-Za-z0-9_-]{1,32}$/;
/** The names given to new members (`guest7`); nobody else may take one, in any case. */
const GUEST_NAME = /^guest[0-9]+$/i;
/**
 * A `/nick` command, well-formed or not: `/nick` alone or followed by a
 * space or tab. (`/nickname` is an unknown command, not a bad name.)
 */
const NICK_COMMAND = /^\/nick(?:[ \t]|$)/;
/** How much unread chat a member may have waiting before it is disconnected. */
const MAX_QUEUED_BYTES = 1024 * 1024;

/**
 * The members of one server and their names. A member joins when its
 * session is created and leaves exactly once: when it sends `/quit`, or when
 * its connection has ended for any other reason.
 */
class ChatRoom {
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

  /** Admits `connection` as `guest<id>` and tells the others. */
  join(connection: LineConnection): string {
    const name = `guest${connection.id}`;
    this.#group.broadcast([ChatReplies.joined(name)]);
    this.#group.add(connection);
    this.#names.set(connection, name);
    this.#holders.set(name.toLowerCase(), connection);
    return name;
  }

  /**
   * Removes `connection`; tells the others unless `quietly` (a server
   * shutting down says goodbye to everyone itself). Does nothing for a
   * member that has already left.
   */
  leave(connection: LineConnection, options: { quietly: boolean }): void {
    const name = this.#names.get(connection);
    if (name === undefined) return;
    this.#names.delete(connection);
    this.#holders.delete(name.toLowerCase());
    this.#group.delete(connection);
    if (!options.quietly) this.#group.broadcast([ChatReplies.left(name)]);
  }

  /** Sends `line` from `sender` to every other member. */
  say(sender: LineConnection, line: string): void {
    const name = this.#names.get(sender)!;
    this.#group.broadcast([ChatReplies.message(name, line)], {
      except: sender,
    });
  }

  /** Renames `connection` to `name` if it is free; returns its reply. */
  rename(connection: LineConnection, name: string): string {
    const current = this.#names.get(connection)!;
    if (name !== current) {
      const holder = this.#holders.get(name.toLowerCase());
      const taken = GUEST_NAME.test(name) ||
        (holder !== undefined && holder !== connection);
      if (taken) return ChatReplies.nameTaken(name);
    }
    this.#holders.delete(current.toLowerCase());
    this.#holders.set(name.toLowerCase(), connection);
    this.#names.set(connection, name);
    this.#group.broadcast([ChatReplies.renamed(current, name)], {
      except: connection,
    });
    return ChatReplies.renamedYou(name);
  }

  /** `* K online`, then one `* NAME` per member in byte order. */
  who(): string[] {
    // Names are ASCII, so UTF-16 order (the default sort) is byte order.
    const names = [...this.#names.values()].sort();
    return [
      ChatReplies.online(names.length),
      ...names.map(ChatReplies.member),
    ];
  }
}

/** One member's view of the room: answers its lines, leaves when it ends. */
class ChatSession implements LineSession {
  readonly greeting: string;
  readonly #room: ChatRoom;
  readonly #connection: LineConnection;

  constructor(room: ChatRoom, connection: LineConnection) {
    this.#room = room;
    this.#connection = connection;
    this.greeting = ChatReplies.welcome(room.join(connection));
  }

  reply(line: string): Reply {
    if (line === "") return;
    if (!line.startsWith("/")) {
      this.#room.say(this.#connection, line);
      return;
    }
    if (line === "/who") return this.#room.who();
    if (line === "/quit") {
      // Announced now, not once the client has closed its side as well.
      this.#room.leave(this.#connection, { quietly: false });
      this.#connection.close(ChatReplies.quit);
      return;
    }
    if (NICK_COMMAND.test(line)) {
      // Exactly one space, then the name.
      const name = line.startsWith("/nick ") ? line.slice("/nick ".length) : "";
      return VALID_NAME.test(name)
        ? this.#room.rename(this.#connection, name)
        : ChatReplies.badName;
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
 * Makes a chat protocol with a room of its own. One protocol value serves
 * one server: guests are numbered by the server's admission order
 * ({@linkcode LineConnection.id}), so two servers sharing a value would mix
 * their rooms and repeat guest names.
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
 * assert.equal(alice.greeting, "<welcome: you are guest1>");
 * const bob = chat.createSession(member(2));
 * assert.equal(alice.reply("/nick alice"), "<you are now alice>");
 * assert.equal(bob.reply("hello"), undefined);
 * assert.deepEqual(bob.reply("/who"), ["* 2 online", "* alice", "* guest2"]);
 * bob.onClose?.("peer_closed");
 * assert.deepEqual(inbox, [
 *   "1 < * guest2 joined",
 *   "2 < * guest1 is now alice",
 *   "1 < guest2: hello",
 *   "1 < * guest2 left",
 * ]);
 * ```
 */
export function createChatProtocol(): LineProtocol {
  const room = new ChatRoom();
  return {
    name: "chat",
    maxQueuedBytes: MAX_QUEUED_BYTES,
    createSession: (connection) => new ChatSession(room, connection),
  };
}

/**
 * The built-in chat protocol (`--protocol chat`): one room, for the one
 * server a process runs. Use {@linkcode createChatProtocol} for a fresh room
 * per server.
 *
 * @example
 * ```ts
 * import { chatProtocol, startServer } from "../mod.ts";
 * await using server = await startServer({ port: 0, protocol: chatProtocol });
 * ```
 */
export const chatProtocol: LineProtocol = createChatProtocol();

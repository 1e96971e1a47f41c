/**
 * One chat room over many server processes (instances), kept in Redis:
 * names and guest numbers in Redis (changed only by the atomic scripts of
 * `chat_redis_scripts.ts`), every event of the room on one pub/sub channel.
 * Each instance delivers what it hears on the channel to its own members,
 * so every member sees the room's events in the one order Redis gave them,
 * and one sender's lines in the order they were sent.
 *
 * Presence: each instance extends its registration every
 * {@linkcode RedisChatRoomOptions.heartbeatMs} and reaps the instances
 * whose registration lapsed (announcing their members as left). An
 * instance cut off from Redis keeps its members connected, answers their
 * lines with `ERROR. Chat is unavailable, try again later`, and rejoins by
 * itself when Redis is back (a line that comes while the rejoin is under
 * way waits for it rather than being refused); the joins, renames and
 * leaves it did not hear meanwhile it reads from the room's history in
 * Redis, so that its members hear each of them once, in the room's order.
 *
 * @module
 */
import { getLogger, type Logger } from "@logtape/logtape";
import type { LineConnection } from "./session.ts";
import {
  ChatReplies,
  type ChatRoom,
  ChatUnavailableError,
  isReservedName,
  whoLines,
} from "./chat_room.ts";
import { ConnectionGroup } from "./connection_group.ts";
import { settleWithin } from "./deadline.ts";
import { firstLine } from "./logging.ts";
import * as scripts from "./chat_redis_scripts.ts";
import {
  eventLine,
  EventSequence,
  type Message,
  Outbox,
} from "./chat_redis_events.ts";
import { RedisLink } from "./chat_redis_link.ts";
import { redisWhere } from "./redis_url.ts";

/** Options of {@linkcode RedisChatRoom.connect}. */
export interface RedisChatRoomOptions {
  /** `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`. */
  url: string;
  /** Instances with the same Redis and room name share the room. Default `lobby`. */
  room?: string;
  /** How often the instance renews its registration and reaps the dead. Default 2000 ms. */
  heartbeatMs?: number;
  /**
   * How long a registration lasts unrenewed: members of an instance silent
   * this long are announced as left (within one more heartbeat). Default
   * 8000 ms.
   */
  instanceTtlMs?: number;
  /**
   * Where connection losses and rejoins are logged. Default: the LogTape
   * category `lineserver`, `chat`.
   *
   * (Left out of the generated API docs: the doc linter of Deno 2.9 counts
   * a type from another package as private.)
   *
   * @ignore
   */
  logger?: Logger;
}

/** A member of this instance. */
interface Member {
  connection: LineConnection;
  name: string;
}

/** A member whose join is on its way to Redis. */
interface Joining {
  connection: LineConnection;
  admitted: () => void;
  failed: (error: Error) => void;
  /** Its guest name, once the join script has answered. */
  name?: string;
  /** Set when the member left before it was admitted. */
  leave?: { quietly: boolean };
}

/** Where the room lives in Redis: every key and the channel begin with it. */
function keyPrefix(options: RedisChatRoomOptions): string {
  return `lineserver:chat:${options.room ?? "lobby"}:`;
}

/** The room's pub/sub channel. */
function channelOf(options: RedisChatRoomOptions): string {
  return `${keyPrefix(options)}events`;
}

/**
 * A {@linkcode ChatRoom} shared by every instance on the same Redis and room
 * name. Give each server its own (`createChatProtocol({ room })`), and
 * {@linkcode close} it once the server has finished.
 *
 * @example
 * ```ts ignore
 * import { createChatProtocol, startServer } from "../mod.ts";
 * import { RedisChatRoom } from "./chat_redis.ts";
 *
 * const room = await RedisChatRoom.connect({ url: "redis://127.0.0.1:6379" });
 * const server = await startServer({ port: 0, protocol: createChatProtocol({ room }) });
 * await server.finished;
 * await room.close();
 * ```
 */
export class RedisChatRoom implements ChatRoom {
  readonly #link: RedisLink;
  readonly #id = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  readonly #keys: string[];
  readonly #channel: string;
  readonly #ttlMs: number;
  readonly #logger: Logger;
  readonly #group = new ConnectionGroup();
  readonly #members = new Map<number, Member>();
  readonly #joining = new Map<number, Joining>();
  /** Registered with its members, and both connections up. */
  #available = false;
  #rejoining: Promise<void> | undefined;
  /** Available at least once (a later rejoin is logged). */
  #joinedOnce = false;
  /** The room's epoch at the last rejoin (see REJOIN). */
  #epoch = "";
  /** Members that left while the room was out of reach, by connection: announced at the rejoin. */
  readonly #departed = new Map<number, string>();
  #timer: ReturnType<typeof setInterval>;
  readonly #outbox: Outbox;
  /** Set while local members are behind: senders wait for it. */
  #catchingUp: Promise<void> | undefined;
  /** Orders the room's joins, renames and leaves, also across a rejoin. */
  readonly #sequence = new EventSequence();

  private constructor(
    link: RedisLink,
    options: RedisChatRoomOptions,
    timing: { heartbeatMs: number; ttlMs: number },
  ) {
    const prefix = keyPrefix(options);
    this.#link = link;
    this.#keys = ["names", "instances", "guests", "epoch", "history", "serial"]
      .map((key) => prefix + key);
    this.#channel = channelOf(options);
    // A lost publish is a lost line: delivery is at most once.
    this.#outbox = new Outbox(this.#id, (text) => {
      this.#link.command(["PUBLISH", this.#channel, text]).catch(() => {});
    });
    this.#ttlMs = timing.ttlMs;
    this.#logger = options.logger ?? getLogger(["lineserver", "chat"]);
    link.listen({
      onMessage: (text) => this.#hear(text),
      onLost: (error) => this.#lost(error),
      // A failed rejoin is tried again at the next heartbeat.
      onBack: () => void this.#rejoin().catch(() => {}),
    });
    this.#timer = setInterval(() => this.#tick(), timing.heartbeatMs);
  }

  /**
   * Connects to Redis and joins the room; rejects with one line naming the
   * URL (without its credentials) if Redis cannot be reached.
   */
  static async connect(options: RedisChatRoomOptions): Promise<RedisChatRoom> {
    const heartbeatMs = options.heartbeatMs ?? 2000;
    const ttlMs = options.instanceTtlMs ?? 8000;
    if (!(heartbeatMs > 0 && ttlMs > 2 * heartbeatMs)) {
      throw new RangeError(
        "Cannot use heartbeatMs and instanceTtlMs: expected 0 < 2 * heartbeatMs < instanceTtlMs",
      );
    }
    const where = redisWhere(options.url);
    let link: RedisLink;
    try {
      link = await RedisLink.open(options.url, channelOf(options));
    } catch (error) {
      throw new Error(
        `Cannot connect to Redis at ${where}: ${firstLine(error)}`,
      );
    }
    const room = new RedisChatRoom(link, options, { heartbeatMs, ttlMs });
    try {
      await room.#rejoin();
      if (!room.#available) throw new Error("no answer");
    } catch (error) {
      await room.close();
      throw new Error(
        `Cannot join the chat room at ${where}: ${firstLine(error)}`,
      );
    }
    return room;
  }

  join(member: LineConnection): Promise<void> {
    return this.#inRoom(() => this.#join(member));
  }

  #join(member: LineConnection): Promise<void> {
    return new Promise((admitted, failed) => {
      const joining: Joining = { connection: member, admitted, failed };
      this.#joining.set(member.id, joining);
      this.#run(scripts.JOIN, [member.id]).then((name) => {
        if (typeof name !== "string") throw this.#unavailable();
        // Usually admitted already: its join event may come first.
        if (this.#joining.get(member.id) === joining) joining.name = name;
      }).catch((error) => {
        if (this.#joining.get(member.id) !== joining) return;
        this.#joining.delete(member.id);
        failed(error);
      });
    });
  }

  say(member: LineConnection, line: string): void | Promise<void> {
    return this.#inRoom(() => {
      const sender = this.#members.get(member.id);
      // Gone while the instance was rejoining.
      if (sender === undefined) return;
      this.#outbox.queue(["say", this.#id, member.id, sender.name, line]);
      return this.#catchingUp ?? this.#outbox.paced();
    });
  }

  rename(member: LineConnection, name: string): Promise<string> {
    return this.#inRoom(() => this.#rename(member, name));
  }

  async #rename(member: LineConnection, name: string): Promise<string> {
    const current = this.#members.get(member.id);
    if (current === undefined) throw this.#unavailable();
    if (isReservedName(name, current.name)) return ChatReplies.nameTaken(name);
    const result = await this.#run(scripts.RENAME, [
      member.id,
      current.name,
      name,
    ]);
    if (result === -1) throw this.#unavailable();
    if (result === 0) return ChatReplies.nameTaken(name);
    current.name = name;
    return ChatReplies.renamedYou(name);
  }

  who(): Promise<string[]> {
    return this.#inRoom(async () => {
      const entries = await this.#link.command(["HVALS", this.#keys[0]])
        .catch(() => {
          throw this.#unavailable();
        }) as string[];
      return whoLines(entries.map((entry) => entry.split(" ")[2]));
    });
  }

  leave(member: LineConnection, options: { quietly: boolean }): void {
    const joining = this.#joining.get(member.id);
    if (joining !== undefined) {
      joining.leave = options;
      return;
    }
    const gone = this.#members.get(member.id);
    if (gone === undefined) return;
    this.#members.delete(member.id);
    this.#group.delete(member);
    // Out of reach, the rejoin announces it, or the others reap it if this
    // instance never comes back.
    if (!this.#available) return void this.#departed.set(member.id, gone.name);
    this.#run(scripts.LEAVE, [member.id, gone.name, options.quietly ? 1 : 0])
      .catch(() => this.#departed.set(member.id, gone.name));
  }

  /**
   * Leaves the room: frees the names this instance still holds (announced
   * as left to the other instances only), stops the heartbeat, closes both
   * connections. Call it once the server has finished.
   */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    if (this.#available) {
      this.#available = false;
      await settleWithin(this.#run(scripts.DEPART, [1]).catch(() => {}), 1000);
    }
    this.#outbox.reset();
    await this.#link.close();
  }

  /**
   * Runs `operation` in the room: now, or once the rejoin under way has
   * brought this instance back (Redis answers: its members wait rather than
   * being refused). Out of reach, rejects with ChatUnavailableError.
   */
  #inRoom<T>(operation: () => T): T | Promise<Awaited<T>> {
    if (this.#available) return operation();
    return (async (): Promise<Awaited<T>> => {
      await this.#rejoining?.catch(() => {});
      if (!this.#available) throw this.#unavailable();
      return await operation();
    })();
  }

  #unavailable(): ChatUnavailableError {
    return new ChatUnavailableError(
      `The chat room at ${this.#link.where} cannot be reached`,
    );
  }

  /** Runs a script, after publishing what was said before it (order is kept). */
  #run(script: string, args: (string | number)[]): Promise<unknown> {
    this.#outbox.flush();
    return this.#link.command([
      "EVAL",
      script,
      String(this.#keys.length),
      ...this.#keys,
      this.#channel,
      this.#id,
      String(this.#ttlMs),
      ...args.map(String),
    ]);
  }

  /** A message on the room's channel. */
  #hear(text: string) {
    const message = this.#parse(text);
    if (message === undefined) return;
    if (message.f === this.#id && message.s !== undefined) {
      this.#outbox.heardBack(message.s);
    }
    for (const next of this.#sequence.heard(message, this.#available)) {
      this.#deliver(next);
    }
  }

  #parse(text: string): Message | undefined {
    try {
      return JSON.parse(text);
    } catch {
      this.#logger.warn("chat room: ignoring a malformed message");
    }
  }

  /** A message's events, delivered to this instance's members. */
  #deliver(message: Message) {
    // Consecutive lines for the same members (one sender's, say) go out in
    // one broadcast.
    let lines: string[] = [];
    let except: LineConnection | undefined;
    for (const event of message.e) {
      const [kind, instance, id] = event;
      const mine = instance === this.#id;
      if (kind === "join" && mine) this.#admit(id, String(event[3]));
      const heard = eventLine(event, mine);
      if (heard === undefined) continue;
      const left = heard.exceptSubject && mine
        ? this.#members.get(id)?.connection
        : undefined;
      if (left !== except && lines.length > 0) {
        this.#broadcast(lines, except);
        lines = [];
      }
      except = left;
      lines.push(heard.line);
    }
    if (lines.length > 0) this.#broadcast(lines, except);
  }

  #broadcast(lines: string[], except?: LineConnection) {
    if (this.#group.broadcast(lines, { except })) return;
    this.#catchingUp ??= this.#group.drained().then(() => {
      this.#catchingUp = undefined;
    });
  }

  /** A joining member is in the room: welcomed first, then it hears the room. */
  #admit(id: number, name: string) {
    const joining = this.#joining.get(id);
    if (joining === undefined) return;
    this.#joining.delete(id);
    const { connection } = joining;
    connection.send(ChatReplies.welcome(name));
    this.#members.set(id, { connection, name });
    this.#group.add(connection);
    joining.admitted();
    if (joining.leave) this.leave(connection, joining.leave);
  }

  /** Redis is out of reach: lines are answered with an error until the rejoin. */
  #lost(error: Error) {
    this.#sequence.forget();
    if (!this.#available) return;
    this.#available = false;
    this.#logger.warn(
      "chat room at {where} out of reach ({error}): members stay connected, their lines are answered with an error until it is back",
      { where: this.#link.where, error: firstLine(error) },
    );
    this.#outbox.reset();
  }

  /** Registers the instance and its members again (see REJOIN). */
  #rejoin(): Promise<void> {
    return this.#rejoining ??= this.#reregister().finally(() => {
      this.#rejoining = undefined;
    });
  }

  async #reregister() {
    if (!this.#link.ready) return;
    // Joins whose script ran but whose event was lost are admitted now.
    for (const [id, joining] of this.#joining) {
      if (joining.name !== undefined) this.#admit(id, joining.name);
    }
    const departed = [...this.#departed];
    const [epoch, last, moved, missed] = await this.#run(scripts.REJOIN, [
      this.#epoch,
      crypto.randomUUID(),
      this.#sequence.last,
      departed.length,
      ...departed.flat(),
      ...[...this.#members].flatMap(([id, member]) => [id, member.name]),
    ]) as [string, number, string[], string[]];
    this.#epoch = epoch;
    for (const [id] of departed) this.#departed.delete(id);
    for (const text of missed) {
      const message = this.#parse(text);
      if (message !== undefined) this.#deliver(message);
    }
    // A member whose name was taken meanwhile has a new one (the others
    // hear of it from the channel).
    for (let i = 0; i < moved.length; i += 2) {
      const member = this.#members.get(Number(moved[i]));
      if (member === undefined) continue;
      member.name = moved[i + 1];
      member.connection.send(ChatReplies.renamedYou(member.name));
    }
    for (const message of this.#sequence.rejoined(last)) this.#deliver(message);
    const wasAvailable = this.#available;
    this.#available = this.#link.ready;
    // Members that left while the script ran were registered by it.
    for (const [id, name] of this.#available ? this.#departed : []) {
      this.#departed.delete(id);
      this.#run(scripts.LEAVE, [id, name, 0])
        .catch(() => this.#departed.set(id, name));
    }
    if (!wasAvailable && this.#available && this.#joinedOnce) {
      this.#logger.info("chat room at {where} reached again: rejoined", {
        where: this.#link.where,
      });
    }
    this.#joinedOnce ||= this.#available;
  }

  /** Every heartbeat: renew the registration, reap the dead; rejoin if due. */
  async #tick() {
    if (!this.#available) {
      if (this.#link.ready) await this.#rejoin().catch(() => {});
      return;
    }
    try {
      const tick = this.#run(scripts.TICK, []);
      if (!(await settleWithin(tick, this.#ttlMs / 2))) {
        return this.#lost(new Error("no answer to the heartbeat"));
      }
      if ((await tick) === -1) {
        this.#available = false;
        await this.#rejoin();
      }
    } catch {
      // The connection's own events tell what happened.
    }
  }
}

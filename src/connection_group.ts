/**
 * A set of connections to send to together (a room, a feed), which lets go
 * of each connection as soon as it closes.
 *
 * A broadcast costs the same whoever receives it: each line is encoded once,
 * into a log shared by the members' output queues (see output_queue.ts), so
 * a thousand members that do not read hold one copy of the room's messages,
 * not a thousand. And a sender cannot outrun the room: a broadcast that
 * leaves a member that is still reading far behind answers false, and
 * {@linkcode ConnectionGroup.drained} lets the sender wait for it, while a
 * member that reads nothing is never waited for (its own bound disconnects
 * it).
 *
 * @module
 */
import type { LineConnection } from "./session.ts";
import { Connection } from "./connection.ts";
import { HIGH_WATER_BYTES } from "./connection_config.ts";
import type { FrameEncoder } from "./framing.ts";
import { BroadcastLog, type LogPosition } from "./output_queue.ts";
import { settleWithin } from "./deadline.ts";

/**
 * A member with this much waiting counts as behind: a quarter of a member's
 * default bound (1 MiB), so that a sender is slowed long before a member that
 * reads is anywhere near being disconnected.
 */
const BEHIND_BYTES = 256 * 1024;
/**
 * How long {@linkcode ConnectionGroup.drained} waits for a member that does
 * not catch up: past it, the member is taken for one that reads nothing and
 * is not waited for again until it has caught up.
 */
const STALL_MS = 1000;

/** One broadcast's text in one log (members of one server share an encoder). */
interface Encoded {
  log: BroadcastLog;
  position: LogPosition;
  end: number;
}

/**
 * Connections that lines can be broadcast to. A closed connection is skipped
 * and dropped, so the group never keeps one alive; a protocol removes a
 * member explicitly in its session's `onClose` when it must also tell the
 * others.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConnectionGroup, type LineConnection } from "../mod.ts";
 *
 * const sent: string[] = [];
 * const fake = (id: number, closed = false): LineConnection => ({
 *   id,
 *   peer: { hostname: "127.0.0.1", port: 1000 + id },
 *   closed,
 *   send: (...lines) => (sent.push(...lines.map((l) => `${id}:${l}`)), true),
 *   draining: false,
 *   drained: () => Promise.resolve(),
 *   readBytes: () => {},
 *   close: () => {},
 * });
 * const room = new ConnectionGroup();
 * const alice = fake(1);
 * room.add(alice);
 * room.add(fake(2));
 * room.add(fake(3, true));
 * assert.equal(room.broadcast(["hi"], { except: alice }), true);
 * assert.deepEqual(sent, ["2:hi"]);
 * assert.equal(room.size, 2);
 * await room.drained(); // nobody is behind
 * ```
 */
export class ConnectionGroup<C extends LineConnection = LineConnection>
  implements Iterable<C> {
  readonly #members = new Set<C>();
  /** One log per encoder (per server); made at the first broadcast. */
  readonly #logs = new Map<FrameEncoder, BroadcastLog>();
  /** Members that were behind after a broadcast (checked by drained()). */
  readonly #behind = new Set<C>();
  /** Members that did not catch up within STALL_MS: not waited for. */
  readonly #stalled = new WeakSet<C>();

  /** Members still open. */
  get size(): number {
    this.#prune();
    return this.#members.size;
  }

  /** Adds `connection` (no effect if it is already closed). */
  add(connection: C): void {
    if (!connection.closed) this.#members.add(connection);
  }

  /** Removes `connection`; true if it was a member. */
  delete(connection: C): boolean {
    this.#behind.delete(connection);
    return this.#members.delete(connection);
  }

  /** True if `connection` is an open member. */
  has(connection: C): boolean {
    return !connection.closed && this.#members.has(connection);
  }

  /**
   * Sends `lines` to every open member but `options.except`, each line
   * encoded once for all of them. Throws a `TypeError`, sending nothing, if
   * a line would not arrive as one line (see {@linkcode LineConnection.send}:
   * CR or LF for line framing, the terminator for another framing).
   *
   * @returns false when a member that is still reading has fallen behind: a
   * sender should then wait for {@linkcode drained} before sending more (as
   * with a Node.js stream's `write`).
   */
  broadcast(lines: readonly string[], options: { except?: C } = {}): boolean {
    // Every line is checked (encoded, per framing) before anyone gets one.
    const encoded = new Map<FrameEncoder, Encoded>();
    for (const member of this.#members) {
      if (member instanceof Connection && !encoded.has(member.encoder)) {
        encoded.set(member.encoder, this.#encode(member.encoder, lines));
      }
    }
    let caughtUp = true;
    for (const member of this.#members) {
      if (member.closed) {
        this.delete(member);
        continue;
      }
      if (member === options.except) continue;
      if (member instanceof Connection) {
        const text = encoded.get(member.encoder)!;
        member.queueSpan(text.log, text.position, text.end);
      } else {
        member.send(...lines);
      }
      if (this.#isBehind(member)) {
        caughtUp = false;
        this.#behind.add(member);
      }
    }
    return caughtUp;
  }

  /**
   * Resolves when the members a broadcast left behind have caught up, or
   * have shown that they read nothing: a member still behind after a second
   * is no longer waited for (until it catches up), and its own bound
   * disconnects it if it goes on not reading.
   */
  async drained(): Promise<void> {
    const waiting = [...this.#behind].filter((member) =>
      this.#isBehind(member)
    );
    this.#behind.clear();
    if (waiting.length === 0) return;
    const caughtUp = Promise.all(
      waiting.map((member) => member.whenWaitingAtMost(BEHIND_BYTES)),
    );
    if (await settleWithin(caughtUp, STALL_MS)) return;
    for (const member of waiting) {
      if (this.#isBehind(member)) this.#stalled.add(member);
    }
  }

  /** The open members, as they are now (closing one meanwhile is safe). */
  *[Symbol.iterator](): Iterator<C> {
    this.#prune();
    yield* [...this.#members];
  }

  /**
   * Behind, and not a member known to read nothing. A stalled member is
   * waited for again only once it has nearly caught up (a client whose
   * kernel buffers still take a little now and then is not reading).
   */
  #isBehind(member: C): member is C & Connection {
    if (member.closed || !(member instanceof Connection)) return false;
    const waiting = member.waitingBytes;
    if (this.#stalled.has(member)) {
      if (waiting > HIGH_WATER_BYTES) return false;
      this.#stalled.delete(member);
    }
    return waiting > BEHIND_BYTES;
  }

  /** `lines` in the log of `encoder`'s framing; throws (see send) for a line it refuses. */
  #encode(encoder: FrameEncoder, lines: readonly string[]): Encoded {
    let text = "";
    for (const line of lines) text += encoder.line(line, { refuseCr: true });
    let log = this.#logs.get(encoder);
    if (log === undefined) this.#logs.set(encoder, log = new BroadcastLog());
    const position = log.append(text);
    return { log, position, end: log.end };
  }

  #prune() {
    for (const member of this.#members) {
      if (member.closed) this.delete(member);
    }
  }
}

/**
 * A set of connections to send to together (a room, a feed), which lets go
 * of each connection as soon as it closes.
 *
 * @module
 */
import type { LineConnection } from "./session.ts";

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
 * room.broadcast(["hi"], { except: alice });
 * assert.deepEqual(sent, ["2:hi"]);
 * assert.equal(room.size, 2);
 * ```
 */
export class ConnectionGroup<C extends LineConnection = LineConnection>
  implements Iterable<C> {
  readonly #members = new Set<C>();

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
    return this.#members.delete(connection);
  }

  /** True if `connection` is an open member. */
  has(connection: C): boolean {
    return !connection.closed && this.#members.has(connection);
  }

  /**
   * Sends `lines` to every open member but `options.except`. A member that
   * does not read is disconnected by its own connection's bound, never
   * slowing the sender or the others.
   */
  broadcast(lines: readonly string[], options: { except?: C } = {}): void {
    for (const member of this.#members) {
      if (member.closed) this.#members.delete(member);
      else if (member !== options.except) member.send(...lines);
    }
  }

  /** The open members, as they are now (closing one meanwhile is safe). */
  *[Symbol.iterator](): Iterator<C> {
    this.#prune();
    yield* [...this.#members];
  }

  #prune() {
    for (const member of this.#members) {
      if (member.closed) this.#members.delete(member);
    }
  }
}

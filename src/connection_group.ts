/**
 * A set of connections to send to together (a room, a feed), which lets go
 * of each connection as soon as it closes.
 *
 * @module
 */
import type { LineConnection } from "./session.ts";
import { settleWithin } from "./deadline.ts";

/**
 * How long {@linkcode ConnectionGroup.drained} waits for a member that does
 * not catch up: past it, the member is taken for one that reads nothing and
 * is no longer waited for (its own bound disconnects it) until it drains.
 */
const STALL_MS = 1000;

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
 * await room.drained();
 * ```
 */
export class ConnectionGroup<C extends LineConnection = LineConnection>
  implements Iterable<C> {
  readonly #members = new Set<C>();
  /** Members whose last broadcast left them past their high-water mark. */
  readonly #lagging = new Set<C>();
  /** Members that did not catch up within {@linkcode STALL_MS}: not waited for. */
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
    return this.#members.delete(connection);
  }

  /** True if `connection` is an open member. */
  has(connection: C): boolean {
    return !connection.closed && this.#members.has(connection);
  }

  /**
   * Sends `lines` to every open member but `options.except`.
   *
   * @returns false when a member that is still reading is past its
   * high-water mark: a sender should then wait for {@linkcode drained}
   * before sending more (as with a Node.js stream's `write`).
   */
  broadcast(lines: readonly string[], options: { except?: C } = {}): boolean {
    let caughtUp = true;
    for (const member of this.#members) {
      if (member.closed) this.#members.delete(member);
      else if (
        member !== options.except && !member.send(...lines) &&
        !this.#stalled.has(member)
      ) {
        caughtUp = false;
        this.#lagging.add(member);
      }
    }
    return caughtUp;
  }

  /**
   * Resolves when the members a broadcast left behind have caught up. A
   * member that reads nothing is not waited for: past a short while it is
   * left to its own bound, which disconnects it.
   */
  drained(): Promise<void> {
    const waits = [...this.#lagging].map((member) => this.#catchUp(member));
    this.#lagging.clear();
    return Promise.all(waits).then(() => {});
  }

  async #catchUp(member: C): Promise<void> {
    const drained = member.drained();
    if (await settleWithin(drained, STALL_MS)) return;
    this.#stalled.add(member);
    drained.then(() => this.#stalled.delete(member));
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

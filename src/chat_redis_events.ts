/**
 * The events of a Redis chat room: what they mean to an instance's
 * members, and how one instance says them: events said in one turn of the
 * event loop go out as one message, in order, and the instance's senders
 * are paced by how much it has published and not yet heard back on the
 * channel.
 *
 * @module
 */
import { ChatReplies } from "./chat_room.ts";

/**
 * What the channel carries: `[KIND, INSTANCE, CONNECTION, ...]`, about the
 * member CONNECTION of INSTANCE: `say NAME LINE`, `join NAME`,
 * `nick OLD NEW`, `left NAME QUIET` (QUIET 1: its instance is shutting down
 * and tells its own members itself), `lost NAME` (its instance was taken
 * for dead), `back NAME` (registered again after it was lost), `moved OLD
 * NEW RESTARTED` (registered again under a new guest name, OLD being taken;
 * RESTARTED 1 when Redis had lost the room).
 */
export type Event = [string, string, number, ...(string | number)[]];

/**
 * A message on the channel: its events; for lines an instance published
 * itself, who (`f`) and its sequence number (`s`); for the joins, renames
 * and leaves the room's scripts published, their number (`n`) in the room's
 * history, which Redis keeps for a while so that an instance that was not
 * listening can read what it missed.
 */
export interface Message {
  f?: string;
  s?: number;
  n?: number;
  e: Event[];
}

/**
 * How many of its latest numbered messages the room keeps in Redis: an
 * instance away for longer than that many joins, renames and leaves misses
 * the older ones.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HISTORY_LENGTH } from "./chat_redis_events.ts";
 * assert.ok(HISTORY_LENGTH >= 100);
 * ```
 */
export const HISTORY_LENGTH = 1000;

/**
 * The order in which an instance delivers the room's numbered messages:
 * each once, in the room's order, with none lost while the instance was
 * out of the room (its channel connection lost and back, or taken for
 * dead). Out of the room it holds the numbered messages it hears and drops
 * the lines (nobody of it can talk either; lines are delivered at most
 * once); at the rejoin, the messages it missed come first, from the room's
 * history, then those it held.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventSequence, type Message } from "./chat_redis_events.ts";
 * const sequence = new EventSequence();
 * const joined: Message = { n: 2, e: [["join", "a1", 4, "guest4"]] };
 * const line: Message = { e: [["say", "a1", 5, "bob", "hi"]] };
 * assert.equal(sequence.last, 0);
 * // Heard while out of the room: held (numbered), or dropped (a line).
 * assert.deepEqual(sequence.heard(joined, false), []);
 * assert.deepEqual(sequence.heard(line, false), []);
 * // The rejoin delivered message 1 from the history: 2 comes next.
 * assert.deepEqual(sequence.rejoined(1), [joined]);
 * // Heard again later on the channel: not delivered twice.
 * assert.deepEqual(sequence.heard(joined, true), []);
 * assert.deepEqual(sequence.heard(line, true), [line]);
 * ```
 */
export class EventSequence {
  /** The number of the last numbered message delivered. */
  #last = 0;
  /** Numbered messages heard out of the room, oldest first. */
  readonly #held: Message[] = [];

  /** A message heard on the channel: what to deliver now (it, or nothing). */
  heard(message: Message, inRoom: boolean): Message[] {
    if (message.n === undefined) return inRoom ? [message] : [];
    if (!inRoom) {
      // The history has the oldest ones too.
      if (this.#held.push(message) > HISTORY_LENGTH) this.#held.shift();
      return [];
    }
    if (message.n <= this.#last) return [];
    this.#last = message.n;
    return [message];
  }

  /**
   * A connection was lost: what was held may have gaps, and may belong to
   * a room that Redis is about to lose; the history tells at the rejoin.
   */
  forget(): void {
    this.#held.length = 0;
  }

  /** The number of the last numbered message delivered (0: none yet). */
  get last(): number {
    return this.#last;
  }

  /**
   * Back in the room, the messages it missed up to number `last` (read
   * from the history) delivered: returns those held since, each once.
   */
  rejoined(last: number): Message[] {
    this.#last = last;
    const held = this.#held.splice(0).filter((message) => message.n! > last);
    if (held.length > 0) this.#last = held.at(-1)!.n!;
    return held;
  }
}

/**
 * What `event` says to the members of an instance (`mine`: the event is
 * about one of its own members): the line, and whether the member it is
 * about is left out; undefined when they hear nothing of it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eventLine } from "./chat_redis_events.ts";
 * assert.deepEqual(eventLine(["say", "a1", 3, "ann", "hi"], false), {
 *   line: "ann: hi",
 *   exceptSubject: true,
 * });
 * // A shutting-down instance says goodbye to its own members itself.
 * assert.equal(eventLine(["left", "a1", 3, "ann", 1], true), undefined);
 * ```
 */
export function eventLine(
  event: Event,
  mine: boolean,
): { line: string; exceptSubject: boolean } | undefined {
  const [kind, , , a, b, c] = event.map(String);
  const toAll = (line: string) => ({ line, exceptSubject: false });
  const toOthers = (line: string) => ({ line, exceptSubject: true });
  switch (kind) {
    case "say":
      return toOthers(ChatReplies.message(a, b));
    case "join":
      return toOthers(ChatReplies.joined(a));
    case "nick":
      return toOthers(ChatReplies.renamed(a, b));
    case "left":
      // Quiet: its own instance is shutting down and says goodbye itself.
      return mine && b === "1" ? undefined : toAll(ChatReplies.left(a));
    case "lost":
      // Its instance, if alive after all, never told its own members.
      return mine ? undefined : toAll(ChatReplies.left(a));
    case "back":
      return mine ? undefined : toAll(ChatReplies.joined(a));
    case "moved":
      // Only the others of a room that Redis kept heard OLD leave.
      return toOthers(
        mine || c === "1" ? ChatReplies.renamed(a, b) : ChatReplies.joined(b),
      );
  }
  return undefined;
}

/**
 * Most bytes this instance may have published and not yet heard back:
 * past it, its senders wait. The room's pace is then set by Redis and the
 * subscribers, and Redis never holds much for a subscriber that keeps up.
 */
const MAX_IN_FLIGHT_BYTES = 256 * 1024;

/**
 * Batches and paces one instance's events.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Outbox } from "./chat_redis_events.ts";
 * const published: string[] = [];
 * const outbox = new Outbox("me", (text) => published.push(text));
 * outbox.queue(["say", "me", 1, "ann", "hi"]);
 * outbox.queue(["say", "me", 1, "ann", "again"]);
 * outbox.flush();
 * assert.equal(published.length, 1);
 * assert.deepEqual(JSON.parse(published[0]).e.length, 2);
 * assert.equal(outbox.paced(), undefined);
 * ```
 */
export class Outbox {
  readonly #from: string;
  readonly #publish: (text: string) => void;
  /** Events said this turn. */
  #events: Event[] = [];
  #flushQueued = false;
  #sequence = 0;
  /** Sequence and size of each message not yet heard back, oldest first. */
  readonly #inFlight: [number, number][] = [];
  #inFlightBytes = 0;
  /** Resolved when few enough bytes are in flight again. */
  #landed: PromiseWithResolvers<void> | undefined;

  /** `publish` sends one message's text to the channel (its failures are its own). */
  constructor(from: string, publish: (text: string) => void) {
    this.#from = from;
    this.#publish = publish;
  }

  /** Adds an event to this turn's message. */
  queue(event: Event): void {
    this.#events.push(event);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Publishes what was said so far (before anything else is sent to Redis, to keep the order). */
  flush(): void {
    this.#flushQueued = false;
    if (this.#events.length === 0) return;
    const sequence = ++this.#sequence;
    const message: Message = { f: this.#from, s: sequence, e: this.#events };
    const text = JSON.stringify(message);
    this.#events = [];
    this.#inFlight.push([sequence, text.length]);
    this.#inFlightBytes += text.length;
    this.#publish(text);
  }

  /** A promise to wait for while too much is in flight; else undefined. */
  paced(): Promise<void> | undefined {
    if (this.#inFlightBytes <= MAX_IN_FLIGHT_BYTES) return undefined;
    return (this.#landed ??= Promise.withResolvers()).promise;
  }

  /** This instance's message `sequence` came back on the channel (and every one before it). */
  heardBack(sequence: number): void {
    while (this.#inFlight.length > 0 && this.#inFlight[0][0] <= sequence) {
      this.#inFlightBytes -= this.#inFlight.shift()![1];
    }
    if (this.#inFlightBytes <= MAX_IN_FLIGHT_BYTES / 2) this.#release();
  }

  /** The connection was lost, and what was in flight with it: nobody waits for it. */
  reset(): void {
    this.#inFlight.length = 0;
    this.#inFlightBytes = 0;
    this.#release();
  }

  #release() {
    this.#landed?.resolve();
    this.#landed = undefined;
  }
}

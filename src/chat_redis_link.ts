/**
 * The Redis connections of one chat room instance, on the npm `redis`
 * package (node-redis): one for commands and publishing, one subscribed to
 * the room's channel (a subscribed connection can do nothing else). Both
 * reconnect by themselves; the room hears when they are lost and when both
 * are back.
 *
 * @module
 */
import { createClient } from "redis";
import { settleWithin } from "./deadline.ts";
import { redisWhere } from "./redis_url.ts";

/** What the room is told. */
export interface RedisLinkHandlers {
  /** A message on the channel. */
  onMessage(text: string): void;
  /** A connection was lost (said at least once per loss). */
  onLost(error: Error): void;
  /** Both connections are up again after a loss. */
  onBack(): void;
}

/** Longest wait for a connection to Redis to open. */
const CONNECT_TIMEOUT_MS = 3000;
/** Longest pause between two attempts to reconnect. */
const MAX_RECONNECT_PAUSE_MS = 1000;
/** How long closing waits for the replies still owed before dropping the connections. */
const CLOSE_TIMEOUT_MS = 1000;

/** What this link uses of a node-redis client. */
interface Client {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  sendCommand(args: string[]): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
}

/** Whether a link has connected once, whether it is closing, who hears it. */
interface LinkState {
  connected: boolean;
  closing: boolean;
  handlers?: RedisLinkHandlers;
}

/** Two connections to one Redis: commands, and the room's channel. */
export class RedisLink {
  /** The Redis URL, without credentials, for messages. */
  readonly where: string;
  readonly #commands: Client;
  readonly #subscriber: Client;
  readonly #state: LinkState;

  private constructor(
    url: string,
    commands: Client,
    subscriber: Client,
    state: LinkState,
  ) {
    this.where = redisWhere(url);
    this.#commands = commands;
    this.#subscriber = subscriber;
    this.#state = state;
  }

  /**
   * Connects both and subscribes; rejects if Redis cannot be reached now
   * (at start there is no waiting for it: it is a configuration problem).
   */
  static async open(url: string, channel: string): Promise<RedisLink> {
    const state: LinkState = { connected: false, closing: false };
    const options = {
      url,
      // A command while disconnected fails at once (the member is told)
      // instead of waiting for a reconnection that may never come.
      disableOfflineQueue: true,
      // Redis Enterprise maintenance notices: not used here, and their
      // handshake reads environment variables (a Deno permission).
      maintNotifications: "disabled" as const,
      socket: {
        connectTimeout: CONNECT_TIMEOUT_MS,
        reconnectStrategy: (retries: number, cause: Error) =>
          !state.connected || state.closing
            ? cause
            : Math.min(50 * 2 ** retries, MAX_RECONNECT_PAUSE_MS),
      },
    };
    const commands = createClient(options);
    const subscriber = createClient(options);
    const lost = (error: Error) => {
      if (state.connected && !state.closing) state.handlers?.onLost(error);
    };
    const back = () => {
      if (state.connected && commands.isReady && subscriber.isReady) {
        state.handlers?.onBack();
      }
    };
    for (const client of [commands, subscriber]) {
      client.on("error", lost).on("ready", back);
    }
    try {
      await Promise.all([commands.connect(), subscriber.connect()]);
      await subscriber.subscribe(
        channel,
        (text) => state.handlers?.onMessage(text),
      );
    } catch (error) {
      for (const client of [commands, subscriber]) destroy(client);
      throw error;
    }
    state.connected = true;
    return new RedisLink(url, commands, subscriber, state);
  }

  /** From now on, tells `handlers` what happens (until then, nothing is heard). */
  listen(handlers: RedisLinkHandlers): void {
    this.#state.handlers = handlers;
  }

  /** Both connections are up. */
  get ready(): boolean {
    return this.#commands.isReady && this.#subscriber.isReady;
  }

  /** Sends one command; rejects at once while disconnected. */
  command(args: string[]): Promise<unknown> {
    return this.#commands.sendCommand(args);
  }

  /** Closes both, letting the replies still owed arrive for a short while. */
  async close(): Promise<void> {
    this.#state.closing = true;
    await Promise.all(
      [this.#commands, this.#subscriber].map(async (client) => {
        if (client.isReady) {
          await settleWithin(client.close(), CLOSE_TIMEOUT_MS);
        }
        destroy(client);
      }),
    );
  }
}

/** Drops a client's connection at once, whatever its state. */
function destroy(client: Client) {
  try {
    if (client.isOpen) client.destroy();
  } catch {
    // Closed meanwhile.
  }
}

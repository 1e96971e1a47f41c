/**
 * Admission: the server's connection limits as one object with one rule.
 *
 * Every accepted socket takes a slot of the server-wide limit from the
 * moment it is accepted (its PROXY header and TLS handshake included), and a
 * slot of its address's limit as soon as its address is known (at accept, or
 * after its PROXY header). A client that finds either limit full waits a
 * short grace for a slot to free, then is refused: a client that closes and
 * reconnects at once must not be turned away because the server sees its
 * close a moment after the client does. Sockets that hold no slot (waiting
 * for one, or being refused) count against a bound of their own.
 *
 * @module
 */
import { ConnectionLimit } from "./connection_limit.ts";
import { AddressLimit } from "./address_limit.ts";

/** Why a client is turned away. */
export type Refusal = "refused_busy" | "refused_per_ip";

/** Options of {@linkcode Admission}. */
export interface AdmissionOptions {
  maxConnections: number;
  /** 0: no per-address limit. */
  maxConnectionsPerIp: number;
  /** How long a client that finds a limit full waits for a slot. */
  graceMs: number;
  /** How many sockets may wait for a slot or be refused at once. */
  maxWaiting: number;
}

/** A slot being waited for: `take` tries to take it. */
interface Waiter {
  take: () => boolean;
  resolve: (taken: boolean) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The server-wide and per-address limits, and the sockets that wait for
 * them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Admission } from "./admission.ts";
 * const admission = new Admission({
 *   maxConnections: 1, maxConnectionsPerIp: 0, graceMs: 50, maxWaiting: 8,
 * });
 * assert.equal(admission.takeSlot(), true);
 * assert.equal(admission.takeSlot(), false);
 * const waiting = admission.waitForSlot();
 * admission.releaseSlot(); // a client leaves: the one waiting gets its slot
 * assert.equal(await waiting, true);
 * admission.releaseSlot();
 * ```
 */
export class Admission {
  readonly #slots: ConnectionLimit;
  readonly #perAddress: AddressLimit | undefined;
  readonly #graceMs: number;
  readonly #maxWaiting: number;
  readonly #waiters: Waiter[] = [];
  /** Sockets holding no slot: waiting for one, or being refused. */
  #unadmitted = 0;

  constructor(options: AdmissionOptions) {
    this.#slots = new ConnectionLimit(options.maxConnections);
    this.#perAddress = options.maxConnectionsPerIp > 0
      ? new AddressLimit(options.maxConnectionsPerIp)
      : undefined;
    this.#graceMs = options.graceMs;
    this.#maxWaiting = options.maxWaiting;
  }

  /** Server slots in use. */
  get activeSlots(): number {
    return this.#slots.active;
  }

  /** True when a per-address limit is set. */
  get limitsAddresses(): boolean {
    return this.#perAddress !== undefined;
  }

  /** Takes a server slot if one is free. */
  takeSlot(): boolean {
    return this.#slots.tryAcquire();
  }

  /** Takes a slot of `hostname`'s address if one is free (always, without a limit). */
  takeAddress(hostname: string): boolean {
    return this.#perAddress?.tryAcquire(hostname) ?? true;
  }

  releaseSlot(): void {
    this.#slots.release();
    this.#wakeWaiters();
  }

  releaseAddress(hostname: string): void {
    if (this.#perAddress === undefined) return;
    this.#perAddress.release(hostname);
    this.#wakeWaiters();
  }

  /** Waits up to the grace for a server slot; true once taken. */
  waitForSlot(): Promise<boolean> {
    return this.#wait(() => this.takeSlot());
  }

  /** Waits up to the grace for a slot of `hostname`'s address; true once taken. */
  waitForAddress(hostname: string): Promise<boolean> {
    return this.#wait(() => this.takeAddress(hostname));
  }

  /**
   * Counts one more socket that holds no slot, if the bound allows: false
   * means close it at once, without a word.
   */
  enterWaiting(): boolean {
    if (this.#unadmitted >= this.#maxWaiting) return false;
    this.#unadmitted++;
    return true;
  }

  /** The socket counted by {@linkcode enterWaiting} has gone (or got a slot). */
  leaveWaiting(): void {
    this.#unadmitted--;
  }

  /** Gives every waiting socket its answer now: no slot. */
  cancelWaiting(): void {
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.resolve(false);
    }
  }

  #wait(take: () => boolean): Promise<boolean> {
    if (take()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        take,
        resolve,
        timer: setTimeout(() => {
          const index = this.#waiters.indexOf(waiter);
          if (index >= 0) this.#waiters.splice(index, 1);
          resolve(false);
        }, this.#graceMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /** A slot was freed: the oldest waiters that can take theirs get them. */
  #wakeWaiters() {
    if (this.#waiters.length === 0) return;
    for (let i = 0; i < this.#waiters.length;) {
      const waiter = this.#waiters[i];
      if (!waiter.take()) {
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      clearTimeout(waiter.timer);
      waiter.resolve(true);
    }
  }
}

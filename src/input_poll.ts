/**
 * Runs callbacks once the event loop has asked the kernel which sockets have
 * input: how the turn queue and the read gate let waiting clients in.
 *
 * Deno's event loop (2.9) asks the kernel only when it has nothing else to
 * do, or every 61st turn, so work chained with `setImmediate` or promises
 * never lets a waiting socket in (a client's line waited 110 ms at the
 * median beside a loop of 2 ms tasks chained that way). A timer lets the
 * loop go idle, but a zero-delay timer fires 1 to 2 ms later, and the
 * process sits idle meanwhile: a client pipelining heavy lines got half a
 * CPU. What completes at once and only through the kernel is input itself,
 * so the wake-up is a datagram to a loopback UDP socket of the process's
 * own: its arrival is seen by the same look that sees every other socket's
 * input, 30 µs later (both measured side by side with a 2 ms task: a
 * client's request answered in 1.4 ms at the median with the timer, 1.3 ms
 * with the datagram, and the task ran twice as often with the datagram).
 *
 * The socket exists while a server runs ({@linkcode InputPoll.open} and
 * {@linkcode InputPoll.close}, counted); without it (no server, or no
 * permission to bind a UDP socket on 127.0.0.1) a zero-delay timer does the
 * same, slower.
 *
 * @module
 */
import dgram from "node:dgram";
import { Buffer } from "node:buffer";

const WAKE = Buffer.alloc(1);
const LOOPBACK = "127.0.0.1";

/**
 * A UDP socket bound on the loopback address, or undefined when that is not
 * allowed. The permission is asked, never prompted for: a server allowed
 * only its own address (`--allow-net=0.0.0.0:7000`) runs on timers rather
 * than stop at a prompt.
 */
async function bindLoopback(): Promise<dgram.Socket | undefined> {
  const allowed = Deno.permissions.querySync({
    name: "net",
    host: `${LOOPBACK}:0`,
  });
  if (allowed.state !== "granted") return undefined;
  try {
    const socket = dgram.createSocket("udp4");
    const bound = await new Promise<boolean>((resolve) => {
      socket.once("error", () => resolve(false));
      socket.bind(0, LOOPBACK, () => resolve(true));
    });
    if (bound) return socket;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  } catch {
    // Refused at once: timers do.
  }
  return undefined;
}

/** One per thread (one event loop). */
export class InputPoll {
  #socket: dgram.Socket | undefined;
  #port = 0;
  /** Servers using the socket. */
  #users = 0;
  #closing: Promise<void> = Promise.resolve();
  #callbacks: (() => void)[] = [];
  /** A datagram or a timer is on its way for the callbacks. */
  #pending = false;

  /** True while the datagram socket is open (false: timers wake the loop). */
  get bound(): boolean {
    return this.#socket !== undefined;
  }

  /** A server starts: the socket is opened if it is not yet. */
  async open(): Promise<void> {
    if (this.#users++ > 0) return;
    await this.#closing;
    const socket = await bindLoopback();
    if (socket === undefined) return;
    if (this.#users === 0) {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      return;
    }
    socket.on("error", () => {}); // a lost wake-up is covered below
    socket.on("message", () => this.#run());
    socket.unref();
    this.#port = socket.address().port;
    this.#socket = socket;
  }

  /** A server has finished: the last one closes the socket (resolves once closed). */
  close(): Promise<void> {
    if (this.#users === 0 || --this.#users > 0) return this.#closing;
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined) return this.#closing;
    this.#closing = new Promise<void>((resolve) =>
      socket.close(() => resolve())
    )
      .then(() => {
        // A wake-up sent before the close may never arrive.
        if (this.#pending) this.#run();
      });
    return this.#closing;
  }

  /** Calls `callback` once the loop has looked for input (callbacks in order). */
  after(callback: () => void): void {
    this.#callbacks.push(callback);
    if (this.#pending) return;
    this.#pending = true;
    const socket = this.#socket;
    if (socket === undefined) {
      setTimeout(() => this.#run(), 0);
      return;
    }
    socket.send(WAKE, this.#port, LOOPBACK, (error) => {
      if (error) setTimeout(() => this.#run(), 0);
    });
  }

  #run() {
    if (!this.#pending) return;
    this.#pending = false;
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    for (const callback of callbacks) callback();
  }
}

/** The thread's input poll. */
export const inputPoll: InputPoll = new InputPoll();

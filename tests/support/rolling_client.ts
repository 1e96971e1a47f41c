/**
 * A client that pipelines calculator requests through a load balancer and
 * survives server restarts, for the rolling-restart test. Every client sends
 * the same endless sequence (blocks of ten alternate sum and product mode)
 * and checks every reply byte for byte. When its connection ends
 * (`<server shutting down>`, or EOF) it reconnects, sets its mode again and
 * re-sends the requests not yet answered, so in the end every request has had
 * its one correct reply, in order.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BYE, product, sum, WELCOME } from "./calc_replies.ts";
import { delay, withTimeout } from "./deadline.ts";
import { SHUTTING_DOWN } from "./hardening.ts";

/** Requests a client keeps unanswered at most. */
const WINDOW = 8;
/** Pause after each batch, so the clients do not take all the CPU. */
const PACE_MS = 20;

type Mode = "sum" | "product";

/** The mode in force after request `k`: blocks of ten alternate sum, product, sum... */
function modeAfter(k: number): Mode {
  return Math.floor(k / 10) % 2 === 1 ? "product" : "sum";
}

/** Request `k` of every client's sequence and its one correct reply. */
function request(k: number): { line: string; reply: string } {
  const mode = modeAfter(k);
  if (k % 10 === 0) return { line: mode, reply: `<switching to ${mode} mode>` };
  const numbers = [
    BigInt(k),
    BigInt((k % 7) + 1),
    99999999999n * BigInt((k % 3) + 1),
    -3n,
  ];
  const value = mode === "sum"
    ? numbers.reduce((a, b) => a + b)
    : numbers.reduce((a, b) => a * b);
  return {
    line: numbers.join(","),
    reply: mode === "sum" ? sum(value) : product(value),
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reply lines from one connection; `null` at EOF (a reset counts as EOF). */
class ReplyReader {
  #conn: Deno.Conn;
  #pending = "";
  #eof = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async next(timeoutMs: number): Promise<string | null> {
    while (true) {
      const crlf = this.#pending.indexOf("\r\n");
      if (crlf >= 0) {
        const line = this.#pending.slice(0, crlf);
        this.#pending = this.#pending.slice(crlf + 2);
        return line;
      }
      if (this.#eof) {
        if (this.#pending !== "") {
          // A reply cut short by the close: treat it as not received.
          this.#pending = "";
        }
        return null;
      }
      const buffer = new Uint8Array(16384);
      let n: number | null;
      try {
        n = await withTimeout(this.#conn.read(buffer), timeoutMs, "a reply");
      } catch (error) {
        if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
        n = null;
      }
      if (n === null) this.#eof = true;
      else {this.#pending += decoder.decode(buffer.subarray(0, n), {
          stream: true,
        });}
    }
  }
}

interface Pending {
  /** Index in the client's request sequence, or null for mode and quit lines. */
  k: number | null;
  reply: string;
}

/** One client pipelining requests through HAProxy and surviving restarts. */
export class RollingClient {
  /** Requests answered correctly, in order (= index of the first unanswered one). */
  answered = 0;
  /** Request lines sent again on a new connection after the old one ended. */
  retried = 0;
  /** Connections that got the welcome line. */
  sessions = 0;
  /** Connections ended by `<server shutting down>`. */
  notices = 0;
  /** Connections ended after the welcome without the notice (EOF or reset). */
  abrupt = 0;
  /** Connections HAProxy accepted but ended before any welcome (no backend). */
  noBackend = 0;
  /** The local port of every connection made, as a PROXY header names it. */
  readonly localPorts: number[] = [];
  readonly done: Promise<void>;
  #next = 0;
  #stopping = false;
  #killed = false;
  #conn: Deno.Conn | undefined;

  constructor(readonly id: number, readonly port: number) {
    this.done = this.#run();
  }

  /** Connection endings so far (notices + abrupt ones). */
  get reconnects(): number {
    return this.notices + this.abrupt;
  }

  /** Finish what is in flight, send `quit`, and end. */
  stop(): void {
    this.#stopping = true;
  }

  /** End now (cleanup after a failure). */
  kill(): void {
    this.#killed = true;
    try {
      this.#conn?.close();
    } catch {
      // Already closed.
    }
  }

  async #run(): Promise<void> {
    while (!this.#killed) {
      if (await this.#session()) return;
      await delay(50);
    }
  }

  /** One connection; true once `quit` has been answered. */
  async #session(): Promise<boolean> {
    const conn = await withTimeout(
      Deno.connect({ hostname: "127.0.0.1", port: this.port }),
      2000,
      `client ${this.id} connecting to HAProxy`,
    );
    this.#conn = conn;
    this.localPorts.push((conn.localAddr as Deno.NetAddr).port);
    try {
      return await this.#converse(conn);
    } catch (error) {
      if (this.#killed) return true;
      throw error;
    } finally {
      this.#conn = undefined;
      try {
        conn.close();
      } catch {
        // Closed by kill().
      }
    }
  }

  async #converse(conn: Deno.Conn): Promise<boolean> {
    const replies = new ReplyReader(conn);
    const welcome = await replies.next(5000);
    if (welcome === null) {
      this.noBackend++;
      return false;
    }
    assert.equal(welcome, WELCOME, `client ${this.id}: first line`);
    this.sessions++;
    this.retried += this.#next - this.answered;
    this.#next = this.answered;
    // A new connection starts in sum mode: restore the mode the next request expects.
    const mode = this.answered === 0 ? "sum" : modeAfter(this.answered - 1);
    const inflight: Pending[] = [{
      k: null,
      reply: `<switching to ${mode} mode>`,
    }];
    let out = `${mode}\n`;
    let quitSent = false;
    let writable = true;
    while (true) {
      if (!this.#stopping && inflight.length <= WINDOW / 2) {
        while (inflight.length < WINDOW) {
          const { line, reply } = request(this.#next);
          out += `${line}\n`;
          inflight.push({ k: this.#next++, reply });
        }
      } else if (this.#stopping && !quitSent && inflight.length === 0) {
        out += "quit\n";
        inflight.push({ k: null, reply: BYE });
        quitSent = true;
      }
      if (out !== "" && writable) {
        writable = await this.#write(conn, out);
        out = "";
        await delay(PACE_MS);
      }
      const line = await replies.next(5000);
      if (line === null) {
        this.abrupt++;
        return false;
      }
      if (line === SHUTTING_DOWN) {
        this.notices++;
        assert.equal(
          await replies.next(5000),
          null,
          `client ${this.id}: data after ${SHUTTING_DOWN}`,
        );
        return false;
      }
      const expected = inflight.shift();
      assert.ok(
        expected,
        `client ${this.id}: unexpected reply ${JSON.stringify(line)}`,
      );
      assert.equal(
        line,
        expected.reply,
        `client ${this.id}, request ${expected.k}`,
      );
      if (expected.k !== null) {
        assert.equal(expected.k, this.answered);
        this.answered++;
      }
      if (quitSent && inflight.length === 0) {
        assert.equal(
          await replies.next(5000),
          null,
          `client ${this.id}: data after quit`,
        );
        return true;
      }
    }
  }

  /** Writes all of `text`; false if the connection is gone. */
  async #write(conn: Deno.Conn, text: string): Promise<boolean> {
    let bytes = encoder.encode(text);
    try {
      while (bytes.length > 0) bytes = bytes.subarray(await conn.write(bytes));
      return true;
    } catch (error) {
      if (
        error instanceof Deno.errors.BrokenPipe ||
        error instanceof Deno.errors.ConnectionReset
      ) return false;
      throw error;
    }
  }
}

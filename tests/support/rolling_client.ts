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
import { delay } from "./deadline.ts";
import { LineClient, LineClientError } from "../../mod.ts";
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

/**
 * The next reply line, or null once the connection has ended (closed,
 * reset, or cut in the middle of a reply, which then counts as not
 * received). Waiting longer than `timeoutMs` fails the test.
 */
async function nextReply(
  client: LineClient,
  timeoutMs: number,
): Promise<string | null> {
  try {
    return await client.readLine({ timeoutMs });
  } catch (error) {
    const ended = error instanceof LineClientError &&
      (error.code === "closed" || error.code === "reset");
    if (ended) return null;
    throw error;
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
  #client: LineClient | undefined;

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
    this.#client?.close();
  }

  async #run(): Promise<void> {
    while (!this.#killed) {
      if (await this.#session()) return;
      await delay(50);
    }
  }

  /** One connection; true once `quit` has been answered. */
  async #session(): Promise<boolean> {
    const client = await LineClient.connect({
      port: this.port,
      connectTimeoutMs: 2000,
      // Replies are framed exactly at CRLF: a reply without it, or with a
      // stray LF, would not match.
      terminator: "\r\n",
    });
    this.#client = client;
    this.localPorts.push(client.localPort);
    try {
      return await this.#converse(client);
    } catch (error) {
      if (this.#killed) return true;
      throw error;
    } finally {
      this.#client = undefined;
      await client.close();
    }
  }

  async #converse(client: LineClient): Promise<boolean> {
    const welcome = await nextReply(client, 5000);
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
    const out: string[] = [mode];
    let quitSent = false;
    let writable = true;
    while (true) {
      if (!this.#stopping && inflight.length <= WINDOW / 2) {
        while (inflight.length < WINDOW) {
          const { line, reply } = request(this.#next);
          out.push(line);
          inflight.push({ k: this.#next++, reply });
        }
      } else if (this.#stopping && !quitSent && inflight.length === 0) {
        out.push("quit");
        inflight.push({ k: null, reply: BYE });
        quitSent = true;
      }
      if (out.length > 0 && writable) {
        writable = await this.#write(client, out.splice(0));
        await delay(PACE_MS);
      }
      const line = await nextReply(client, 5000);
      if (line === null) {
        this.abrupt++;
        return false;
      }
      if (line === SHUTTING_DOWN) {
        this.notices++;
        assert.equal(
          await nextReply(client, 5000),
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
          await nextReply(client, 5000),
          null,
          `client ${this.id}: data after quit`,
        );
        return true;
      }
    }
  }

  /** Sends `lines` in one write; false if the connection is gone. */
  async #write(client: LineClient, lines: string[]): Promise<boolean> {
    try {
      await client.send(...lines);
      return true;
    } catch (error) {
      if (error instanceof LineClientError) return false;
      throw error;
    }
  }
}

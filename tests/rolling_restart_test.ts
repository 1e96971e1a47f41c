/**
 * A rolling restart behind HAProxy loses no request (SPEC §6 and §8 together).
 *
 * HAProxy (Debian package `haproxy`) runs `deploy/haproxy.cfg` on free loopback
 * ports in front of two `server.ts` instances with `--admin-port`. Clients
 * pipeline calculator requests through HAProxy without pause, switching
 * between sum and product mode, and check every reply byte for byte. Instance
 * 1 gets SIGTERM, is replaced on the same ports, and once HAProxy sees the
 * replacement UP the same happens to instance 2. A client whose connection ends
 * (`<server shutting down>`, or EOF) reconnects through HAProxy, sets its mode
 * again and re-sends the requests not yet answered. In the end every request
 * has had its one correct reply, in order.
 */
import assert from "node:assert/strict";
import { delay, withTimeout } from "./support/deadline.ts";
import { waitForHealth } from "./support/admin_client.ts";
import {
  freePort,
  haproxyMissingReason,
  HaproxyProcess,
} from "./support/haproxy.ts";
import { ServerProcess } from "./support/server_process.ts";

const missing = await haproxyMissingReason();
if (missing) console.error(`rolling_restart_test.ts: ignoring: ${missing}`);

const WELCOME = "<welcome: starting in sum mode>";
const SHUTTING_DOWN = "<server shutting down>";
const CLIENTS = 4;
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
    reply: mode === "sum"
      ? `Sum of input integers: '${value}'`
      : `Product of input integers: '${value}'`,
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
class RollingClient {
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
        inflight.push({ k: null, reply: "connection closed" });
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

async function waitFor(
  what: string,
  condition: () => boolean,
  timeoutMs: number,
  failure?: Promise<unknown>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms: ${what}`);
    }
    await Promise.race(failure ? [delay(25), failure] : [delay(25)]);
  }
}

/** `n` distinct ports that were free a moment ago. */
function distinctFreePorts(n: number): number[] {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(freePort());
  return [...ports];
}

Deno.test({
  name: missing
    ? `rolling restart behind HAProxy loses no request (ignored: ${missing})`
    : "rolling restart behind HAProxy loses no request",
  ignore: missing !== undefined,
  fn: async () => {
    const [front, stats, ...instancePorts] = distinctFreePorts(6);
    const instances = [0, 1].map((i) => ({
      name: `lineservers/ls${i + 1}`,
      port: instancePorts[2 * i],
      admin: instancePorts[2 * i + 1],
    }));
    const args = (i: number) => [
      "--port",
      String(instances[i].port),
      "--admin-port",
      String(instances[i].admin),
      "--shutdown-timeout",
      "5",
    ];
    const servers: (ServerProcess | undefined)[] = [undefined, undefined];
    let haproxy: HaproxyProcess | undefined;
    const clients: RollingClient[] = [];
    const started = Date.now();
    try {
      [servers[0], servers[1]] = await Promise.all(
        [0, 1].map((i) => ServerProcess.start(args(i))),
      );
      haproxy = await HaproxyProcess.start({
        LINESERVER_FRONTEND: `127.0.0.1:${front}`,
        LINESERVER_1: `127.0.0.1:${instances[0].port}`,
        LINESERVER_1_ADMIN: String(instances[0].admin),
        LINESERVER_2: `127.0.0.1:${instances[1].port}`,
        LINESERVER_2_ADMIN: String(instances[1].admin),
      }, stats);
      for (const { name } of instances) await haproxy.waitForStatus(name, "UP");

      for (let id = 0; id < CLIENTS; id++) {
        clients.push(new RollingClient(id, front));
      }
      const failed = Promise.race(clients.map((c) => c.done)).then(
        () => {
          throw new Error("A client ended early");
        },
      );
      failed.catch(() => {}); // Observed through waitFor below.
      const progress = async (what: string) => {
        const marks = clients.map((c) => c.answered);
        await waitFor(
          `every client gets 20 more replies ${what}`,
          () => clients.every((c, i) => c.answered >= marks[i] + 20),
          10000,
          failed,
        );
      };
      await progress("at the start");

      const reconnectsPerRestart: number[] = [];
      for (let i = 0; i < 2; i++) {
        const before = clients.reduce((sum, c) => sum + c.reconnects, 0);
        const old = servers[i]!;
        old.signal("SIGTERM");
        // The drain turns /healthz to 503 (then the port closes): HAProxy takes it out.
        await haproxy.waitForStatus(instances[i].name, "DOWN", 10000);
        const status = await old.waitForExit(10000);
        assert.equal(status.code, 0, old.stderr);
        servers[i] = undefined;

        servers[i] = await ServerProcess.start(args(i));
        await waitForHealth(instances[i].admin, (r) => r.status === 200, 10000);
        await haproxy.waitForStatus(instances[i].name, "UP", 10000);
        await progress(`after restarting instance ${i + 1}`);
        reconnectsPerRestart.push(
          clients.reduce((sum, c) => sum + c.reconnects, 0) - before,
        );
      }

      for (const client of clients) client.stop();
      await withTimeout(
        Promise.all(clients.map((c) => c.done)),
        15000,
        "clients finishing",
      );

      const total = (key: keyof RollingClient) =>
        clients.reduce((sum, c) => sum + (c[key] as number), 0);
      console.log(
        `rolling restart: ${
          total("answered")
        } requests answered by ${CLIENTS} clients in ${
          Date.now() - started
        } ms; ${
          total("retried")
        } re-sent after a restart; connections ended by ` +
          `notice ${total("notices")}, abruptly ${total("abrupt")}; ` +
          `${
            total("noBackend")
          } got no backend; reconnects per restart ${reconnectsPerRestart}`,
      );
      // Every client finished its sequence: each request answered once, correctly, in order.
      for (const client of clients) {
        assert.ok(client.answered >= 60, `client ${client.id}`);
      }
      // Each restart really moved clients, and the drain told at least one of them.
      for (const n of reconnectsPerRestart) {
        assert.ok(n >= 1, `reconnects ${reconnectsPerRestart}`);
      }
      assert.ok(
        total("notices") >= 1,
        "no client ever saw <server shutting down>",
      );
    } finally {
      for (const client of clients) client.kill();
      await Promise.allSettled(clients.map((c) => c.done));
      await haproxy?.stop();
      await Promise.all(servers.map((s) => s?.stop()));
    }
  },
});

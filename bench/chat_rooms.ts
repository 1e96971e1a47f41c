/**
 * The rooms and members of `chat_fanout.ts`: chat servers as child
 * processes (one with the room of its process, or two instances of a room on
 * a `redis-server` of their own), and members that count what they receive.
 *
 * @module
 */

const HOST = "127.0.0.1";
const LF = 10;

/** A running room: its instances' ports; disposing of it stops every process. */
export interface Room extends AsyncDisposable {
  kind: "local" | "redis";
  ports: number[];
  /** The processes whose CPU time tells where the bound is. */
  pids: { instances: number[]; redis?: number };
}

/** Starts `serverFile --serve [REDIS_URL]` children: one, or two on a fresh Redis. */
export async function startRoom(
  kind: "local" | "redis",
  serverFile: string,
): Promise<Room> {
  const children: Deno.ChildProcess[] = [];
  const stop = async () => {
    for (const child of children) {
      try {
        await child.stdin.close();
      } catch {
        child.kill("SIGKILL");
      }
    }
    await Promise.allSettled(children.map((child) => child.status));
  };
  try {
    let args = ["--serve"];
    if (kind === "redis") {
      const port = freePort();
      children.push(
        new Deno.Command("redis-server", {
          args: [
            "--port",
            `${port}`,
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
          ],
          stdin: "piped",
          stdout: "null",
          stderr: "inherit",
        }).spawn(),
      );
      await untilRedisAnswers(port);
      args = ["--serve", `redis://${HOST}:${port}`];
    }
    const ports: number[] = [];
    for (let i = 0; i < (kind === "redis" ? 2 : 1); i++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", `--allow-net=${HOST}`, serverFile, ...args],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      children.push(child);
      ports.push(await readPort(child.stdout));
    }
    const redis = kind === "redis" ? children.shift() : undefined;
    return {
      kind,
      ports,
      pids: {
        instances: children.map((child) => child.pid),
        redis: redis?.pid,
      },
      async [Symbol.asyncDispose]() {
        await stop();
        // Redis last: the instances leave the room first.
        redis?.kill("SIGKILL");
        await redis?.status;
      },
    };
  } catch (error) {
    for (const child of children) child.kill("SIGKILL");
    await Promise.allSettled(children.map((child) => child.status));
    throw error;
  }
}

/** A loopback port that was free a moment ago. */
function freePort(): number {
  using listener = Deno.listen({ hostname: HOST, port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

async function untilRedisAnswers(port: number) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      using conn = await Deno.connect({ hostname: HOST, port });
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buffer = new Uint8Array(16);
      if ((await conn.read(buffer)) !== null) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error("redis-server did not answer");
}

/** Reads `port N` from a child's stdout, then lets the rest drain. */
async function readPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("The chat server exited before listening");
    text += value;
  }
  reader.releaseLock();
  const match = /^port (\d+)$/m.exec(text);
  if (!match) throw new Error(`Cannot read the port: received ${text}`);
  return Number(match[1]);
}

/** The `q` quantile of sorted `values`. */
export function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  return values[Math.min(values.length - 1, Math.floor(q * values.length))];
}

/** `NAME: sS mN MICROS fan`: a message and when it was sent (performance.now, µs). */
const MESSAGE = /^[^:]+: s\d+ m\d+ (\d+) fan$/;

/**
 * One member: counts the lines it receives, writes what it is told to; a
 * probe also times every message it receives (sender and probe share this
 * process's clock).
 */
export class Member {
  readonly conn: Deno.TcpConn;
  /** Lines received since it connected (its welcome included). */
  received = 0;
  /** Messages it has sent (senders only). */
  sent = 0;
  ended = false;
  /** Delivery times in ms, of the messages a probe received. */
  readonly latencies: number[] = [];
  readonly reading: Promise<void>;
  readonly #probe: boolean;

  private constructor(conn: Deno.TcpConn, probe: boolean) {
    this.conn = conn;
    this.#probe = probe;
    this.reading = this.#read();
  }

  static async connect(port: number, probe: boolean): Promise<Member> {
    return new Member(await Deno.connect({ hostname: HOST, port }), probe);
  }

  async #read() {
    const buffer = new Uint8Array(256 * 1024);
    const decoder = new TextDecoder();
    let partial = "";
    try {
      while (true) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        if (!this.#probe) {
          for (let i = 0; i < n; i++) if (buffer[i] === LF) this.received++;
          continue;
        }
        const now = performance.now();
        const lines = (partial + decoder.decode(buffer.subarray(0, n), {
          stream: true,
        })).split("\r\n");
        partial = lines.pop()!;
        this.received += lines.length;
        for (const line of lines) {
          const match = MESSAGE.exec(line);
          if (match) this.latencies.push(now - Number(match[1]) / 1000);
        }
      }
    } catch {
      // A reset: counted as ended below.
    }
    this.ended = true;
  }

  async write(bytes: Uint8Array) {
    while (bytes.length > 0) {
      bytes = bytes.subarray(await this.conn.write(bytes));
    }
  }

  close() {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

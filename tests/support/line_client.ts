/**
 * A raw TCP client for tests: sends bytes, reads reply lines with time bounds,
 * and observes how the server ends the connection.
 *
 * @module
 */
import { withTimeout } from "./deadline.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How long a single read waits unless a test says otherwise. */
export const DEFAULT_READ_TIMEOUT_MS = 5000;

/** A test client speaking the wire: every reply is checked byte for byte. */
export class LineClient {
  readonly conn: Deno.TcpConn;
  #pending = new Uint8Array(0);
  #eof = false;
  #closed = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to `port` on 127.0.0.1 (or `host`). */
  static async connect(
    port: number,
    options: { host?: string; timeoutMs?: number } = {},
  ): Promise<LineClient> {
    const conn = await withTimeout(
      Deno.connect({ hostname: options.host ?? "127.0.0.1", port }),
      options.timeoutMs ?? DEFAULT_READ_TIMEOUT_MS,
      `connect to port ${port}`,
    );
    return new LineClient(conn);
  }

  /** Writes all of `data` (a string is sent as UTF-8). */
  async send(data: string | Uint8Array): Promise<void> {
    let bytes = typeof data === "string" ? encoder.encode(data) : data;
    while (bytes.length > 0) {
      const n = await this.conn.write(bytes);
      bytes = bytes.subarray(n);
    }
  }

  /** True once the server's FIN (or a reset) has been seen. */
  get eof(): boolean {
    return this.#eof;
  }

  /** Bytes received but not yet returned by a read call. */
  get buffered(): Uint8Array {
    return this.#pending;
  }

  async #fill(timeoutMs: number, what: string): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(65536);
    let n: number | null;
    try {
      n = await withTimeout(this.conn.read(chunk), timeoutMs, what);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) n = null;
      else throw error;
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const merged = new Uint8Array(this.#pending.length + n);
    merged.set(this.#pending);
    merged.set(chunk.subarray(0, n), this.#pending.length);
    this.#pending = merged;
    return true;
  }

  /**
   * Reads one reply line and returns it without its `\r\n`. Fails if the line
   * does not end with `\r\n`, if the connection ends first, or on timeout.
   */
  async readLine(timeoutMs = DEFAULT_READ_TIMEOUT_MS): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const lf = this.#pending.indexOf(10);
      if (lf >= 0) {
        const raw = this.#pending.subarray(0, lf + 1);
        this.#pending = this.#pending.slice(lf + 1);
        const text = decoder.decode(raw);
        if (!text.endsWith("\r\n")) {
          throw new Error(
            `Reply line not ended by CRLF: ${JSON.stringify(text)}`,
          );
        }
        return text.slice(0, -2);
      }
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.#fill(left, "reading a reply line"))) {
        if (this.#eof) {
          throw new Error(
            `Connection ended before a full line; got ${
              JSON.stringify(decoder.decode(this.#pending))
            }`,
          );
        }
        throw new Error(`Timed out after ${timeoutMs} ms reading a reply line`);
      }
    }
  }

  /** Reads `count` reply lines. */
  async readLines(
    count: number,
    timeoutMs = DEFAULT_READ_TIMEOUT_MS,
  ): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const lines: string[] = [];
    for (let i = 0; i < count; i++) {
      lines.push(await this.readLine(Math.max(1, deadline - Date.now())));
    }
    return lines;
  }

  /**
   * Reads everything until the server closes the connection and returns it as
   * text (including any bytes already buffered). Fails on timeout.
   */
  async readToEnd(timeoutMs = DEFAULT_READ_TIMEOUT_MS): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#eof) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for the server to close`,
        );
      }
      await this.#fill(left, "waiting for the server to close");
    }
    const text = decoder.decode(this.#pending);
    this.#pending = new Uint8Array(0);
    return text;
  }

  /** Asserts the server has closed: nothing more than `expected` arrives, then EOF. */
  async expectClosed(timeoutMs = DEFAULT_READ_TIMEOUT_MS): Promise<void> {
    const rest = await this.readToEnd(timeoutMs);
    if (rest !== "") {
      throw new Error(
        `Expected the connection to close, got ${JSON.stringify(rest)}`,
      );
    }
  }

  /** Half-closes: sends FIN, keeps reading possible. */
  async closeWrite(): Promise<void> {
    await this.conn.closeWrite();
  }

  /** Closes the socket (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by a failed operation.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

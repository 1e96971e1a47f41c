/**
 * A fast reader of CRLF lines for tests that receive megabytes of them
 * (`LineClient` copies its buffer on every line, which is fine for replies
 * but not for floods).
 *
 * @module
 */
import { DEFAULT_READ_TIMEOUT_MS } from "./line_client.ts";
import { withTimeout } from "./deadline.ts";

/**
 * Reads a connection's lines, decoded as UTF-8, without their CRLF. Use it
 * instead of, never together with, another reader of the same connection
 * (it reads ahead).
 */
export class BulkReader {
  readonly #conn: Deno.Conn;
  readonly #decoder = new TextDecoder();
  readonly #buffer = new Uint8Array(64 * 1024);
  #lines: string[] = [];
  #next = 0;
  #partial = "";

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next line; fails if the connection ends first, or after `timeoutMs`. */
  async readLine(timeoutMs = DEFAULT_READ_TIMEOUT_MS): Promise<string> {
    while (this.#next === this.#lines.length) {
      const n = await withTimeout(
        this.#conn.read(this.#buffer),
        timeoutMs,
        "reading lines",
      );
      if (n === null) {
        throw new Error(
          `Connection ended before a full line; got ${
            JSON.stringify(this.#partial)
          }`,
        );
      }
      const text = this.#partial +
        this.#decoder.decode(this.#buffer.subarray(0, n), { stream: true });
      this.#lines = text.split("\r\n");
      this.#partial = this.#lines.pop()!;
      this.#next = 0;
    }
    return this.#lines[this.#next++];
  }
}

/**
 * A fast reader of CRLF lines for tests that receive megabytes of them from
 * a raw connection (`LineClient` copies its buffer on every line, which is
 * fine for replies but not for floods). Lines are cut by the project's own
 * framer, exactly at CRLF.
 *
 * @module
 */
import { DEFAULT_READ_TIMEOUT_MS } from "./line_client.ts";
import { withTimeout } from "./deadline.ts";
import { FrameDecoder } from "../../src/frame_decoder.ts";

/**
 * Reads a connection's lines, decoded as UTF-8, without their CRLF. Use it
 * instead of, never together with, another reader of the same connection
 * (it reads ahead).
 */
export class BulkReader {
  readonly #conn: Deno.Conn;
  readonly #buffer = new Uint8Array(64 * 1024);
  readonly #decoder = new FrameDecoder({
    terminator: "\r\n",
    maxFrameBytes: 1024 * 1024,
  });

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next line; fails if the connection ends first, or after `timeoutMs`. */
  async readLine(timeoutMs = DEFAULT_READ_TIMEOUT_MS): Promise<string> {
    while (true) {
      const frame = this.#decoder.next();
      if (typeof frame === "string") return frame;
      if (frame !== undefined) throw new Error("A line over 1 MiB arrived");
      this.#decoder.release();
      const n = await withTimeout(
        this.#conn.read(this.#buffer),
        timeoutMs,
        "reading lines",
      );
      if (n === null) {
        throw new Error(
          `Connection ended before a full line (${this.#decoder.bufferedBytes} bytes of it arrived)`,
        );
      }
      this.#decoder.push(this.#buffer.subarray(0, n));
    }
  }
}

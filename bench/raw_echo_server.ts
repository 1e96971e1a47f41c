/**
 * The reference point for the benchmark: the least a Deno TCP server can do
 * per request. Each connection reads a chunk into one buffer and writes those
 * bytes back (looping on partial writes), nothing else: no framing, no
 * decoding, no logging. Like `server.ts` it turns Nagle's algorithm off
 * (`setNoDelay`), so both answer with the same TCP settings; without it a
 * small reply can wait for a delayed ACK (about 40 ms). Prints `listening on HOST:PORT` to stderr like
 * `server.ts` so `bench/run.ts` can start both the same way.
 *
 * Usage: `deno run --allow-net=127.0.0.1 bench/raw_echo_server.ts [--host H] [--port P]`
 *
 * @module
 */

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(name);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

async function echo(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(16384);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let written = 0;
      while (written < n) {
        written += await conn.write(buffer.subarray(written, n));
      }
    }
  } catch {
    // A reset peer ends only its own connection.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

if (import.meta.main) {
  const listener = Deno.listen({
    hostname: option("--host", "127.0.0.1"),
    port: Number(option("--port", "0")),
  });
  const { hostname, port } = listener.addr;
  console.error(`listening on ${hostname}:${port}`);
  for await (const conn of listener) echo(conn);
}

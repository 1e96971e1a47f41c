/**
 * The reference point for the benchmark: the least a Deno TCP server can do
 * per request. Each connection reads a chunk and writes those bytes back,
 * nothing else: no framing, no decoding, no logging. Two socket layers:
 *
 * - `--api deno` (default): `Deno.listen`, then `conn.read` into one buffer
 *   and `conn.write` (looping on partial writes) per connection;
 * - `--api node`: `node:net` in Deno, one `data` handler that writes each
 *   chunk straight back.
 *
 * Like `server.ts` it turns Nagle's algorithm off (`setNoDelay`), so both
 * answer with the same TCP settings; without it a small reply can wait for a
 * delayed ACK (about 40 ms). Prints `listening on HOST:PORT` to stderr like
 * `server.ts` so the bench starts both the same way.
 *
 * Usage: `deno run --allow-net=127.0.0.1 bench/raw_echo_server.ts [--api deno|node] [--host H] [--port P]`
 *
 * @module
 */
import net from "node:net";

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

async function serveDeno(hostname: string, port: number): Promise<void> {
  const listener = Deno.listen({ hostname, port });
  console.error(`listening on ${hostname}:${listener.addr.port}`);
  for await (const conn of listener) echo(conn);
}

function serveNode(host: string, port: number): void {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {}); // A reset peer ends only its own connection.
    socket.on("data", (chunk) => socket.write(chunk));
  });
  server.listen(port, host, () => {
    const { port } = server.address() as net.AddressInfo;
    console.error(`listening on ${host}:${port}`);
  });
}

if (import.meta.main) {
  const host = option("--host", "127.0.0.1");
  const port = Number(option("--port", "0"));
  const api = option("--api", "deno");
  if (api === "node") serveNode(host, port);
  else if (api === "deno") await serveDeno(host, port);
  else {
    console.error(`Unknown --api: received "${api}" (deno or node)`);
    Deno.exit(2);
  }
}

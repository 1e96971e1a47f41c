/**
 * A bare discard server for `memory_mechanism.ts`: it reads every byte its
 * clients send and keeps none of them, so whatever memory it holds after a
 * load is what the runtime's read path left behind. Plain JavaScript, so the
 * same file runs under Deno and under Node.js.
 *
 * Read paths (`--read`):
 *
 * - `data` (default): `node:net`, a `data` handler that drops each chunk;
 * - `onread`: `node:net`, every accepted socket created with Node's `onread`
 *   option (`{ buffer, callback }`), all of them reading into one shared
 *   64 KiB buffer (the server's `_createSocket(handle)` is replaced to pass
 *   it: `net.createServer` has no option for accepted sockets);
 * - `deno`: `Deno.listen`, `conn.read` into one 64 KiB buffer per
 *   connection (Deno only).
 *
 * What a program can do to itself (`--gc-every MS`, `--trim`,
 * `--v8-flags-at-run-time "FLAGS"`):
 *
 * - `--gc-every MS`: a full collection every MS milliseconds, with a `gc`
 *   obtained at run time (no `--expose-gc` on the command line):
 *   `v8.setFlagsFromString("--expose-gc")`, then a new context
 *   (`vm.runInNewContext("gc")`) is created with the flag in force;
 * - `--trim`: after each such collection, glibc's `malloc_trim(0)` through
 *   `Deno.dlopen` (Deno with `--allow-ffi`): hands freed heap pages back;
 * - `--v8-flags-at-run-time`: `v8.setFlagsFromString` once at start.
 *
 * It prints `listening on HOST:PORT (RUNTIME)` on stderr. A line `m` on
 * stdin is answered on stdout with one JSON line: `process.memoryUsage()`,
 * the bytes read so far and the connections open, so the only JavaScript
 * that runs between loads is the measurement itself.
 *
 * Usage: `deno run --allow-net=127.0.0.1 bench/memory_discard_server.mjs
 * [--read data|onread|deno] [--gc-every MS] [--trim]` or
 * `node bench/memory_discard_server.mjs [--read data|onread]`.
 *
 * @module
 */
import net from "node:net";
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";

const READ_BUFFER_BYTES = 64 * 1024;

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length
    ? process.argv[at + 1]
    : fallback;
}

const isDeno = typeof Deno !== "undefined";
const runtime = isDeno
  ? `Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`
  : `Node.js ${process.version}, V8 ${process.versions.v8}`;
const read = option("--read", "data");
const gcEveryMs = Number(option("--gc-every", "0"));
const trim = process.argv.includes("--trim");
const runTimeFlags = option("--v8-flags-at-run-time", "");

let bytesRead = 0;
let connections = 0;

for (const flag of runTimeFlags.split(" ").filter((f) => f)) {
  v8.setFlagsFromString(flag);
}

/** A full collection obtained at run time, or why there is none. */
function runTimeGc() {
  v8.setFlagsFromString("--expose-gc");
  // A context made while the flag is set gets `gc`; the heap is the
  // isolate's, so collecting from there collects everything.
  const gc = vm.runInNewContext("typeof gc === 'function' ? gc : undefined");
  return typeof gc === "function" ? gc : undefined;
}

/** glibc's malloc_trim(0) through FFI, when the runtime allows it. */
function mallocTrim() {
  if (!isDeno) throw new Error("--trim needs Deno (Deno.dlopen)");
  const libc = Deno.dlopen("libc.so.6", {
    malloc_trim: { parameters: ["usize"], result: "i32" },
  });
  return () => libc.symbols.malloc_trim(0);
}

if (gcEveryMs > 0) {
  const gc = runTimeGc();
  if (gc === undefined) {
    console.error("no gc at run time: vm.runInNewContext('gc') is undefined");
    process.exit(1);
  }
  const trimNow = trim ? mallocTrim() : () => {};
  setInterval(() => {
    gc();
    trimNow();
  }, gcEveryMs);
}

function onConnection(socket) {
  connections++;
  socket.on("error", () => {}); // A reset peer ends only its own connection.
  socket.on("close", () => connections--);
  if (read === "data") socket.on("data", (chunk) => bytesRead += chunk.length);
  socket.resume();
}

function serveNode(host, port) {
  const server = net.createServer(onConnection);
  if (read === "onread") {
    const shared = new Uint8Array(READ_BUFFER_BYTES);
    const callback = (n) => {
      bytesRead += n;
      return true;
    };
    // What Server.prototype._createSocket does, plus `onread`: the handle
    // then reads into `shared`, and no buffer is allocated per read.
    server._createSocket = function (handle) {
      const socket = new net.Socket({
        handle,
        allowHalfOpen: this.allowHalfOpen,
        pauseOnCreate: this.pauseOnConnect,
        readable: true,
        writable: true,
        onread: { buffer: shared, callback },
      });
      socket.server = this;
      socket._server = this;
      return socket;
    };
  }
  server.listen(port, host, () => {
    console.error(
      `listening on ${host}:${server.address().port} (${runtime})`,
    );
  });
}

async function discard(conn) {
  connections++;
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      bytesRead += n;
    }
  } catch {
    // A reset peer ends only its own connection.
  } finally {
    connections--;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

async function serveDeno(hostname, port) {
  if (!isDeno) throw new Error("--read deno needs Deno");
  const listener = Deno.listen({ hostname, port });
  console.error(`listening on ${hostname}:${listener.addr.port} (${runtime})`);
  for await (const conn of listener) discard(conn);
}

let pending = "";
process.stdin.setEncoding("latin1");
process.stdin.on("data", (text) => {
  pending += text;
  let newline;
  while ((newline = pending.indexOf("\n")) >= 0) {
    pending = pending.slice(newline + 1);
    const usage = process.memoryUsage();
    process.stdout.write(
      JSON.stringify({ ...usage, bytesRead, connections }) + "\n",
    );
  }
});
process.stdin.on("end", () => process.exit(0));

const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "0"));
if (read === "data" || read === "onread") serveNode(host, port);
else if (read === "deno") await serveDeno(host, port);
else {
  console.error(`Unknown --read: received "${read}" (data, onread or deno)`);
  process.exit(2);
}

/**
 * Does a TLS server socket see the client's half-close? A probe on plain
 * `node:net` + `node:tls`, no lineserver code, runnable unchanged under Deno
 * and Node.js so the two can be compared:
 *
 *   deno run --allow-net=127.0.0.1 --allow-env --allow-read --allow-write --allow-run=openssl bench/tls_half_close.mjs
 *   node bench/tls_half_close.mjs
 *
 * For each way of reading the server side (a row) and each payload size (a
 * column), a client connects over TLS, sends the payload, and half-closes
 * (close_notify, then FIN). The cell says whether the server's TLS socket
 * emitted `'end'` within 2 s; the server answers its `'end'` with its own,
 * so the client sees EOF only when the server did.
 *
 * What it shows on Deno 2.9: `'end'` is lost once 64 KiB or more of
 * decrypted bytes were waiting while the TLS socket was paused. Resuming it
 * hands them all to the stream at once; the stream's buffer then passes its
 * high-water mark (64 KiB), so the stream stops the TLS handle again in the
 * middle of that hand-over, and the peer's close_notify, which was waiting
 * with the bytes, is dropped instead of being kept for the next read.
 * Raising the stream's readable high-water mark keeps that stop from
 * happening (the last rows). Node.js sees `'end'` in every cell.
 *
 * Options: `--sizes 60000,65536,...` (bytes), `--rows name,name` (a subset).
 *
 * @module
 */
import net from "node:net";
import tls from "node:tls";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

const END_WAIT_MS = 2000;
/** How long the server keeps its TLS socket paused while the client sends. */
const PAUSE_MS = 150;
const DEFAULT_SIZES = [60000, 65535, 65536, 100000, 2000000];

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length
    ? process.argv[at + 1]
    : fallback;
}

/** A throwaway self-signed certificate for 127.0.0.1, made with openssl. */
function makeCertificate() {
  const dir = mkdtempSync(join(tmpdir(), "tls-half-close-"));
  try {
    execFileSync("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ], { stdio: "ignore" });
    return {
      cert: readFileSync(join(dir, "cert.pem"), "utf8"),
      key: readFileSync(join(dir, "key.pem"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Lets the stream buffer any amount: the workaround (as in src/tls.ts). */
function unboundReadable(secure) {
  secure._readableState.highWaterMark = Number.MAX_SAFE_INTEGER;
  return secure;
}

/** A Duplex over the raw socket, so `node:tls` cannot use its native handle. */
function duplexOver(socket) {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy();
      callback(error);
    },
  });
  socket.on("data", (chunk) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("error", (error) => duplex.destroy(error));
  return duplex;
}

/** Pauses at 'secure' (as a server does while it admits a client), resumes later. */
function pauseThenResume(secure) {
  secure.once("secure", () => {
    secure.pause();
    setTimeout(() => secure.resume(), PAUSE_MS);
  });
  return secure;
}

/** Pauses after every chunk, resumes on the next macrotask (a server yielding its turn). */
function pausePerChunk(secure) {
  secure.on("data", () => {
    secure.pause();
    setTimeout(() => secure.resume(), 0);
  });
  return secure;
}

/** Paused mode: reads with 'readable' and read(), from a while after 'secure' on. */
function readLoop(secure, record) {
  record.readsItself = true;
  secure.once("secure", () => {
    setTimeout(() => {
      secure.on("readable", () => {
        let chunk;
        while ((chunk = secure.read()) !== null) {
          record.received += chunk.length;
        }
      });
    }, PAUSE_MS);
  });
  return secure;
}

/**
 * The ways of reading the server side. Each gets the accepted raw socket
 * (paused), the certificate and a `record` of what the server saw, and
 * returns the TLS socket (or `{ deferred: true }` when it attaches one
 * later with `record.attach`).
 */
const ROWS = {
  "flowing": (raw, creds) => serverSocket(raw, creds),
  "paused-then-resumed": (raw, creds) =>
    pauseThenResume(serverSocket(raw, creds)),
  "paused-per-chunk": (raw, creds) => pausePerChunk(serverSocket(raw, creds)),
  "read()-loop": (raw, creds, record) =>
    readLoop(serverSocket(raw, creds), record),
  /** The raw socket handed to a tls.Server as a 'connection'. */
  "tls.Server": (raw, creds, record) => {
    const server = tls.createServer({ ...creds, allowHalfOpen: true });
    server.on("secureConnection", (socket) => {
      record.attach(socket);
      socket.pause();
      setTimeout(() => socket.resume(), PAUSE_MS);
    });
    server.emit("connection", raw);
    return { deferred: true };
  },
  /** Also listens for the raw TCP socket's own 'end'. */
  "raw 'end' too": (raw, creds, record) => {
    raw.on("end", () => record.rawEnd = true);
    return pauseThenResume(serverSocket(raw, creds));
  },
  /** TLS over a JS Duplex wrapping the raw socket (not its native handle). */
  "Duplex transport": (raw, creds) => {
    const secure = serverSocket(duplexOver(raw), creds);
    raw.resume();
    return pauseThenResume(secure);
  },
  /** The TLSSocket option (both directions): moves the threshold only. */
  "highWaterMark 1MiB": (raw, creds) =>
    pauseThenResume(serverSocket(raw, creds, { highWaterMark: 1 << 20 })),
  "fix: paused-then-resumed": (raw, creds) =>
    pauseThenResume(unboundReadable(serverSocket(raw, creds))),
  "fix: paused-per-chunk": (raw, creds) =>
    pausePerChunk(unboundReadable(serverSocket(raw, creds))),
  "fix: read()-loop": (raw, creds, record) =>
    readLoop(unboundReadable(serverSocket(raw, creds)), record),
};

function serverSocket(raw, creds, extra = {}) {
  const secure = new tls.TLSSocket(raw, {
    isServer: true,
    ...creds,
    ...extra,
  });
  secure.allowHalfOpen = true;
  return secure;
}

/** One connection: returns what the server saw. */
function trial(rowName, size, creds) {
  return new Promise((resolve) => {
    const record = {
      received: 0,
      end: false,
      rawEnd: false,
      readsItself: false,
    };
    let secure;
    const attach = (socket) => {
      secure = socket;
      // A row reading with read() counts there: 'data' would make it flow.
      if (!record.readsItself) {
        socket.on("data", (chunk) => record.received += chunk.length);
      }
      socket.on("end", () => {
        record.end = true;
        socket.end();
      });
      socket.on("error", () => {});
    };
    record.attach = attach;
    const server = net.createServer(
      { allowHalfOpen: true, pauseOnConnect: true },
      (raw) => {
        raw.on("error", () => {});
        const made = ROWS[rowName](raw, creds, record);
        if (!made.deferred) attach(made);
      },
    );
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      const client = tls.connect({
        port,
        host: "127.0.0.1",
        ca: creds.cert,
        servername: "localhost",
      }, () => client.end(Buffer.alloc(size, 0x61)));
      client.on("data", () => {});
      client.on("error", () => {});
      const finish = () => {
        clearTimeout(timer);
        client.destroy();
        secure?.destroy();
        server.close();
        resolve(record);
      };
      const timer = setTimeout(finish, END_WAIT_MS);
      client.on("end", finish);
    });
  });
}

function cell(record, size) {
  if (record.end) return "end";
  const extra = record.rawEnd ? ", raw end" : "";
  return record.received === size
    ? `LOST${extra}`
    : `LOST (got ${record.received})${extra}`;
}

const sizes = option("--sizes", DEFAULT_SIZES.join(",")).split(",").map(
  Number,
);
const rows = option("--rows", Object.keys(ROWS).join(",")).split(",");
const runtime = typeof Deno === "object"
  ? `Deno ${Deno.version.deno}`
  : `Node.js ${process.versions.node}`;
const creds = makeCertificate();

console.log(
  `${runtime}: does the server's TLS socket emit 'end' after the client sends N bytes and half-closes?`,
);
const width = Math.max(...rows.map((name) => name.length)) + 2;
console.log(
  "".padEnd(width) + sizes.map((size) => `${size} B`.padEnd(12)).join(""),
);
for (const name of rows) {
  let line = name.padEnd(width);
  for (const size of sizes) {
    line += cell(await trial(name, size, creds), size).padEnd(12);
  }
  console.log(line);
}

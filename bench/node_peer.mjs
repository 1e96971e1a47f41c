/**
 * The Node.js peer: the calculator's sum mode written the straightforward way
 * on Node's `net`, the yardstick lineserver's speed is compared against. One
 * `data` handler per socket splits each chunk into lines (keeping the
 * unterminated rest for the next chunk), adds each line's integers with
 * BigInt and answers the whole chunk with one write. It sends the same
 * welcome line and the same reply lines as lineserver in sum mode; it knows
 * no other command (anything that is not a list of integers gets the
 * calculator's error line).
 *
 * Prints `listening on HOST:PORT` to stderr like `server.ts`, so the bench
 * starts every server the same way.
 *
 * Usage: `node bench/node_peer.mjs [--host H] [--port P]`
 *
 * @module
 */
import net from "node:net";

const WELCOME = "<welcome: starting in sum mode>\r\n";
const INVALID = "ERROR. Enter only integers separated by commas\r\n";
const INTEGER = /^[ \t]*[+-]?\d+[ \t]*$/;

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length
    ? process.argv[at + 1]
    : fallback;
}

function reply(line) {
  const items = (line.endsWith("\r") ? line.slice(0, -1) : line).split(",");
  let sum = 0n;
  for (const item of items) {
    if (!INTEGER.test(item)) return INVALID;
    sum += BigInt(item.trim());
  }
  return `Sum of input integers: '${sum}'\r\n`;
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("error", () => {}); // A reset peer ends only its own connection.
  socket.write(WELCOME);
  let rest = "";
  socket.on("data", (chunk) => {
    const lines = (rest + chunk.toString("latin1")).split("\n");
    rest = lines.pop();
    if (lines.length === 0) return;
    let out = "";
    for (const line of lines) out += reply(line);
    socket.write(out);
  });
});

const host = option("--host", "127.0.0.1");
server.listen(Number(option("--port", "0")), host, () => {
  console.error(`listening on ${host}:${server.address().port}`);
});

/**
 * The Node.js peer: the calculator's sum mode written the straightforward way
 * on Node's `net`, the yardstick lineserver's speed is compared against. One
 * `data` handler per socket splits each chunk into lines (keeping the
 * unterminated rest for the next chunk), adds each line's integers with
 * BigInt and answers the whole chunk with one write. It sends the same
 * welcome line and the same reply lines as lineserver in sum mode; it knows
 * no other command (anything that is not a list of integers gets the
 * calculator's error line). A line over 65536 bytes gets lineserver's
 * line-too-long error as soon as it is that long, and its rest is dropped up
 * to the next LF, so that a client streaming without a newline costs it no
 * more than it costs lineserver (the bench's memory scenario).
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
const MAX_LINE = 65536;
const TOO_LONG = `ERROR. Line too long (max ${MAX_LINE} bytes)\r\n`;

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length
    ? process.argv[at + 1]
    : fallback;
}

function reply(line) {
  const bytes = line.endsWith("\r") ? line.length - 1 : line.length;
  if (bytes > MAX_LINE) return TOO_LONG;
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
  let dropping = false; // the rest of a line already answered as too long
  socket.on("data", (chunk) => {
    let text = chunk.toString("latin1");
    if (dropping) {
      const lf = text.indexOf("\n");
      if (lf < 0) return;
      dropping = false;
      text = text.slice(lf + 1);
    }
    const lines = (rest + text).split("\n");
    rest = lines.pop();
    let out = "";
    for (const line of lines) out += reply(line);
    // Longer than the limit even if its last byte is a CR before an LF.
    if (rest.length > MAX_LINE + 1) {
      out += TOO_LONG;
      rest = "";
      dropping = true;
    }
    if (out !== "") socket.write(out);
  });
});

const host = option("--host", "127.0.0.1");
server.listen(Number(option("--port", "0")), host, () => {
  console.error(`listening on ${host}:${server.address().port}`);
});

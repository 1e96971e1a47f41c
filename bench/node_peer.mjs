/**
 * The Node.js peer: the calculator written the straightforward way on Node's
 * `net`, the yardstick lineserver's speed is compared against. One `data`
 * handler per socket splits each chunk into lines (keeping the unterminated
 * rest for the next chunk), folds each line's integers with BigInt and
 * answers the whole chunk with one write. It sends the same welcome line and
 * the same reply lines as lineserver; it knows the `sum` and `product`
 * commands and no other (anything that is not a list of integers gets the
 * calculator's error line). With `--protocol echo` it answers each line with
 * itself instead, and sends no welcome, like lineserver's echo protocol. A
 * line over 65536 bytes gets lineserver's line-too-long error as soon as it
 * is that long, and its rest is dropped up to the next LF, so that a client
 * streaming without a newline costs it no more than it costs lineserver (the
 * bench's memory scenario).
 *
 * Prints `listening on HOST:PORT` to stderr like `server.ts`, so the bench
 * starts every server the same way.
 *
 * Usage: `node bench/node_peer.mjs [--host H] [--port P] [--protocol calc|echo]`
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

/** The reply to one line; `session.product` is the connection's mode. */
function reply(line, session) {
  const bytes = line.endsWith("\r") ? line.length - 1 : line.length;
  if (bytes > MAX_LINE) return TOO_LONG;
  const text = line.endsWith("\r") ? line.slice(0, -1) : line;
  if (text === "sum" || text === "product") {
    session.product = text === "product";
    return `<switching to ${text} mode>\r\n`;
  }
  const items = text.split(",");
  let result = session.product ? 1n : 0n;
  for (const item of items) {
    if (!INTEGER.test(item)) return INVALID;
    const value = BigInt(item.trim());
    result = session.product ? result * value : result + value;
  }
  return session.product
    ? `Product of input integers: '${result}'\r\n`
    : `Sum of input integers: '${result}'\r\n`;
}

/** The echo protocol's reply: the line without its trailing whitespace. */
function echo(line) {
  return line.trimEnd() + "\r\n";
}

const echoing = option("--protocol", "calc") === "echo";

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("error", () => {}); // A reset peer ends only its own connection.
  if (!echoing) socket.write(WELCOME);
  const session = { product: false };
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
    for (const line of lines) {
      out += echoing ? echo(line) : reply(line, session);
    }
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

/**
 * How the owner of an accepted socket receives its bytes: one small API
 * (receive, pause, resume, stop) over the ways a socket can be read.
 *
 * Why one shared read buffer: by default every read hands JavaScript a newly
 * allocated buffer (a 64 KiB slab, or a copy of a short read), freed only
 * when the garbage collector runs, which it rarely does for memory it does
 * not see; and freed memory is kept by the allocator. A client streaming
 * megabytes (even bytes the server drops at once) thus decided how much
 * memory the process held, and it never came back. Accepted plain sockets
 * here read into one buffer shared by every connection (`node:net`'s
 * `onread` option): a read lends its bytes to the socket's owner for the
 * length of one call, and the owner copies only what it keeps.
 *
 * A TLS stream, once its handshake is done, lends its reads the same way:
 * the TLS layer decrypts into the shared buffer, and the encrypted reads of
 * the TCP socket beneath it go into a second shared buffer, which the TLS
 * layer copies from at once. Pausing a TLS stream stops those TCP reads.
 *
 * Every lending socket also passes the read gate (read_gate.ts), so that a
 * few clients streaming at full speed cannot keep the runtime from looking
 * at the other sockets.
 *
 * @module
 */
import net from "node:net";
import type { Duplex } from "node:stream";
import { GATE_WINDOW_MS, ReadGate } from "./read_gate.ts";

/**
 * Who receives a socket's bytes. `bytes` may be lent (a view of the shared
 * read buffer, valid only during the call): copy what you keep. Return false
 * to stop reading until {@linkcode resumeReading}.
 */
export interface ByteReceiver {
  onBytes(bytes: Uint8Array): boolean;
}

/** The size of the read buffers shared by every accepted socket (as libuv reads). */
const SHARED_READ_BYTES = 64 * 1024;
const sharedReadBuffer = new Uint8Array(SHARED_READ_BYTES);
/** Where the TCP sockets beneath TLS read their encrypted bytes. */
const sharedEncryptedBuffer = new Uint8Array(SHARED_READ_BYTES);
/** Where a socket keeps its receiver. */
const RECEIVER = Symbol("receiver");
/** Marks a socket created with the shared read buffer. */
const LENDS_READS = Symbol("lends reads");
/** Its owner wants no bytes now (pauseReading, or a receiver's false). */
const OWNER_PAUSED = Symbol("owner paused");
/** Held at the read gate. */
const GATED = Symbol("gated");
/** Under TLS: the TCP reads beneath were stopped (by the owner or the gate). */
const TCP_PAUSED = Symbol("tcp paused");
/** On the TCP handle beneath TLS: the TLS stream above it. */
const TLS_ABOVE = Symbol("tls above");
/** On the TCP handle beneath TLS: the TLS layer's own `onread`. */
const DELIVER_ENCRYPTED = Symbol("deliver encrypted");

/** A libuv-like stream handle, as Deno's `node:net` has one per socket. */
interface StreamHandle {
  reading?: boolean;
  readStart?(): number;
  readStop?(): number;
  useUserBuffer?(buffer: Uint8Array): void;
  onread?: (this: StreamHandle, buffer?: unknown) => unknown;
  /** Under TLS: the TCP handle that feeds the TLS layer. */
  _nativeTcpHandle?: StreamHandle;
  [TLS_ABOVE]?: ReadingSocket;
  [DELIVER_ENCRYPTED]?: (this: StreamHandle, buffer?: unknown) => unknown;
}

type ReadingSocket = Duplex & {
  [RECEIVER]?: ByteReceiver;
  [LENDS_READS]?: true;
  [OWNER_PAUSED]?: boolean;
  [GATED]?: boolean;
  [TCP_PAUSED]?: boolean;
  _handle?: StreamHandle;
};

const readGate = new ReadGate<ReadingSocket>(GATE_WINDOW_MS, (socket) => {
  socket[GATED] = false;
  if (!socket[OWNER_PAUSED] && !socket.destroyed) startReads(socket);
});

/**
 * Resolves once no socket is held at the read gate, so that no timer of the
 * gate outlives a server that has finished.
 */
export function readGateOpen(): Promise<void> {
  return readGate.opened();
}

/** A read filled the buffer: holds `socket` at the gate when it is closing. */
function passGate(socket: ReadingSocket): boolean {
  if (socket[OWNER_PAUSED] || !readGate.mustWait()) return true;
  socket[GATED] = true;
  readGate.hold(socket);
  stopReads(socket);
  return false;
}

/**
 * The `onread` callback of every lending socket: hands the bytes to its
 * receiver. A false answer stops the socket's reads; under TLS it stops the
 * TCP reads beneath instead, and the TLS layer goes on delivering what it
 * has already decrypted (see {@linkcode pauseReading}).
 */
function onLentRead(this: ReadingSocket, length: number, buffer: Uint8Array) {
  const receiver = this[RECEIVER];
  if (receiver === undefined) return false;
  const underTls = this._handle?._nativeTcpHandle !== undefined;
  if (!receiver.onBytes(buffer.subarray(0, length))) {
    this[OWNER_PAUSED] = true;
    if (!underTls) return false;
    stopReads(this);
    return true;
  }
  // Under TLS the gate watches the encrypted reads (onEncryptedRead).
  if (underTls || length < SHARED_READ_BYTES) return true;
  return passGate(this);
}

/**
 * The `onread` of a TCP handle beneath TLS once its reads are lent: gives
 * the TLS layer the shared buffer (it copies the bytes before it returns)
 * and learns the read's length from the view the layer takes of it.
 */
function onEncryptedRead(this: StreamHandle, buffer?: unknown) {
  encryptedLength = 0;
  const result = this[DELIVER_ENCRYPTED]!.call(this, buffer ?? encryptedView);
  const socket = this[TLS_ABOVE];
  if (encryptedLength === SHARED_READ_BYTES && socket !== undefined) {
    passGate(socket);
  }
  return result;
}

/** The length of the encrypted read being delivered, as the TLS layer takes it. */
let encryptedLength = 0;
/** What the TLS layer reads an encrypted read through (one for every read). */
const encryptedView = {
  subarray(start: number, end: number): Uint8Array {
    encryptedLength = end;
    return sharedEncryptedBuffer.subarray(start, end);
  },
};

/** The `'data'` listener of every other stream (a chunk it owns). */
function onOwnedChunk(this: ReadingSocket, chunk: Uint8Array) {
  const receiver = this[RECEIVER];
  if (receiver !== undefined && receiver.onBytes(chunk) === false) {
    pauseReading(this);
  }
}

/**
 * Makes the server create its accepted sockets with the shared read buffer.
 * Deno's `net.Server` builds each accepted socket in `_createSocket`; the
 * same options as its own plus `onread`. Where that hook is missing (another
 * runtime), sockets read the ordinary way.
 */
export function lendReadsOfAcceptedSockets(server: net.Server) {
  const hooks = server as unknown as {
    _createSocket?: (handle: unknown) => net.Socket;
  };
  if (typeof hooks._createSocket !== "function") return;
  hooks._createSocket = function (this: net.Server, handle: unknown) {
    const socket = new net.Socket({
      handle,
      allowHalfOpen: true,
      pauseOnCreate: true,
      readable: true,
      writable: true,
      onread: { buffer: sharedReadBuffer, callback: onLentRead },
    } as net.SocketConstructorOpts) as net.Socket & ReadingSocket;
    socket[LENDS_READS] = true;
    Object.assign(socket, { server: this, _server: this });
    return socket;
  };
}

/**
 * Hands `stream`'s bytes to `receiver` from now on and starts reading. The
 * stream is put in flowing mode once, so that its `'end'` is emitted when
 * the peer's FIN arrives; reading itself is then started and stopped with
 * {@linkcode pauseReading} and {@linkcode resumeReading}.
 */
export function receiveBytes(stream: Duplex, receiver: ByteReceiver): void {
  const reading = stream as ReadingSocket;
  const first = reading[RECEIVER] === undefined;
  reading[RECEIVER] = receiver;
  if (!first) return resumeReading(stream);
  if (!reading[LENDS_READS]) stream.on("data", onOwnedChunk);
  reading[OWNER_PAUSED] = false;
  stream.resume();
}

/**
 * Stops handing `stream`'s bytes to anyone and stops reading, so that
 * another layer (TLS) can take the stream over.
 */
export function stopReceiving(stream: Duplex): void {
  const reading = stream as ReadingSocket;
  reading[RECEIVER] = undefined;
  stream.off("data", onOwnedChunk);
  pauseReading(stream);
}

/**
 * Stops reading `stream` (its receiver gets nothing until resumed). Under
 * TLS the TCP reads beneath stop: pausing a TLS stream alone stops only its
 * events, and Deno's TLS layer would go on reading and decrypting whatever
 * the client sends, without bound. A TLS stream reading into the shared
 * buffer keeps delivering what was already decrypted (a bounded amount):
 * stopping its TLS layer's reads in the middle of a delivery loses the
 * client's end of input in Deno 2.9 (see tls.ts).
 */
export function pauseReading(stream: Duplex): void {
  const reading = stream as ReadingSocket;
  reading[OWNER_PAUSED] = true;
  stopReads(reading);
}

/** Reads `stream` again after {@linkcode pauseReading} (or a receiver's false). */
export function resumeReading(stream: Duplex): void {
  const reading = stream as ReadingSocket;
  reading[OWNER_PAUSED] = false;
  if (!reading[GATED]) startReads(reading);
}

function stopReads(reading: ReadingSocket) {
  const tcp = reading._handle?._nativeTcpHandle;
  if (tcp?.readStop !== undefined && !reading[TCP_PAUSED]) {
    reading[TCP_PAUSED] = true;
    tcp.readStop();
  }
  if (!reading[LENDS_READS]) return void reading.pause();
  if (tcp !== undefined) return;
  const handle = reading._handle;
  if (handle?.reading && handle.readStop !== undefined) {
    handle.reading = false;
    handle.readStop();
  }
}

function startReads(reading: ReadingSocket) {
  if (reading[TCP_PAUSED]) {
    reading[TCP_PAUSED] = false;
    reading._handle?._nativeTcpHandle?.readStart?.();
  }
  if (!reading[LENDS_READS]) return void reading.resume();
  const handle = reading._handle;
  if (handle !== undefined && !handle.reading && handle.readStart) {
    handle.reading = true;
    const error = handle.readStart();
    if (error !== 0) reading.destroy(new Error(`Cannot read: error ${error}`));
  }
}

/** True when `stream`'s reads are lent views of the shared read buffer. */
export function lendsReads(stream: Duplex): boolean {
  return (stream as ReadingSocket)[LENDS_READS] === true;
}

/** `node:net`'s own names for a socket's user read buffer and its callback. */
interface BufferSymbols {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let bufferSymbols: BufferSymbols | null | undefined;

/**
 * The symbols under which a socket made with the `onread` option keeps its
 * buffer and callback, read off a probe socket (they are internal to
 * `node:net`); null where they cannot be found.
 */
function findBufferSymbols(): BufferSymbols | null {
  if (bufferSymbols !== undefined) return bufferSymbols;
  const probe = new net.Socket({
    onread: { buffer: new Uint8Array(1), callback: () => true },
  } as net.SocketConstructorOpts);
  const named = (name: string) =>
    Object.getOwnPropertySymbols(probe).find((s) => s.description === name);
  const buffer = named("kBuffer");
  const callback = named("kBufferCb");
  const generator = named("kBufferGen");
  probe.destroy();
  bufferSymbols = buffer && callback && generator
    ? { buffer, callback, generator }
    : null;
  return bufferSymbols;
}

/**
 * Makes a stream that was set up after accept (a TLS stream, once its
 * handshake is done) read into the shared buffer too, as plain sockets do
 * from the start: Deno's TLS layer then copies what it decrypts into that
 * buffer instead of handing each read over as a new allocation. Must be
 * called before {@linkcode receiveBytes}. False (nothing changed) where the
 * runtime does not offer it.
 */
export function lendReadsOf(stream: Duplex): boolean {
  const reading = stream as ReadingSocket & Record<symbol, unknown>;
  const handle = reading._handle;
  const symbols = findBufferSymbols();
  if (symbols === null || typeof handle?.useUserBuffer !== "function") {
    return false;
  }
  reading[symbols.buffer] = sharedReadBuffer;
  reading[symbols.callback] = onLentRead;
  reading[symbols.generator] = null;
  handle.useUserBuffer(sharedReadBuffer);
  reading[LENDS_READS] = true;
  lendEncryptedReads(reading);
  return true;
}

/**
 * Makes the TCP handle beneath a TLS stream read into the shared encrypted
 * buffer. Its `onread` is the TLS layer's, which expects a buffer of its
 * own with each read (and gets none once a user buffer is set): it is
 * wrapped to get the shared buffer instead. The reads are restarted so
 * that the runtime picks up the new callback.
 */
function lendEncryptedReads(reading: ReadingSocket) {
  const tcp = reading._handle?._nativeTcpHandle;
  if (
    typeof tcp?.useUserBuffer !== "function" ||
    typeof tcp.onread !== "function" || tcp.readStart === undefined ||
    tcp.readStop === undefined
  ) return;
  tcp[DELIVER_ENCRYPTED] = tcp.onread;
  tcp[TLS_ABOVE] = reading;
  tcp.onread = onEncryptedRead;
  tcp.useUserBuffer(sharedEncryptedBuffer);
  if (!reading[TCP_PAUSED]) {
    tcp.readStop();
    tcp.readStart();
  }
}

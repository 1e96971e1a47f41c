/**
 * TLS on `node:tls`, over the same accepted TCP sockets as plain
 * connections: the server accepts TCP, reads a PROXY header first when one
 * is expected (a balancer sends it before the TLS handshake), then starts
 * TLS on the socket with {@linkcode startTls}.
 *
 * A handshake that has not finished within its deadline is dropped and its
 * socket destroyed, so a client that connects and stays silent never holds
 * a descriptor for long.
 *
 * @module
 */
import tls from "node:tls";
import type net from "node:net";
import { createPrivateKey, X509Certificate } from "node:crypto";

/**
 * Throws a one-line error if `cert` or `key` is not usable PEM, or if the
 * key does not belong to the certificate.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateTlsPair } from "./tls.ts";
 * assert.throws(() => validateTlsPair("not pem", "not pem"), /Cannot parse the certificate/);
 * ```
 */
export function validateTlsPair(cert: string, key: string): void {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new Error(
      `Cannot parse the certificate: ${(error as Error).message}`,
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new Error(
      `Cannot parse the private key: ${(error as Error).message}`,
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new Error("The private key does not match the certificate");
  }
}

/** A validated certificate and key, ready to serve many handshakes. */
export type TlsContext = tls.SecureContext;

/** Validates the pair (see {@linkcode validateTlsPair}) and prepares it. */
export function createTlsContext(cert: string, key: string): TlsContext {
  validateTlsPair(cert, key);
  return tls.createSecureContext({ cert, key });
}

/**
 * Runs the server side of a TLS handshake on `socket`. Resolves with the
 * encrypted stream (paused, half-open allowed, its end of input kept: see
 * {@linkcode keepClientEnd}) once the handshake is done;
 * rejects with the reason when it fails, the peer goes away, or
 * `timeoutMs` passes, having destroyed the socket.
 */
export function startTls(
  socket: net.Socket,
  context: TlsContext,
  timeoutMs: number,
): Promise<tls.TLSSocket> {
  const secure = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: context,
  });
  // allowHalfOpen: a client's FIN must not close our side before its final
  // line is answered.
  secure.allowHalfOpen = true;
  keepClientEnd(secure);
  return new Promise((resolve, reject) => {
    const fail = (reason: string) => {
      clearTimeout(timer);
      secure.destroy();
      socket.destroy();
      reject(new Error(reason));
    };
    const timer = setTimeout(() => fail("handshake timed out"), timeoutMs);
    // A client that closes or resets before the handshake is done can never
    // finish it. While node:tls has the socket, Deno 2.9 reports both as
    // the TLS stream's 'end' alone (no 'error', no 'close', nothing on the
    // socket itself), and half-open streams stay open after 'end'.
    const onEnd = () => fail("the client left during the handshake");
    secure.once("secure", () => {
      clearTimeout(timer);
      secure.off("end", onEnd);
      secure.removeAllListeners("error");
      secure.removeAllListeners("close");
      secure.pause();
      resolve(secure);
    });
    secure.once("end", onEnd);
    secure.once("error", (error) => fail(error.message));
    secure.once("close", () => fail("closed during the handshake"));
  });
}

/**
 * Deno 2.9's `node:tls` loses the client's end of input (its close_notify,
 * so `'end'` never comes) when the stream is resumed with 64 KiB or more of
 * decrypted bytes waiting: the TLS layer hands them over in one piece,
 * which fills the stream's buffer to its high-water mark, so the stream
 * asks the TLS layer to stop, and the close_notify that was waiting behind
 * those bytes is dropped instead of kept for the next read. A client that
 * sends a burst and half-closes would get every reply but no EOF, and hold
 * its slot until the idle timeout.
 *
 * A stream that never reaches its high-water mark never asks to stop, so
 * the close_notify is delivered. What waits in the stream stays bounded: a
 * connection that stops reading stops the TCP reads beneath the TLS layer
 * too (socket_reading.ts), so at most what was already decrypted waits.
 * There is no public option for the readable side alone (`highWaterMark`
 * would raise the writable one too, which the connection's output
 * backpressure relies on). `bench/tls_half_close.mjs` shows the loss and
 * this remedy side by side.
 */
function keepClientEnd(secure: tls.TLSSocket): void {
  const state = (secure as unknown as {
    _readableState?: { highWaterMark: number };
  })._readableState;
  if (state !== undefined) state.highWaterMark = Number.MAX_SAFE_INTEGER;
}

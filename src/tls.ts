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
 * encrypted stream (paused, half-open allowed) once the handshake is done;
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
  return new Promise((resolve, reject) => {
    const fail = (reason: string) => {
      clearTimeout(timer);
      secure.destroy();
      socket.destroy();
      reject(new Error(reason));
    };
    const timer = setTimeout(() => fail("handshake timed out"), timeoutMs);
    secure.once("secure", () => {
      clearTimeout(timer);
      secure.removeAllListeners("error");
      secure.removeAllListeners("close");
      secure.pause();
      resolve(secure);
    });
    secure.once("error", (error) => fail(error.message));
    secure.once("close", () => fail("closed during the handshake"));
  });
}

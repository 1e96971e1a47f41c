/**
 * A {@linkcode LineClient} over TLS, for servers started with `--tls-cert`.
 *
 * @module
 */
import { withTimeout } from "./deadline.ts";
import { DEFAULT_READ_TIMEOUT_MS, LineClient } from "./line_client.ts";

/**
 * Connects to `127.0.0.1:port` over TLS, trusting only `caPem`, and finishes
 * the handshake (so a handshake failure is reported here, not on first read).
 *
 * LineClient is typed for a TCP connection but only uses `read`, `write`,
 * `closeWrite` and `close`, which a TLS connection has with the same meaning
 * (`closeWrite` sends close_notify and then FIN).
 */
export async function connectTlsLineClient(
  port: number,
  caPem: string,
  timeoutMs = DEFAULT_READ_TIMEOUT_MS,
): Promise<LineClient> {
  const conn = await withTimeout(
    Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [caPem] }),
    timeoutMs,
    `TLS connect to port ${port}`,
  );
  try {
    await withTimeout(conn.handshake(), timeoutMs, "TLS handshake");
  } catch (error) {
    conn.close();
    throw error;
  }
  return new LineClient(conn as unknown as Deno.TcpConn);
}

/**
 * Servers that speak TLS with a throwaway certificate (`tls_cert.ts`): a
 * `server.ts` subprocess started with `--tls-cert` and `--tls-key`, or an
 * in-process server through `mod.ts`. Connect to either with
 * `connectTlsLineClient` (`tls_client.ts`), trusting `cert.certPem`.
 *
 * @module
 */
import { type LineServer, type ServerOptions, startServer } from "../../mod.ts";
import { ServerProcess } from "./server_process.ts";
import type { TestCertificate } from "./tls_cert.ts";

/**
 * Starts `server.ts --port 0 --tls-cert FILE --tls-key FILE ...args`, allowed
 * to read those two files only, and waits for its listening line.
 */
export function startTlsServerProcess(
  cert: TestCertificate,
  args: string[] = [],
): Promise<ServerProcess> {
  return ServerProcess.start(
    [
      "--port",
      "0",
      "--tls-cert",
      cert.certFile,
      "--tls-key",
      cert.keyFile,
      ...args,
    ],
    { denoFlags: [`--allow-read=${cert.certFile},${cert.keyFile}`] },
  );
}

/** Starts an in-process server on port 0 with `options`, serving TLS with `cert`. */
export function startTlsServer(
  cert: TestCertificate,
  options: Omit<ServerOptions, "tls"> = {},
): Promise<LineServer> {
  return startServer({
    port: 0,
    ...options,
    tls: { cert: cert.certPem, key: cert.keyPem },
  });
}

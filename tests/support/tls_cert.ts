/**
 * Throwaway TLS material for tests, made at test time with the system's
 * `openssl` (Debian package `openssl`): a self-signed end-entity certificate
 * for `127.0.0.1` and `localhost`, in a fresh temporary directory.
 *
 * @module
 */
import { runTool, toolMissingReason } from "./tools.ts";

/** A certificate and key on disk; remove them with `remove()` or `await using`. */
export interface TestCertificate {
  /** The temporary directory holding every file below. */
  readonly dir: string;
  /** Path of the PEM certificate. */
  readonly certFile: string;
  /** Path of the PEM private key (unencrypted). */
  readonly keyFile: string;
  /** The certificate's PEM text (use it as `caCerts: [certPem]`). */
  readonly certPem: string;
  /** The key's PEM text. */
  readonly keyPem: string;
  /** Deletes the directory and everything in it (idempotent). */
  remove(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

// CA:FALSE matters: rustls rejects a CA certificate presented as a server's
// own certificate, which is what `openssl req -x509` makes by default.
const CONFIG = `[req]
distinguished_name = dn
prompt = no
x509_extensions = server
[dn]
CN = localhost
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
`;

async function openssl(args: string[]): Promise<void> {
  await runTool(`run openssl ${args[0]}`, ["openssl", ...args]);
}

/**
 * Why tests needing `openssl` cannot run here, or `undefined` if they can.
 * Use it as `Deno.test({ ignore: reason !== undefined, ... })`.
 */
export function opensslMissingReason(): Promise<string | undefined> {
  return toolMissingReason("openssl", ["version"], "openssl");
}

/**
 * Creates a self-signed certificate (P-256 key, valid one day) whose
 * subjectAltName is `IP:127.0.0.1, DNS:localhost`.
 */
export async function createTestCertificate(): Promise<TestCertificate> {
  const dir = await Deno.makeTempDir({ prefix: "lineserver-tls-" });
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await Deno.remove(dir, { recursive: true });
  };
  try {
    const configFile = `${dir}/openssl.cnf`;
    const certFile = `${dir}/cert.pem`;
    const keyFile = `${dir}/key.pem`;
    await Deno.writeTextFile(configFile, CONFIG);
    await openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-config",
      configFile,
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ]);
    return {
      dir,
      certFile,
      keyFile,
      certPem: await Deno.readTextFile(certFile),
      keyPem: await Deno.readTextFile(keyFile),
      remove,
      [Symbol.asyncDispose]: remove,
    };
  } catch (error) {
    await remove();
    throw error;
  }
}

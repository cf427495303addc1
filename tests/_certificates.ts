/**
 * A private CA and certificates it signs, made with `openssl` in a temporary
 * directory, for tests of TLS on listeners and towards upstreams.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";

/** A directory holding `ca.pem` and the certificates {@linkcode issue} made. */
export interface TestCa extends AsyncDisposable {
  /** The directory. */
  readonly dir: string;
  /** Path of the CA certificate. */
  readonly ca: string;
  /**
   * Makes `NAME.pem` and `NAME.key` signed by the CA, with common name `cn`
   * and `localhost` and 127.0.0.1 as subject alternative names (or `names`),
   * for servers or, with `client`, for clients. Resolves with both paths.
   */
  issue(
    name: string,
    options?: { cn?: string; names?: string[]; client?: boolean },
  ): Promise<{ cert: string; key: string }>;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}

/** Makes a CA (EC P-256 keys, quick to make) in a new temporary directory. */
export async function makeCa(): Promise<TestCa> {
  const dir = await Deno.makeTempDir({ prefix: "legate-ca-" });
  await openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=legate test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  ]);
  let serial = 0;
  return {
    dir,
    ca: join(dir, "ca.pem"),
    async issue(name, options = {}) {
      const names = options.names ?? ["DNS:localhost", "IP:127.0.0.1"];
      await openssl(dir, [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        `/CN=${options.cn ?? name}`,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.csr`,
      ]);
      await Deno.writeTextFile(
        join(dir, `${name}.ext`),
        options.client
          ? "extendedKeyUsage=clientAuth\n"
          : `subjectAltName=${names.join(",")}\nextendedKeyUsage=serverAuth\n`,
      );
      await openssl(dir, [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        String(++serial),
        "-days",
        "2",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ]);
      return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * The common name of the certificate a TLS server on `port` presents, as
 * `openssl s_client` sees it after verifying it against `ca`.
 */
export async function servedCommonName(
  port: number,
  ca: string,
): Promise<string> {
  const output = await new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
      "-CAfile",
      ca,
      "-verify_return_error",
      "-brief",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stderr) +
    new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0, text);
  const match = /Peer certificate: .*CN ?= ?([^,\s/]+)/.exec(text);
  assert.ok(match, text);
  return match[1]!;
}

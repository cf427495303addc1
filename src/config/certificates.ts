/**
 * Reading and checking the PEM files route files name (`tls`,
 * `upstream_tls`): each file must be readable, hold what its key says it
 * holds, and a private key must belong to its certificate. What is wrong
 * comes back as a message for a config error; nothing here throws.
 *
 * Checking here, while the routes load, is what keeps a broken pair from
 * replacing a good one: the reload is refused and the old files keep
 * serving.
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFailure } from "./load.ts";
import type { ReferenceSource } from "./interpolate.ts";

/** PEM text, or why the file cannot be used. */
export type PemRead = { text: string; error?: undefined } | {
  text?: undefined;
  error: string;
};

const CERTIFICATE_BLOCK =
  /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Reads a file of one or more PEM certificates (a chain, or CAs); every
 * certificate in it must parse.
 *
 * @example A file without a certificate is refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { readCertificates } from "./certificates.ts";
 * const files = { env: () => undefined, readFile: () => "not a certificate\n" };
 * assert.deepEqual(readCertificates("/etc/legate/tls.crt", files), {
 *   error: 'file "/etc/legate/tls.crt" holds no PEM certificate (-----BEGIN CERTIFICATE-----)',
 * });
 * ```
 */
export function readCertificates(
  path: string,
  files: ReferenceSource,
): PemRead {
  const read = readPem(path, files);
  if (read.error !== undefined) return read;
  const blocks = read.text.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) {
    return {
      error:
        `file "${path}" holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    };
  }
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (cause) {
      return {
        error: `certificate ${index + 1} in "${path}" is not valid PEM: ${
          (cause as Error).message
        }`,
      };
    }
  }
  return read;
}

/** Reads a PEM private key (PKCS#8, RSA or EC). */
export function readPrivateKey(path: string, files: ReferenceSource): PemRead {
  const read = readPem(path, files);
  if (read.error !== undefined) return read;
  if (!/-----BEGIN (?:RSA |EC )?PRIVATE KEY-----/.test(read.text)) {
    return {
      error:
        `file "${path}" holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC; an encrypted key cannot be used)`,
    };
  }
  try {
    createPrivateKey(read.text);
  } catch (cause) {
    return {
      error: `the private key in "${path}" is not valid PEM: ${
        (cause as Error).message
      }`,
    };
  }
  return read;
}

/**
 * Whether `key` is the private key of the first certificate in `cert`: the
 * message saying which files do not match, or undefined when they do.
 */
export function mismatchedKey(
  cert: { path: string; text: string },
  key: { path: string; text: string },
): string | undefined {
  const leaf = cert.text.match(CERTIFICATE_BLOCK)![0];
  return new X509Certificate(leaf).checkPrivateKey(createPrivateKey(key.text))
    ? undefined
    : `the key in "${key.path}" does not belong to the certificate in "${cert.path}" (the first certificate of the file must be the one the key signs for)`;
}

function readPem(path: string, files: ReferenceSource): PemRead {
  try {
    return { text: files.readFile(path) };
  } catch (cause) {
    return { error: `cannot read "${path}": ${readFailure(cause)}` };
  }
}

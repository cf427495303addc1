/**
 * `${VAR}`, `${VAR:-default}` and `${file:/path}` references in route file
 * strings, resolved at load time. A missing reference is an error, never an
 * empty string; `$${` writes a literal `${`.
 * @module
 */
import { MAX_ROUTE_FILE_BYTES, readFailure, readRegularFile } from "./load.ts";

/** Where references are looked up; injectable so tests need no real environment. */
export interface ReferenceSource {
  /** The value of an environment variable, or undefined when unset. */
  env(name: string): string | undefined;
  /** The text of a file; throws when it cannot be read. */
  readFile(path: string): string;
}

/**
 * References resolved from the process environment and the file system.
 * Files are read like route files: regular files only (a FIFO would block
 * the load for ever), at most 1 MiB.
 */
export const processReferences: ReferenceSource = {
  env: (name) => Deno.env.get(name),
  readFile(path) {
    const read = readRegularFile(path, MAX_ROUTE_FILE_BYTES);
    if (read.kind === "text") return read.text;
    throw new TypeError(
      read.kind === "too large"
        ? `it is over the limit of ${MAX_ROUTE_FILE_BYTES} bytes (1 MiB)`
        : "it is not a regular file",
    );
  },
};

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * The outcome of interpolating one string: the value, how to show it without
 * secrets (references to files and to variables named like secrets stay as
 * written), and the secrets it holds, so that messages can be checked for them.
 */
export type Interpolated = {
  value: string;
  shown: string;
  secrets: readonly Secret[];
  error?: undefined;
} | {
  value?: undefined;
  shown?: undefined;
  secrets?: undefined;
  error: string;
};

/** A resolved secret reference: what it resolved to and how it was written. */
export interface Secret {
  /** The resolved value; never shown. */
  readonly value: string;
  /** The reference as written, e.g. `${API_TOKEN}`: what is shown instead. */
  readonly reference: string;
}

/**
 * Variable names whose values are never shown: tokens, keys, passwords
 * (`DB_PASS`, `MYSQL_PWD`), credentials, sessions, cookies, signatures and
 * certificates. Masking too much costs a less helpful message; too little
 * leaks a secret into logs.
 */
const SECRET_NAME =
  /TOKEN|SECRET|PASSW(?:OR)?D|PASSPHRASE|(?:^|_)PASS(?:_|$)|PWD|KEY|CRED|AUTH|PRIVATE|SESSION|COOKIE|SIGNATURE|CERT/i;

/**
 * Whether the value of the variable `name` is a secret that is never shown.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSecretName } from "./interpolate.ts";
 * assert.equal(isSecretName("DB_PASS"), true);
 * assert.equal(isSecretName("SESSION_COOKIE"), true);
 * assert.equal(isSecretName("USERS_PORT"), false);
 * ```
 */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/**
 * Replaces every reference in `text`. Returns the first problem as `error`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { interpolate } from "./interpolate.ts";
 * const env: Record<string, string> = { PORT: "8080", API_TOKEN: "hunter2" };
 * const source = { env: (name: string) => env[name], readFile: () => "" };
 * assert.deepEqual(interpolate("http://users:${PORT}", source), {
 *   value: "http://users:8080",
 *   shown: "http://users:8080",
 *   secrets: [],
 * });
 * // A variable named like a secret is resolved but shown as written.
 * assert.deepEqual(interpolate("Bearer ${API_TOKEN}", source), {
 *   value: "Bearer hunter2",
 *   shown: "Bearer ${API_TOKEN}",
 *   secrets: [{ value: "hunter2", reference: "${API_TOKEN}" }],
 * });
 * assert.match(interpolate("${MISSING}", source).error ?? "", /is not set/);
 * ```
 */
export function interpolate(
  text: string,
  source: ReferenceSource,
): Interpolated {
  let error: string | undefined;
  let value = "";
  let shown = "";
  const secrets: Secret[] = [];
  let last = 0;
  for (const match of text.matchAll(REFERENCE)) {
    const literal = text.slice(last, match.index);
    last = match.index + match[0].length;
    if (match[0] === "$${") {
      value += literal + "${";
      shown += literal + "${";
      continue;
    }
    const inner = match[1]!;
    const resolved = resolveReference(inner, source);
    if (resolved.error !== undefined) {
      error ??= resolved.error;
      continue;
    }
    value += literal + resolved.value;
    if (isSecret(inner)) {
      shown += literal + match[0];
      secrets.push({ value: resolved.value, reference: match[0] });
    } else {
      shown += literal + resolved.value;
    }
  }
  if (error !== undefined) return { error };
  const rest = text.slice(last);
  return { value: value + rest, shown: shown + rest, secrets };
}

/** One part of a templated value: literal text, or a file read when it changes. */
export type TemplatePart = string | { readonly file: string };

/**
 * `text` split into literal parts and `${file:...}` references, with every
 * other reference resolved: the form of a value whose files are read again
 * as they change. References that do not resolve become empty parts
 * ({@linkcode interpolate} reports them).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { templateParts } from "./interpolate.ts";
 * const source = { env: (name: string) => name === "TENANT" ? "acme" : undefined, readFile: () => "" };
 * assert.deepEqual(templateParts("Bearer ${file:/run/token} ${TENANT} $${x}", source), [
 *   "Bearer ",
 *   { file: "/run/token" },
 *   " acme ${x}",
 * ]);
 * ```
 */
export function templateParts(
  text: string,
  source: ReferenceSource,
): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let literal = "";
  let last = 0;
  for (const match of text.matchAll(REFERENCE)) {
    literal += text.slice(last, match.index);
    last = match.index + match[0].length;
    const inner = match[1];
    if (inner === undefined) literal += "${";
    else if (inner.startsWith("file:")) {
      if (literal !== "") parts.push(literal);
      literal = "";
      parts.push({ file: inner.slice("file:".length) });
    } else literal += resolveReference(inner, source).value ?? "";
  }
  literal += text.slice(last);
  if (literal !== "") parts.push(literal);
  return parts;
}

function isSecret(inner: string): boolean {
  return inner.startsWith("file:") || isSecretName(inner.split(":-")[0]!);
}

function resolveReference(
  inner: string,
  source: ReferenceSource,
): { value: string; error?: undefined } | { value?: undefined; error: string } {
  if (inner.startsWith("file:")) {
    const path = inner.slice("file:".length);
    try {
      return { value: source.readFile(path).replace(/\r?\n$/, "") };
    } catch (cause) {
      return { error: `cannot read "\${file:${path}}": ${readFailure(cause)}` };
    }
  }
  const match = VARIABLE.exec(inner);
  if (!match) {
    return {
      error:
        `"\${${inner}}" is not a reference (use \${NAME}, \${NAME:-default} or \${file:/path}; write $\${ for a literal \${)`,
    };
  }
  const value = source.env(match[1]!);
  if (value !== undefined) return { value };
  if (match[2] !== undefined) return { value: match[2] };
  return {
    error: `environment variable "${
      match[1]
    }" is not set (set it, or give a default: \${${match[1]}:-value})`,
  };
}

/**
 * `${VAR}`, `${VAR:-default}` and `${file:/path}` references in route file
 * strings, resolved at load time. A missing reference is an error, never an
 * empty string; `$${` writes a literal `${`.
 * @module
 */

/** Where references are looked up; injectable so tests need no real environment. */
export interface ReferenceSource {
  /** The value of an environment variable, or undefined when unset. */
  env(name: string): string | undefined;
  /** The text of a file; throws when it cannot be read. */
  readFile(path: string): string;
}

/** References resolved from the process environment and the file system. */
export const processReferences: ReferenceSource = {
  env: (name) => Deno.env.get(name),
  readFile: (path) => Deno.readTextFileSync(path),
};

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * The outcome of interpolating one string: the value, and how to show it
 * without secrets (references to files and to variables named like secrets
 * stay as written).
 */
export type Interpolated = {
  value: string;
  shown: string;
  error?: undefined;
} | {
  value?: undefined;
  shown?: undefined;
  error: string;
};

/** Variable names whose values are never shown. */
const SECRET_NAME = /TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|PRIVATE/i;

/**
 * Replaces every reference in `text`. Returns the first problem as `error`.
 *
 * @example Usage
 * ```ts
 * import { interpolate } from "./interpolate.ts";
 * const source = { env: (n: string) => n === "PORT" ? "8080" : undefined, readFile: () => "" };
 * interpolate("http://users:${PORT}", source); // { value: "http://users:8080", shown: "http://users:8080" }
 * ```
 */
export function interpolate(
  text: string,
  source: ReferenceSource,
): Interpolated {
  let error: string | undefined;
  let value = "";
  let shown = "";
  let last = 0;
  for (const match of text.matchAll(REFERENCE)) {
    const literal = text.slice(last, match.index);
    last = match.index + match[0].length;
    if (match[0] === "$${") {
      value += literal + "${";
      shown += literal + "$${";
      continue;
    }
    const inner = match[1]!;
    const resolved = resolveReference(inner, source);
    if (resolved.error !== undefined) {
      error ??= resolved.error;
      continue;
    }
    value += literal + resolved.value;
    shown += literal +
      (isSecret(inner) ? match[0] : resolved.value);
  }
  if (error !== undefined) return { error };
  return { value: value + text.slice(last), shown: shown + text.slice(last) };
}

function isSecret(inner: string): boolean {
  return inner.startsWith("file:") || SECRET_NAME.test(inner.split(":-")[0]!);
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
      const reason = cause instanceof Deno.errors.NotFound
        ? "no such file"
        : cause instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : String((cause as Error).message ?? cause);
      return { error: `cannot read "\${file:${path}}": ${reason}` };
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

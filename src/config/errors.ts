/**
 * Config errors: each names the file, line and column, the key path, and what
 * would be valid.
 * @module
 */

/** A position in a route file; line and column count from 1. */
export interface SourcePosition {
  /** The file as the user named it, e.g. `routes/users.yaml`. */
  readonly file: string;
  /** Line, from 1. */
  readonly line: number;
  /** Column, from 1. */
  readonly column: number;
}

/**
 * One problem in the route files, formatted as
 * `routes/users.yaml:7:5: upstreams[1]: "htp://x" is not a supported URL (...)`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError } from "./errors.ts";
 * const error = new ConfigError({ file: "routes/a.yaml", line: 2, column: 9 }, "listen", "is required");
 * assert.equal(error.message, "routes/a.yaml:2:9: listen: is required");
 * assert.equal(error.detail, "is required");
 * assert.ok(error instanceof SyntaxError);
 * ```
 */
export class ConfigError extends SyntaxError {
  /** Where the problem is. */
  readonly position: SourcePosition;
  /** The key path, such as `upstreams[1].url`; empty for the whole file. */
  readonly keyPath: string;
  /** What is wrong and what would be valid, without the position prefix. */
  readonly detail: string;

  /** Makes an error at `position` for the value at `keyPath`. */
  constructor(position: SourcePosition, keyPath: string, detail: string) {
    const { file, line, column } = position;
    super(
      `${file}:${line}:${column}: ${keyPath ? `${keyPath}: ` : ""}${detail}`,
    );
    this.name = "ConfigError";
    this.position = position;
    this.keyPath = keyPath;
    this.detail = detail;
  }
}

/**
 * The routes directory itself cannot be used: missing, not a directory,
 * unreadable, or without route files.
 */
export class RoutesDirectoryError extends Error {
  /** Makes the error; `message` names the directory and what to do. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RoutesDirectoryError";
  }
}

/**
 * Formats a key path such as `["upstreams", 1, "url"]` as `upstreams[1].url`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatKeyPath } from "./errors.ts";
 * assert.equal(formatKeyPath(["upstreams", 1, "url"]), "upstreams[1].url");
 * assert.equal(formatKeyPath([]), "");
 * ```
 */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let text = "";
  for (const segment of path) {
    text += typeof segment === "number"
      ? `[${segment}]`
      : text === ""
      ? String(segment)
      : `.${String(segment)}`;
  }
  return text;
}

/**
 * A value as an error message quotes it: strings in JSON quotes, lists and
 * mappings by kind.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeValue } from "./errors.ts";
 * assert.equal(describeValue("3"), '"3"');
 * assert.equal(describeValue([1]), "a list");
 * ```
 */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/**
 * The value at key path `path` of parsed data, or undefined when it is not
 * there.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { valueAt } from "./errors.ts";
 * assert.equal(valueAt({ upstreams: [{ weight: 3 }] }, ["upstreams", 0, "weight"]), 3);
 * assert.equal(valueAt({}, ["retries", "attempts"]), undefined);
 * ```
 */
export function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let value = data;
  for (const segment of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

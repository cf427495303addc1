/**
 * Header rules as the pipeline applies them: names to remove, headers to
 * set (replacing) and to add, on the request the upstream gets and on the
 * response the client gets. Values are read when applied, so a value that
 * follows a file is current on every request.
 * @module
 */
import type { HeaderPair } from "../transport/headers.ts";

/** A header value as rules hold it: fixed, or kept current from files. */
export interface HeaderValue {
  /** The value to send now. */
  readonly value: string;
}

/** The header rules of one direction. */
export interface HeaderRules {
  /** Names removed: those the rules remove and those they set. */
  readonly remove: ReadonlySet<string>;
  /** Headers set, in order. */
  readonly set: readonly (readonly [string, HeaderValue])[];
  /** Headers added, in order. */
  readonly add: readonly (readonly [string, HeaderValue])[];
  /** Request rules only: the Host to send instead of the endpoint's authority. */
  readonly host: HeaderValue | null;
}

/**
 * Applies `rules` to `headers` from index `from` on (a request's Host
 * placeholder at index 0 stays): removes, then sets, then adds.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { applyHeaderRules } from "./header_rules.ts";
 * const headers: [string, string][] = [["x-debug", "1"], ["accept", "*\/*"], ["authorization", "old"]];
 * applyHeaderRules(headers, {
 *   remove: new Set(["x-debug", "authorization"]),
 *   set: [["authorization", { value: "Bearer t" }]],
 *   add: [["x-tenant", { value: "acme" }]],
 *   host: null,
 * });
 * assert.deepEqual(headers, [["accept", "*\/*"], ["authorization", "Bearer t"], ["x-tenant", "acme"]]);
 * ```
 */
export function applyHeaderRules(
  headers: HeaderPair[],
  rules: HeaderRules,
  from = 0,
): void {
  const { remove } = rules;
  if (remove.size > 0) {
    let kept = from;
    for (let i = from; i < headers.length; i++) {
      if (!remove.has(headers[i]![0])) headers[kept++] = headers[i]!;
    }
    headers.length = kept;
  }
  for (const [name, value] of rules.set) headers.push([name, value.value]);
  for (const [name, value] of rules.add) headers.push([name, value.value]);
}

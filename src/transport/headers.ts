/**
 * Header hygiene at the proxy boundary: hop-by-hop headers are dropped in
 * both directions, including every header `Connection` names.
 * @module
 */

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** A header as a name (lowercase) and its value. */
export type HeaderPair = readonly [name: string, value: string];

/**
 * The end-to-end headers of `headers`: without `Connection` and what it
 * names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`,
 * `Upgrade`, and any name in `alsoDrop`. Names must be lowercase, as `Headers`
 * iterates them and the HTTP/1.1 transport parses them.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { withoutHopByHop } from "./headers.ts";
 * const kept = withoutHopByHop(new Headers({ connection: "x-a", "x-a": "1", accept: "*\/*" }));
 * assert.deepEqual(kept, [["accept", "*\/*"]]);
 * ```
 */
export function withoutHopByHop(
  headers: Iterable<HeaderPair>,
  alsoDrop: ReadonlySet<string> = NONE,
): HeaderPair[] {
  const all = Array.isArray(headers) ? headers as HeaderPair[] : [...headers];
  let named: Set<string> | undefined;
  for (const [name, value] of all) {
    if (name !== "connection") continue;
    named ??= new Set();
    for (const token of value.split(",")) named.add(token.trim().toLowerCase());
  }
  return all.filter(([name]) =>
    !HOP_BY_HOP.has(name) && !name.startsWith("proxy-") &&
    !alsoDrop.has(name) &&
    !named?.has(name)
  );
}

const NONE: ReadonlySet<string> = new Set();

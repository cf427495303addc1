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
 * `Upgrade`. Names must be lowercase, as `Headers`
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
): HeaderPair[] {
  const kept: HeaderPair[] = [];
  let connection = "";
  for (const pair of headers) {
    if (pair[0] === "connection") connection += `${pair[1]},`;
    else if (!isHopByHop(pair[0])) kept.push(pair);
  }
  return connection === "" ? kept : withoutConnectionNamed(kept, connection);
}

/** Whether a header only concerns one connection (`Proxy-*` included). */
export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name) || name.startsWith("proxy-");
}

/** `headers` without those the `Connection` value `connection` names. */
export function withoutConnectionNamed(
  headers: HeaderPair[],
  connection: string,
): HeaderPair[] {
  const named = connectionTokens(connection);
  return headers.filter(([name]) => !named.has(name));
}

/** The header names a `Connection` value lists, lowercased. */
export function connectionTokens(connection: string): Set<string> {
  return new Set(
    connection.split(",").map((token) => token.trim().toLowerCase()),
  );
}

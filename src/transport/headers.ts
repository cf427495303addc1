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

/**
 * Copies `headers` without hop-by-hop headers: `Connection` and what it
 * names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`,
 * `Upgrade`, and any name in `alsoDrop`.
 *
 * @example Usage
 * ```ts
 * import { withoutHopByHop } from "./headers.ts";
 * const h = withoutHopByHop(new Headers({ connection: "x-a", "x-a": "1", accept: "*\/*" }));
 * [...h.keys()]; // ["accept"]
 * ```
 */
export function withoutHopByHop(
  headers: Headers,
  alsoDrop: ReadonlySet<string> = new Set(),
): Headers {
  const named = new Set(
    (headers.get("connection") ?? "").split(",").map((n) =>
      n.trim().toLowerCase()
    ),
  );
  const result = new Headers();
  for (const [name, value] of headers) {
    if (
      HOP_BY_HOP.has(name) || named.has(name) || name.startsWith("proxy-") ||
      alsoDrop.has(name)
    ) continue;
    if (name === "set-cookie") continue;
    result.append(name, value);
  }
  for (const cookie of headers.getSetCookie()) {
    result.append("set-cookie", cookie);
  }
  return result;
}

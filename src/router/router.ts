/**
 * HTTP routing on one listener: by host (exact beats `*.suffix` beats any),
 * then by the longest path prefix, matched on whole segments.
 * @module
 */

/** What a route matches. */
export interface RouteMatch {
  /** Exact host (lowercase, no port) or `*.suffix`; absent matches any host. */
  readonly host?: string;
  /** Path prefix without trailing slash, or `/`. */
  readonly pathPrefix: string;
}

/**
 * Routes requests of one listener to the first, most specific match.
 *
 * @example The longest path prefix, on whole segments
 * ```ts
 * import assert from "node:assert/strict";
 * import { HttpRouter } from "./router.ts";
 * const router = new HttpRouter([
 *   { match: { pathPrefix: "/" }, name: "web" },
 *   { match: { pathPrefix: "/api" }, name: "api" },
 * ]);
 * assert.equal(router.route("example.com", "/api/users")?.name, "api");
 * assert.equal(router.route("example.com", "/apis")?.name, "web");
 * ```
 *
 * @example An exact host beats `*.suffix`, which beats any host
 * ```ts
 * import assert from "node:assert/strict";
 * import { HttpRouter } from "./router.ts";
 * const router = new HttpRouter([
 *   { match: { pathPrefix: "/" }, name: "any" },
 *   { match: { host: "*.example.com", pathPrefix: "/" }, name: "wildcard" },
 *   { match: { host: "api.example.com", pathPrefix: "/" }, name: "exact" },
 * ]);
 * assert.equal(router.route("API.example.com:8080", "/")?.name, "exact");
 * assert.equal(router.route("www.example.com", "/")?.name, "wildcard");
 * assert.equal(router.route("example.com", "/")?.name, "any");
 * ```
 */
export class HttpRouter<T extends { readonly match: RouteMatch }> {
  /** Routes, most specific first. */
  readonly routes: readonly T[];

  /** Orders `routes` by specificity. */
  constructor(routes: readonly T[]) {
    this.routes = [...routes].sort((a, b) =>
      hostRank(a.match.host) - hostRank(b.match.host) ||
      (b.match.host?.length ?? 0) - (a.match.host?.length ?? 0) ||
      b.match.pathPrefix.length - a.match.pathPrefix.length
    );
  }

  /** The route for `host` (as the Host header wrote it) and `path` (no query). */
  route(host: string, path: string): T | undefined {
    const name = hostName(host);
    return this.routes.find((r) =>
      hostMatches(r.match.host, name) && prefixMatches(r.match.pathPrefix, path)
    );
  }
}

/** `Host` header value without port, lowercased. */
function hostName(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith("[")) return lower.slice(0, lower.indexOf("]") + 1);
  const colon = lower.lastIndexOf(":");
  return colon >= 0 ? lower.slice(0, colon) : lower;
}

function hostRank(host: string | undefined): number {
  return host === undefined ? 2 : host.startsWith("*.") ? 1 : 0;
}

function hostMatches(pattern: string | undefined, host: string): boolean {
  if (pattern === undefined) return true;
  if (pattern.startsWith("*.")) {
    return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  }
  return pattern === host;
}

/** Whether `prefix` covers `path` on a segment boundary. */
function prefixMatches(prefix: string, path: string): boolean {
  return prefix === "/" || path === prefix || path.startsWith(`${prefix}/`);
}

/** `path` without `prefix`, always starting with `/`. */
export function stripPrefix(prefix: string, path: string): string {
  if (prefix === "/") return path;
  return path.slice(prefix.length) || "/";
}

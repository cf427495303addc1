/**
 * The request's authority and target, recovered from `request.url` and
 * checked before anything is routed or forwarded.
 *
 * `Deno.serve` builds `request.url` from the request line and folds the Host
 * header into it (or the target's own authority, or h2c's `:authority`), and
 * it decodes what it cannot keep as bytes. So the authority must be a valid
 * host (`Host: a/x` would otherwise move into the path), the target must be
 * visible ASCII (U+010A written as one byte is LF: request splitting), and
 * the path is normalised before routing: percent-encoded unreserved
 * characters decoded and dot segments removed (RFC 3986 6.2.2, 5.2.4), so
 * `/api/../admin` and `/%61dmin` route, and are forwarded, as `/admin`.
 * @module
 */

/** A request's authority and target, ready to route and forward. */
export interface RequestTarget {
  /** `host[:port]` the request is for: the Host header, an absolute target's authority, or h2c's `:authority`. */
  readonly authority: string;
  /** The normalised path, or `*` for a server-wide `OPTIONS *`. */
  readonly path: string;
  /** What is forwarded: the normalised path and the query exactly as sent. */
  readonly target: string;
  /** The target as the client sent it, for logs. */
  readonly received: string;
}

/** RFC 3986 host (a DNS name, IPv4, or a bracketed IPv6 literal) with an optional port. */
const AUTHORITY =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
/** Visible ASCII without `#`: a fragment is never part of a request target. */
const TARGET = /^[\x21\x22\x24-\x7e]+$/;
const PERCENT_ENCODED = /%([0-9A-Fa-f]{2})/g;
/** RFC 3986 unreserved characters, the only ones whose percent-encoding means nothing. */
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * Reads a request's authority and target from `request.url`, given its Host
 * header (null when it has none). Returns a string saying what is wrong when
 * the request must be refused with a 400.
 *
 * @example Dot segments and encoded dots are resolved; a bad Host is refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { requestTarget } from "./request_target.ts";
 * const url = "http://api.local:8080/v1/../%2e%2e/admin?x=/..";
 * assert.deepEqual(requestTarget(url, "GET", "api.local:8080"), {
 *   authority: "api.local:8080",
 *   path: "/admin",
 *   target: "/admin?x=/..",
 *   received: "/v1/../%2e%2e/admin?x=/..",
 * });
 * // Deno folds `Host: a/x` into the URL; the Host header gives it away.
 * assert.equal(typeof requestTarget("http://a/x/echo", "GET", "a/x"), "string");
 * ```
 */
export function requestTarget(
  url: string,
  method: string,
  host: string | null,
): RequestTarget | string {
  if (host !== null && host !== "" && !AUTHORITY.test(host)) {
    return `the Host header ${
      JSON.stringify(host.slice(0, 80))
    } is not a valid host[:port]`;
  }
  const scheme = url.startsWith("http://")
    ? 7
    : url.startsWith("https://")
    ? 8
    : -1;
  if (scheme < 0) return "the request has no http:// or https:// target";
  let end = scheme;
  while (end < url.length && url[end] !== "/" && url[end] !== "?") end++;
  const authority = url.slice(scheme, end);
  if (!AUTHORITY.test(authority)) {
    return `the host ${
      JSON.stringify(authority.slice(0, 80))
    } is not a valid host[:port]`;
  }
  const target = originForm(url.slice(end));
  // Deno writes `OPTIONS *` as the path "/*", which no resource is called.
  if (method === "OPTIONS" && target === "/*") {
    return { authority, path: "*", target: "*", received: "*" };
  }
  if (!TARGET.test(target)) {
    return "the request target has a byte outside visible ASCII, or a fragment";
  }
  const queryStart = target.indexOf("?");
  const rawPath = queryStart < 0 ? target : target.slice(0, queryStart);
  if (rawPath.includes("\\")) {
    // Some servers read a backslash as a slash; no client sends one unencoded.
    return "the request path has a backslash";
  }
  const path = normalisePath(rawPath);
  return {
    authority,
    path,
    target: path === rawPath ? target : path + target.slice(rawPath.length),
    received: target,
  };
}

/**
 * The target of a request as its client sent it, from the URL Deno made of
 * it, for logs: also for a request whose target or Host legate refuses.
 */
export function receivedTarget(url: string): string {
  const scheme = url.indexOf("://");
  if (scheme < 0) return url;
  let end = scheme + 3;
  while (end < url.length && url[end] !== "/" && url[end] !== "?") end++;
  return originForm(url.slice(end));
}

/** The path and query of a URL, with the `/` a bare authority implies. */
function originForm(target: string): string {
  return target === "" || target[0] === "?" ? `/${target}` : target;
}

/**
 * `path` with percent-encoded unreserved characters decoded and `.` and `..`
 * segments resolved. Other percent-encodings (`%2F` among them) stay as sent.
 */
function normalisePath(path: string): string {
  if (!path.includes("%") && !path.includes("/.")) return path;
  const decoded = path.includes("%")
    ? path.replace(PERCENT_ENCODED, (encoded, hex: string) => {
      const char = String.fromCharCode(parseInt(hex, 16));
      return UNRESERVED.test(char) ? char : encoded;
    })
    : path;
  if (!decoded.includes("/.")) return decoded;
  const segments = decoded.split("/");
  const kept: string[] = [];
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const segment = segments[i]!;
    if (segment === "." || segment === "..") {
      if (segment === "..") kept.pop();
      // A path that ends in a dot segment names a directory: keep its slash.
      if (i === last) kept.push("");
      continue;
    }
    kept.push(segment);
  }
  return `/${kept.join("/")}`;
}

/**
 * Redirect rewriting, as nginx's `proxy_redirect default`: a `Location` or
 * `Content-Location` that points at the upstream that answered is rewritten
 * to the address the client used, with the path prefix the route stripped
 * put back. Other hosts, and relative references that do not start with
 * `/`, are left alone.
 * @module
 */
import type { Endpoint } from "../transport/connect.ts";
import type { HeaderPair } from "../transport/headers.ts";

/** What a rewrite needs to know about one exchange. */
export interface RedirectScope {
  /** The upstream that answered: `tls`, and the authorities it is known by. */
  readonly endpoint: Pick<Endpoint, "tls" | "authority" | "address">;
  /** The scheme the client used: `http` or `https`. */
  readonly clientScheme: string;
  /** The authority the client used. */
  readonly clientAuthority: string;
  /** The prefix the route stripped, or "" when it strips none. */
  readonly prefix: string;
}

const ABSOLUTE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s;
const NETWORK_PATH = /^\/\/([^/?#]*)(.*)$/s;

/**
 * Rewrites the `Location` and `Content-Location` headers of `headers` in
 * place.
 *
 * @example Absolute, relative and foreign locations
 * ```ts
 * import assert from "node:assert/strict";
 * import { rewriteRedirects } from "./redirects.ts";
 * const scope = {
 *   endpoint: { tls: false, authority: "users.internal:8080", address: { transport: "tcp" as const, hostname: "10.0.0.7", port: 8080 } },
 *   clientScheme: "http",
 *   clientAuthority: "localhost:15001",
 *   prefix: "/users",
 * };
 * const headers: [string, string][] = [
 *   ["location", "http://users.internal:8080/login?next=%2F"],
 *   ["content-location", "/items/7"],
 * ];
 * rewriteRedirects(headers, scope);
 * assert.deepEqual(headers, [
 *   ["location", "http://localhost:15001/users/login?next=%2F"],
 *   ["content-location", "/users/items/7"],
 * ]);
 * const foreign: [string, string][] = [["location", "https://accounts.example.com/"]];
 * rewriteRedirects(foreign, scope);
 * assert.equal(foreign[0]![1], "https://accounts.example.com/");
 * ```
 */
export function rewriteRedirects(
  headers: HeaderPair[],
  scope: RedirectScope,
): void {
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i]!;
    if (name !== "location" && name !== "content-location") continue;
    const rewritten = rewriteLocation(value, scope);
    if (rewritten !== value) headers[i] = [name, rewritten];
  }
}

function rewriteLocation(value: string, scope: RedirectScope): string {
  const absolute = ABSOLUTE.exec(value);
  if (absolute) {
    const scheme = absolute[1]!.toLowerCase();
    if (scheme !== (scope.endpoint.tls ? "https" : "http")) return value;
    if (!isUpstream(absolute[2]!, scope)) return value;
    return `${scope.clientScheme}://${scope.clientAuthority}${
      withPrefix(absolute[3]!, scope.prefix)
    }`;
  }
  const network = NETWORK_PATH.exec(value);
  if (network) {
    if (!isUpstream(network[1]!, scope)) return value;
    return `//${scope.clientAuthority}${withPrefix(network[2]!, scope.prefix)}`;
  }
  return value.startsWith("/") ? withPrefix(value, scope.prefix) : value;
}

/** Whether `authority` names the upstream: its configured authority or its address, default port or not. */
function isUpstream(authority: string, scope: RedirectScope): boolean {
  const { endpoint } = scope;
  const defaultPort = endpoint.tls ? 443 : 80;
  const normal = (text: string) => {
    const lower = text.toLowerCase();
    return /:\d+$/.test(lower) ? lower : `${lower}:${defaultPort}`;
  };
  const target = normal(authority);
  if (target === normal(endpoint.authority)) return true;
  const { address } = endpoint;
  if (address.transport !== "tcp") return false;
  const host = address.hostname.includes(":")
    ? `[${address.hostname}]`
    : address.hostname;
  return target === `${host}:${address.port}`.toLowerCase();
}

/** `rest` (a path, query or fragment, or nothing) under `prefix`. */
function withPrefix(rest: string, prefix: string): string {
  if (prefix === "") return rest === "" ? "/" : rest;
  if (rest === "" || rest === "/") return `${prefix}/`;
  return rest.startsWith("/") ? prefix + rest : `${prefix}/${rest}`;
}

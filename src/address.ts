/**
 * Listen addresses: `host:port`, `:port`, `[v6]:port` and `unix:/path`.
 * Route files, the command line and the servers all speak of them, so they
 * live beside the stages, as the logger does.
 *
 * Parsing only; opening sockets is the server's job.
 * @module
 */

/** Where a listener accepts connections. */
export type ListenAddress =
  | {
    readonly transport: "tcp";
    readonly hostname: string;
    readonly port: number;
  }
  | { readonly transport: "unix"; readonly path: string };

/** Hosts that mean "every interface" when they appear in a listen address. */
const WILDCARD_HOSTS = new Set(["0.0.0.0", "::"]);

/**
 * Parses a listen address. `:8080` listens on every IPv4 interface, like Go
 * and Envoy; `unix:/run/app.sock` is a Unix domain socket. Error messages
 * quote `shown` instead of `text`: the text as written, where `text` may hold
 * resolved secrets.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseListenAddress } from "./address.ts";
 * assert.deepEqual(parseListenAddress("127.0.0.1:15001"), { transport: "tcp", hostname: "127.0.0.1", port: 15001 });
 * assert.deepEqual(parseListenAddress(":8080"), { transport: "tcp", hostname: "0.0.0.0", port: 8080 });
 * assert.deepEqual(parseListenAddress("unix:/run/app.sock"), { transport: "unix", path: "/run/app.sock" });
 * assert.throws(() => parseListenAddress("127.0.0.1:99999"), RangeError);
 * ```
 * @throws {RangeError} When the text is not a listen address.
 */
export function parseListenAddress(
  text: string,
  shown: string = text,
): ListenAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (!path.startsWith("/")) {
      throw new RangeError(
        `"${shown}" is not a listen address (a Unix socket needs an absolute path: unix:/run/legate/app.sock)`,
      );
    }
    return { transport: "unix", path };
  }
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new RangeError(
      `"${shown}" is not a listen address (use host:port, :port or unix:/path, e.g. 127.0.0.1:15001)`,
    );
  }
  const host = match[1]!;
  const hostname = host === ""
    ? "0.0.0.0"
    : host.startsWith("[")
    ? host.slice(1, -1)
    : host;
  return { transport: "tcp", hostname, port };
}

/**
 * Formats an address the way route files and logs write it.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatListenAddress } from "./address.ts";
 * assert.equal(formatListenAddress({ transport: "tcp", hostname: "::1", port: 8080 }), "[::1]:8080");
 * assert.equal(formatListenAddress({ transport: "unix", path: "/run/app.sock" }), "unix:/run/app.sock");
 * ```
 */
export function formatListenAddress(address: ListenAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

/**
 * Whether two addresses cannot both be bound: the same socket, or the same
 * port where one side listens on every interface.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { addressesOverlap, parseListenAddress } from "./address.ts";
 * const overlap = (a: string, b: string) => addressesOverlap(parseListenAddress(a), parseListenAddress(b));
 * assert.equal(overlap(":8080", "127.0.0.1:8080"), true);
 * assert.equal(overlap("127.0.0.1:8080", "127.0.0.2:8080"), false);
 * ```
 */
export function addressesOverlap(a: ListenAddress, b: ListenAddress): boolean {
  if (a.transport === "unix" || b.transport === "unix") {
    return a.transport === b.transport &&
      formatListenAddress(a) === formatListenAddress(b);
  }
  if (a.port !== b.port || a.port === 0) return false;
  return a.hostname === b.hostname || WILDCARD_HOSTS.has(a.hostname) ||
    WILDCARD_HOSTS.has(b.hostname);
}

/**
 * Whether only this host can reach `address`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { isLoopback, parseListenAddress } from "./address.ts";
 * assert.equal(isLoopback(parseListenAddress("127.0.0.1:9901")), true);
 * assert.equal(isLoopback(parseListenAddress("[::1]:9901")), true);
 * assert.equal(isLoopback(parseListenAddress(":9901")), false);
 * ```
 */
export function isLoopback(address: ListenAddress): boolean {
  if (address.transport === "unix") return true;
  const host = address.hostname.toLowerCase();
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

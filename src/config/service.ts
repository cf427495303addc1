/**
 * The validated, typed form of a route file: what every later stage reads.
 * Values here are final; nothing downstream re-parses text.
 * @module
 */
import type { ListenAddress } from "./address.ts";
import type { SourcePosition } from "./errors.ts";

/** How legate reaches one upstream endpoint. */
export interface UpstreamConfig {
  /** The URL as written (after interpolation). */
  readonly url: string;
  /** Where to connect. */
  readonly address:
    | {
      readonly transport: "tcp";
      readonly hostname: string;
      readonly port: number;
    }
    | { readonly transport: "unix"; readonly path: string };
  /** Whether to speak TLS to it (https://, tls://). */
  readonly tls: boolean;
  /** `host[:port]` as the URL wrote it: the Host header an HTTP upstream gets. */
  readonly authority: string;
  /** Relative share of traffic. */
  readonly weight: number;
}

/** Timeouts of a service, in milliseconds. */
export interface TimeoutsConfig {
  /** Opening an upstream connection. */
  readonly connect: number;
  /** HTTP: from sending the request until the response headers arrive. */
  readonly request: number;
  /** No bytes in either direction on a body stream or TCP connection. */
  readonly idle: number;
}

/** One service: the typed content of one route file. */
export interface ServiceConfig {
  /** Service name: `name:` or the file name without extension. */
  readonly name: string;
  /** The route file, as the user named it. */
  readonly file: string;
  /** Where local clients connect. */
  readonly listen: ListenAddress;
  /** What the service speaks. */
  readonly protocol: "http" | "tcp";
  /** Endpoints, at least one. */
  readonly upstreams: readonly UpstreamConfig[];
  /** HTTP only: which requests of the listener this service takes. */
  readonly match: { readonly host?: string; readonly pathPrefix: string };
  /** HTTP only: remove `match.pathPrefix` before forwarding. */
  readonly stripPrefix: boolean;
  /** HTTP only: forward the client's Host header. */
  readonly preserveHost: boolean;
  /** Timeouts in milliseconds. */
  readonly timeouts: TimeoutsConfig;
  /**
   * Values to show instead of the real ones, by key path (`upstreams[0]`):
   * strings whose secret references (files, variables named like secrets)
   * stay as written.
   */
  readonly shown: Readonly<Record<string, string>>;
  /** Where `listen`, `match` and `name` are written, for conflict errors. */
  readonly positions: {
    readonly listen: SourcePosition;
    readonly match: SourcePosition;
    readonly name: SourcePosition;
  };
}

/** Timeouts used where a route file gives none. */
export const DEFAULT_TIMEOUTS = {
  connect: 5_000,
  request: 60_000,
  idle: { http: 60_000, tcp: 3_600_000 },
} as const;

/**
 * The value at `keyPath` of a service as messages and logs may show it: as
 * written when it holds a secret reference, else `value`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { shownValue } from "./service.ts";
 * const service = { shown: { listen: "127.0.0.1:${file:/run/port}" } };
 * assert.equal(shownValue(service, "listen", "127.0.0.1:15001"), "127.0.0.1:${file:/run/port}");
 * assert.equal(shownValue(service, "name", "users"), "users");
 * ```
 */
export function shownValue(
  service: Pick<ServiceConfig, "shown">,
  keyPath: string,
  value: string,
): string {
  return service.shown[keyPath] ?? value;
}

/**
 * The validated, typed form of a route file: what every later stage reads.
 * Values here are final; nothing downstream re-parses text.
 * @module
 */
import type { ListenAddress } from "../address.ts";
import type { SourcePosition } from "./errors.ts";
import type { TemplatePart } from "./interpolate.ts";

/** How legate reaches one upstream: one endpoint, or the endpoints a name resolves to. */
export interface UpstreamConfig {
  /** The URL as written (after interpolation). */
  readonly url: string;
  /**
   * How endpoints are found: `static` for an IP address or Unix socket (one
   * endpoint), `dns` for a host name (each A/AAAA record an endpoint, on the
   * URL's port), `srv` for a `+srv` URL (each SRV record an endpoint).
   */
  readonly discovery: "static" | "dns" | "srv";
  /**
   * Where to connect: an IP address or host name and port; for `srv`, the
   * SRV name (`_http._tcp.users.default.svc.cluster.local`) and port 0.
   */
  readonly address:
    | {
      readonly transport: "tcp";
      readonly hostname: string;
      readonly port: number;
    }
    | { readonly transport: "unix"; readonly path: string };
  /** Whether to speak TLS to it (https://, tls://, and their +srv forms). */
  readonly tls: boolean;
  /**
   * `host[:port]` as the URL wrote it: the Host header an HTTP upstream
   * gets, and the name its TLS certificate is verified against. For `srv`,
   * each record's target and port instead.
   */
  readonly authority: string;
  /** Relative share of traffic; for `srv`, multiplied by each record's weight share. */
  readonly weight: number;
}

/** A certificate and its private key, read from PEM files. */
export interface CertificateFiles {
  /** The certificate file as written in the route file. */
  readonly certFile: string;
  /** The key file as written in the route file. */
  readonly keyFile: string;
  /** The certificate chain, PEM. */
  readonly cert: string;
  /** The private key, PEM. Never shown. */
  readonly key: string;
}

/** TLS towards a service's upstreams. */
export interface UpstreamTlsConfig {
  /** The CA file, when one is given. */
  readonly caFile: string | null;
  /** CA certificates to trust besides the system roots, PEM. */
  readonly ca: string | null;
  /** The client certificate to present, or null. */
  readonly client: CertificateFiles | null;
  /** The name to verify and send as SNI; null: the upstream URL's host. */
  readonly serverName: string | null;
}

/** The endpoint selection policies. */
export type BalancePolicy =
  | "round_robin"
  | "least_request"
  | "random"
  | "ring_hash"
  | "maglev";

/** What ring_hash and maglev hash to choose an endpoint. */
export type HashOnConfig =
  | { readonly kind: "source_ip" }
  | { readonly kind: "header"; readonly name: string }
  | { readonly kind: "cookie"; readonly name: string }
  | { readonly kind: "path" };

/** Active health checks of every endpoint of a service. */
export interface HealthCheckConfig {
  /** HTTP: the path to GET. Null for TCP services. */
  readonly path: string | null;
  /** TCP: bytes to send once connected, or null to only connect. */
  readonly send: string | null;
  /** TCP: bytes the answer must start with, or null to accept any (or none). */
  readonly expect: string | null;
  /** Between two checks of one endpoint, in milliseconds (jittered by up to 10%). */
  readonly interval: number;
  /** For one check, connect included, in milliseconds. */
  readonly timeout: number;
  /** Consecutive passes that make an unhealthy endpoint healthy. */
  readonly healthyThreshold: number;
  /** Consecutive failures that make a healthy endpoint unhealthy. */
  readonly unhealthyThreshold: number;
  /** HTTP: inclusive ranges of statuses that pass, e.g. `[[200, 399]]`. */
  readonly expectStatus: readonly (readonly [number, number])[];
}

/** Passive outlier ejection: endpoints that keep failing are taken out for a while. */
export interface OutlierConfig {
  /** Consecutive failures that eject an endpoint; 0 turns ejection off. */
  readonly consecutiveFailures: number;
  /** Ejection time, in milliseconds, times the endpoint's ejections so far (capped at 300 s). */
  readonly baseEjection: number;
  /** At most this percentage of a service's endpoints ejected at once. */
  readonly maxEjectionPercent: number;
}

/** What a retry is for. */
export type RetryOn =
  | "connect_failure"
  | "reset"
  | "timeout"
  | 500
  | 501
  | 502
  | 503
  | 504;

/** When a failed request or connection is tried again. */
export interface RetriesConfig {
  /** Tries in all, the first included; 1 means no retries. */
  readonly attempts: number;
  /** Which failures are retried. */
  readonly on: readonly RetryOn[];
  /** Per try, until response headers, in milliseconds; null: `timeouts.request`. */
  readonly perTryTimeout: number | null;
  /** At most this percentage of a service's active requests may be retries (always at least 3). */
  readonly budgetPercent: number;
  /** Whether requests with a non-idempotent method (POST, PATCH) are retried too. */
  readonly retryNonIdempotent: boolean;
}

/** Circuit breaking: over a limit, a request gets an immediate 503 and a TCP connection is closed. */
export interface LimitsConfig {
  /** Upstream connections per endpoint. */
  readonly maxConnections: number;
  /** Requests waiting for an upstream connection, per service. */
  readonly maxPending: number;
  /** Requests (or TCP connections) in flight, per service. */
  readonly maxRequests: number;
}

/**
 * Header rules of one direction: names lowercase; values as parts, where a
 * `{ file }` part is the file's current text.
 */
export interface HeaderRulesConfig {
  /** Names removed. */
  readonly remove: readonly string[];
  /** Headers set, replacing any of the same name. */
  readonly set: readonly (readonly [string, readonly TemplatePart[]])[];
  /** Headers added after any of the same name. */
  readonly add: readonly (readonly [string, readonly TemplatePart[]])[];
}

/** WebSocket settings of an HTTP service that enables WebSocket. */
export interface WebSocketConfig {
  /** The largest message passed either way, in bytes. */
  readonly maxMessage: number;
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
  /** TLS on the listener, or null for plain TCP. */
  readonly tls: CertificateFiles | null;
  /** `unix:` listeners: the socket file's permissions; null: as created (0755 under the usual umask 022). */
  readonly socketMode: number | null;
  /** TLS towards upstreams, or null for the defaults (system roots, `DENO_CERT`). */
  readonly upstreamTls: UpstreamTlsConfig | null;
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
  /** How an endpoint is chosen. */
  readonly balance: BalancePolicy;
  /** What ring_hash and maglev hash; null for other policies. */
  readonly hashOn: HashOnConfig | null;
  /** Active health checks, or null when off. */
  readonly healthCheck: HealthCheckConfig | null;
  /** Passive outlier ejection. */
  readonly outlier: OutlierConfig;
  /** Retries. */
  readonly retries: RetriesConfig;
  /** Circuit breaking limits. */
  readonly limits: LimitsConfig;
  /** How often host names and SRV names are resolved again, in milliseconds. */
  readonly dnsRefresh: number;
  /** HTTP only: rules for the request the upstream gets, or null. */
  readonly requestHeaders: HeaderRulesConfig | null;
  /** HTTP only: rules for the response the client gets, or null. */
  readonly responseHeaders: HeaderRulesConfig | null;
  /** HTTP only: rewrite Location and Content-Location that point at the upstream. */
  readonly rewriteRedirects: boolean;
  /** HTTP only: WebSocket settings when the route file enables WebSocket, or null. */
  readonly webSocket: WebSocketConfig | null;
  /**
   * Values to show instead of the real ones, by key path (`upstreams[0]`):
   * strings whose secret references (files, variables named like secrets)
   * stay as written.
   */
  readonly shown: Readonly<Record<string, string>>;
  /** Where `listen`, `match`, `name` and `tls` are written, for conflict errors. */
  readonly positions: {
    readonly listen: SourcePosition;
    readonly tls: SourcePosition;
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

/** The largest WebSocket message where a route file gives no `websocket.max_message`: 16 MiB. */
export const DEFAULT_WEBSOCKET_MAX_MESSAGE = 16 * 1024 * 1024;

/** Resilience settings used where a route file gives none. */
export const DEFAULT_RESILIENCE = {
  balance: "round_robin",
  /** ring_hash and maglev without hash_on hash the client's address. */
  hashOn: { kind: "source_ip" },
  healthCheck: {
    path: "/",
    interval: 5_000,
    timeout: 1_000,
    healthyThreshold: 2,
    unhealthyThreshold: 3,
    expectStatus: [[200, 399]],
  },
  outlier: {
    consecutiveFailures: 5,
    baseEjection: 30_000,
    maxEjectionPercent: 50,
  },
  retries: {
    attempts: 2,
    on: ["connect_failure", "reset"],
    perTryTimeout: null,
    budgetPercent: 20,
    retryNonIdempotent: false,
  },
  limits: { maxConnections: 1024, maxPending: 1024, maxRequests: 1024 },
  dnsRefresh: 5_000,
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

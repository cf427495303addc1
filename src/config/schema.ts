/**
 * The route file schema (contract v1): one zod schema gives validation, the
 * TypeScript type of a parsed file and the JSON Schema editors use.
 *
 * It checks shape and spelling only; meaning across keys (which protocol a
 * service speaks, conflicts between files) is validate's and plan's job.
 * @module
 */
import { z } from "zod";
import { DURATION_PATTERN } from "./duration.ts";
import { SIZE_PATTERN } from "./size.ts";

// `+srv` URLs are only told apart here: whether the rest is an SRV name,
// without port or path, validate checks, so its messages can say which.
const UPSTREAM_URL =
  /^(?:https?:\/\/(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?\/?|(?:tcp|tls):\/\/(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}|(?:https?|tcp|tls)\+srv:\/\/\S+|(?:https?\+)?unix:\/\S+)$/;

/** `scheme://user:password@host`: user info before the host. */
const USERINFO = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*@/;

/**
 * What a service name may be, whether written as `name:` or taken from the
 * file name.
 */
export const SERVICE_NAME: RegExp = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** What {@linkcode SERVICE_NAME} allows, in words. */
export const SERVICE_NAME_RULE =
  "use letters, digits, '.', '_' and '-', starting with a letter or digit";

const upstreamUrl = z.string().refine((url) => !USERINFO.test(url), {
  // The value may hold a password: the message must not echo it, and the
  // URL check after this one must not run (its message would).
  error:
    "user info (user:password@) in an upstream URL is not supported: credentials belong in request headers, a later feature (write the URL as scheme://host:port)",
  abort: true,
}).regex(UPSTREAM_URL, {
  error:
    "is not a supported URL (use http://, https://, tcp:// or tls:// with host and port and no path, their +srv forms with an SRV name, unix:/path, or http+unix:/path and https+unix:/path)",
}).describe(
  "http://host[:port], https://host[:port], http+unix:/path or https+unix:/path for HTTP; tcp://host:port, tls://host:port or unix:/path for TCP; http+srv://, https+srv://, tcp+srv:// or tls+srv:// with an SRV name (_service._proto.name) to take endpoints from SRV records",
);

/** A path to a PEM file, absolute or relative to legate's working directory. */
const pemFile = z.string().min(1, { error: "needs a file path" });

/** A Unix file mode in octal, as chmod takes it. */
const FILE_MODE = /^0?[0-7]{3}$/;

/** A DNS name, as TLS verifies and sends (SNI) it. */
const SERVER_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

const duration = z.string().regex(DURATION_PATTERN, {
  error: "is not a duration (use a number and a unit: 250ms, 2s, 5m, 1h)",
});

/** An HTTP token (RFC 9110): what header and cookie names are made of. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";

/** What `hash_on` may be. */
const HASH_ON = new RegExp(
  `^(?:source_ip|path|header:${TOKEN}|cookie:${TOKEN})$`,
);

/** One status or an inclusive range of them, as health_check.expect_status writes it. */
const STATUS_RANGE = /^[1-5]\d\d(?:-[1-5]\d\d)?$/;

const status = z.int().min(100).max(599);
const statusRange = z.string().regex(STATUS_RANGE, {
  error: "is not a status or a range of statuses (use 200 or 200-399)",
});

/** 0% to 100%, decimals allowed. */
const PERCENTAGE = /^(?:100(?:\.0+)?|\d{1,2}(?:\.\d+)?)%$/;

const limit = z.int().min(1).max(1_000_000);

/** The failures a retry may be for. */
const RETRY_ON = [
  "connect_failure",
  "reset",
  "timeout",
  500,
  501,
  502,
  503,
  504,
] as const;

/** RFC 9110 field-value characters: tab, visible ASCII, space, and bytes 0x80 to 0xFF. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

const headerValue = z.string().regex(FIELD_VALUE, {
  error:
    "is not a header value: it holds a control character (CR, LF, NUL and the like) or a character above U+00FF",
});

/** Header rules of one direction. */
const headerRules = (direction: string) =>
  z.strictObject({
    set: z.record(z.string(), headerValue).optional().describe(
      `Headers to set on ${direction}, replacing any of the same name: { name: value }`,
    ),
    add: z.record(z.string(), headerValue).optional().describe(
      `Headers to add to ${direction}, after any of the same name: { name: value }`,
    ),
    remove: z.array(z.string()).optional().describe(
      `Header names to remove from ${direction}`,
    ),
  });

/** The schema of one route file. */
export const routeFileSchema = z.strictObject({
  name: z.string().regex(SERVICE_NAME, {
    error: `is not a service name (${SERVICE_NAME_RULE})`,
  }).optional().describe(
    "Service name; defaults to the file name without its extension",
  ),
  listen: z.string().describe(
    "Where local clients connect: host:port, :port (every interface) or unix:/path",
  ),
  mode: z.string().regex(FILE_MODE, {
    error:
      'is not a file mode (write three or four octal digits in quotes, such as "0660")',
  }).optional().describe(
    'unix: listeners only: the socket file\'s permissions in octal, quoted, such as "0660" (default "0755")',
  ),
  tls: z.strictObject({
    cert: pemFile.describe(
      "PEM certificate file, the chain included (leaf first); re-read when it changes",
    ),
    key: pemFile.describe(
      "PEM private key file of that certificate; re-read when it changes",
    ),
  }).optional().describe(
    "Serve TLS on listen (host:port only): HTTPS with ALPN h2 and http/1.1 for HTTP services, TLS termination for TCP services",
  ),
  upstream_tls: z.strictObject({
    ca: pemFile.optional().describe(
      "PEM file of CA certificates to trust for upstream certificates, in addition to the system roots and DENO_CERT",
    ),
    cert: pemFile.optional().describe(
      "PEM client certificate file to present (mutual TLS), with key",
    ),
    key: pemFile.optional().describe(
      "PEM private key file of the client certificate, with cert",
    ),
    server_name: z.string().regex(SERVER_NAME, {
      error: "is not a DNS name (such as users.internal)",
    }).optional().describe(
      "Name to verify the upstream certificate against and send as SNI (default: the upstream URL's host)",
    ),
  }).optional().describe(
    "TLS towards https://, https+unix: and tls:// upstreams: CA to trust, client certificate, server name; files re-read when they change",
  ),
  protocol: z.enum(["http", "tcp"]).optional().describe(
    "http or tcp; defaults to what the upstream URLs' scheme implies",
  ),
  upstreams: z.array(
    z.union([
      upstreamUrl,
      z.strictObject({
        url: upstreamUrl,
        weight: z.int().min(1).max(1000).optional().describe(
          "Relative share of traffic, 1 to 1000 (default 1)",
        ),
      }),
    ], {
      error:
        "is not an upstream (use a URL string, or a mapping with url: and weight:)",
    }),
  ).min(1, { error: "needs at least one upstream" }).describe(
    "One or more endpoints: a URL, or { url, weight }",
  ),
  match: z.strictObject({
    host: z.string().regex(/^(?:\*\.)?[A-Za-z0-9.-]+$/, {
      error: "is not a host to match (use an exact name or *.suffix)",
    }).optional().describe(
      "Exact Host (port ignored) or *.suffix; default: any host",
    ),
    path_prefix: z.string().regex(/^\/\S*$/, {
      error: "is not a path prefix (it must start with /)",
    }).optional().describe(
      "Path prefix matched on whole segments; default: /",
    ),
  }).optional().describe(
    "HTTP only: which requests of a shared listener this service takes",
  ),
  strip_prefix: z.boolean().optional().describe(
    "HTTP only: remove match.path_prefix before forwarding (default false)",
  ),
  preserve_host: z.boolean().optional().describe(
    "HTTP only: forward the client's Host instead of the upstream's authority (default false)",
  ),
  timeouts: z.strictObject({
    connect: duration.optional().describe(
      "Time to open an upstream connection (default 5s)",
    ),
    request: duration.optional().describe(
      "HTTP: time from sending a request until the response headers arrive (default 60s)",
    ),
    idle: duration.optional().describe(
      "Time with no bytes in either direction before a body stream or TCP connection is closed (default 60s for HTTP, 1h for TCP)",
    ),
  }).optional().describe("Timeouts, as durations such as 250ms, 2s, 5m"),
  balance: z.enum([
    "round_robin",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
  ])
    .optional().describe(
      "How an endpoint is chosen: round_robin (default, smooth weighted), least_request, random, ring_hash or maglev",
    ),
  hash_on: z.string().regex(HASH_ON, {
    error:
      "is not a hash key (use source_ip, path, header:NAME or cookie:NAME, where NAME is a header or cookie name such as x-user)",
  }).optional().describe(
    "balance ring_hash and maglev only: what to hash: source_ip (default), path, header:NAME or cookie:NAME; TCP services hash source_ip only",
  ),
  health_check: z.strictObject({
    path: z.string().regex(/^\/[\x21-\x7E]*$/, {
      error:
        "is not a path to check (start with /, printable ASCII without spaces; percent-encode the rest)",
    }).optional().describe("HTTP only: the path to GET (default /)"),
    expect_status: z.union([
      status,
      statusRange,
      z.array(z.union([status, statusRange], {
        error: "is not a status or a range of statuses (use 200 or 200-399)",
      })).min(1, { error: "needs at least one status or range" }),
    ], {
      error:
        "is not a status, a range or a list of them (use 200, 200-399 or [200, 204, 300-399])",
    }).optional().describe(
      "HTTP only: the statuses that pass: a status (200), a range (200-399) or a list of them; default 200-399",
    ),
    send: z.string().optional().describe(
      "TCP only: bytes to send once connected; default: send nothing",
    ),
    expect: z.string().optional().describe(
      "TCP only: bytes the answer must start with; default: a connection that opens passes",
    ),
    interval: duration.optional().describe(
      "Time between two checks of one endpoint, jittered by up to 10% (default 5s)",
    ),
    timeout: duration.optional().describe(
      "Time for one check, connect included; less than interval (default 1s)",
    ),
    healthy_threshold: z.int().min(1).max(100).optional().describe(
      "Consecutive passes that make an unhealthy endpoint healthy, 1 to 100 (default 2)",
    ),
    unhealthy_threshold: z.int().min(1).max(100).optional().describe(
      "Consecutive failures that make a healthy endpoint unhealthy, 1 to 100 (default 3)",
    ),
  }).optional().describe(
    "Active health checks, off unless given: HTTP services GET path, TCP services connect (and send and expect bytes when given)",
  ),
  outlier: z.strictObject({
    consecutive_failures: z.int().min(0).max(1000).optional().describe(
      "Consecutive failures (connect failures, resets, timeouts, 502, 503, 504) that eject an endpoint, 0 to 1000; 0 turns ejection off (default 5)",
    ),
    base_ejection: duration.optional().describe(
      "How long an endpoint stays ejected, times its ejections so far, capped at 300s (default 30s)",
    ),
    max_ejection_percent: z.int().min(0).max(100).optional().describe(
      "At most this percentage of a service's endpoints are ejected at once, 0 to 100 (default 50)",
    ),
  }).optional().describe(
    "Passive outlier ejection: endpoints that keep failing are taken out for a while; on by default",
  ),
  retries: z.strictObject({
    attempts: z.int().min(1).max(10).optional().describe(
      "Tries in all, the first included, 1 to 10; 1 turns retries off (default 2)",
    ),
    on: z.array(z.literal(RETRY_ON)).min(1, {
      error:
        "needs at least one failure to retry (connect_failure, reset, timeout, 500 to 504); to turn retries off, set attempts: 1",
    }).optional().describe(
      "Failures that are retried: connect_failure, reset, timeout, 500, 501, 502, 503, 504; TCP services retry connect_failure only (default [connect_failure, reset] for HTTP, [connect_failure] for TCP)",
    ),
    per_try_timeout: duration.optional().describe(
      "HTTP only: time for one try until the response headers arrive (default: timeouts.request)",
    ),
    budget: z.union([
      z.string().regex(PERCENTAGE, {
        error: "is not a percentage from 0% to 100% (such as 20%)",
      }),
      z.number().min(0).max(100),
    ], { error: "is not a percentage (use 0% to 100%, such as 20%)" })
      .optional().describe(
        "HTTP only: at most this share of a service's active requests may be retries, always at least 3: a percentage such as 20% (default 20%)",
      ),
    retry_non_idempotent: z.boolean().optional().describe(
      "HTTP only: retry requests with non-idempotent methods (POST, PATCH) too (default false)",
    ),
  }).optional().describe(
    "When a failed request or connection is tried again on another endpoint; default: 2 attempts on connect_failure and reset, idempotent methods only",
  ),
  limits: z.strictObject({
    max_connections: limit.optional().describe(
      "Upstream connections per endpoint, 1 to 1000000 (default 1024)",
    ),
    max_pending: limit.optional().describe(
      "Requests waiting for an upstream connection, per service, 1 to 1000000 (default 1024)",
    ),
    max_requests: limit.optional().describe(
      "Requests (or TCP connections) in flight, per service, 1 to 1000000 (default 1024)",
    ),
  }).optional().describe(
    "Circuit breaking: over a limit, an HTTP request gets an immediate 503 and a TCP connection is closed",
  ),
  dns_refresh: duration.optional().describe(
    "How often host names and SRV names of upstream URLs are resolved again, at least 100ms (default 5s)",
  ),
  request_headers: headerRules("the request the upstream gets").optional()
    .describe(
      "HTTP only: headers to remove, set and add (in that order) on the request the upstream gets, after legate's forwarding headers; ${file:...} values follow the file as it changes",
    ),
  response_headers: headerRules("the response the client gets").optional()
    .describe(
      "HTTP only: headers to remove, set and add (in that order) on the upstream's response",
    ),
  rewrite_redirects: z.boolean().optional().describe(
    "HTTP only: rewrite Location and Content-Location that point at the upstream to the address the client used (default true)",
  ),
  websocket: z.strictObject({
    max_message: z.string().regex(SIZE_PATTERN, {
      error: "is not a size (use a whole number and a unit: 512KiB, 16MiB)",
    }).optional().describe(
      "The largest WebSocket message passed either way, 1KiB to 64MiB (default 16MiB); a larger one closes the connection with 1009",
    ),
  }).optional().describe(
    "HTTP only: its presence forwards WebSocket upgrades to the upstream (the listener then serves through a loopback hop, see the README); {} takes the defaults",
  ),
});

/** A route file as written, after interpolation and schema validation. */
export type RouteFile = z.infer<typeof routeFileSchema>;

/** The JSON Schema of route files, for yaml-language-server and other editors. */
export function routeFileJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(routeFileSchema, { io: "input" }),
    $id: "https://github.com/legate-proxy/legate/schema/route.schema.json",
    title: "legate route file",
  };
}

/**
 * The keys an object at `path` of a route file may have, for "did you mean"
 * hints; empty when `path` does not lead to an object.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { knownKeysAt } from "./schema.ts";
 * assert.deepEqual(knownKeysAt(["upstreams", 0]), ["url", "weight"]);
 * assert.deepEqual(knownKeysAt(["listen"]), []);
 * ```
 */
export function knownKeysAt(path: readonly PropertyKey[]): string[] {
  const schema = objectOf(schemaAt(path));
  return schema ? Object.keys(schema.shape) : [];
}

/**
 * The smallest and largest number allowed at `path` and whether it must be an
 * integer, for messages that say what would be valid; undefined when `path`
 * does not lead to a bounded number.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { numberRangeAt } from "./schema.ts";
 * assert.deepEqual(numberRangeAt(["upstreams", 0, "weight"]), { min: 1, max: 1000, integer: true });
 * // Where a number is one option of several, its range.
 * assert.deepEqual(numberRangeAt(["health_check", "expect_status", 2]), { min: 100, max: 599, integer: true });
 * assert.deepEqual(numberRangeAt(["retries", "budget"]), { min: 0, max: 100, integer: false });
 * assert.equal(numberRangeAt(["listen"]), undefined);
 * ```
 */
export function numberRangeAt(
  path: readonly PropertyKey[],
): { min: number; max: number; integer: boolean } | undefined {
  let schema = schemaAt(path);
  if (schema instanceof z.ZodUnion) {
    schema = schema.options.find((o) => o instanceof z.ZodNumber) as
      | z.ZodType
      | undefined;
  }
  if (!(schema instanceof z.ZodNumber)) return undefined;
  const { minValue: min, maxValue: max } = schema;
  return min !== null && max !== null && Number.isFinite(min) &&
      Number.isFinite(max)
    ? { min, max, integer: schema.isInt }
    : undefined;
}

/**
 * The schema of the value at `path`. Where a value may take several forms
 * (a union), the path's next segment picks one: an index the list form, a key
 * the mapping form.
 */
function schemaAt(path: readonly PropertyKey[]): z.ZodType | undefined {
  let schema: z.ZodType = routeFileSchema;
  for (const segment of path) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodUnion) {
      const form = typeof segment === "number" ? z.ZodArray : z.ZodObject;
      const option = schema.options.find((o) => o instanceof form);
      if (!option) return undefined;
      schema = option as z.ZodType;
    }
    if (schema instanceof z.ZodArray) {
      if (typeof segment !== "number") return undefined;
      schema = schema.element as z.ZodType;
      continue;
    }
    const object = objectOf(schema);
    const next = object?.shape[String(segment)];
    if (!next) return undefined;
    schema = next as z.ZodType;
  }
  return unwrap(schema);
}

/** `schema` when it is an object, or the object option of a union. */
function objectOf(schema: z.ZodType | undefined): z.ZodObject | undefined {
  if (schema instanceof z.ZodUnion) {
    schema = schema.options.find((o) => o instanceof z.ZodObject) as
      | z.ZodType
      | undefined;
  }
  return schema instanceof z.ZodObject ? schema : undefined;
}

function unwrap(schema: z.ZodType): z.ZodType {
  return schema instanceof z.ZodOptional
    ? unwrap(schema.unwrap() as z.ZodType)
    : schema;
}

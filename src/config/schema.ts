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

const UPSTREAM_URL =
  /^(?:https?:\/\/(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?\/?|(?:tcp|tls):\/\/(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}|unix:\/\S+)$/;

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
    "is not a supported URL (use http://, https://, tcp:// or tls:// with host and port and no path, or unix:/path)",
}).describe(
  "http://host[:port] or https://host[:port] for HTTP; tcp://host:port, tls://host:port or unix:/path for TCP",
);

const duration = z.string().regex(DURATION_PATTERN, {
  error: "is not a duration (use a number and a unit: 250ms, 2s, 5m, 1h)",
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
    ]),
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
 * assert.equal(numberRangeAt(["listen"]), undefined);
 * ```
 */
export function numberRangeAt(
  path: readonly PropertyKey[],
): { min: number; max: number; integer: boolean } | undefined {
  const schema = schemaAt(path);
  if (!(schema instanceof z.ZodNumber)) return undefined;
  const { minValue: min, maxValue: max } = schema;
  return min !== null && max !== null && Number.isFinite(min) &&
      Number.isFinite(max)
    ? { min, max, integer: schema.isInt }
    : undefined;
}

/** The schema of the value at `path`; for an upstream, its mapping form. */
function schemaAt(path: readonly PropertyKey[]): z.ZodType | undefined {
  let schema: z.ZodType = routeFileSchema;
  for (const segment of path) {
    schema = unwrap(schema);
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

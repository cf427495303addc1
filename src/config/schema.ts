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

const upstreamUrl = z.string().regex(UPSTREAM_URL, {
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
  name: z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/i, {
    error:
      "is not a service name (use letters, digits, '.', '_' and '-', starting with a letter or digit)",
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
 */
export function knownKeysAt(path: readonly PropertyKey[]): string[] {
  let schema: z.ZodType = routeFileSchema;
  for (const segment of [...path, null]) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodArray) {
      if (typeof segment !== "number") return [];
      schema = schema.element as z.ZodType;
      continue;
    }
    if (schema instanceof z.ZodUnion) {
      const object = schema.options.find((o) => o instanceof z.ZodObject);
      if (!object) return [];
      schema = object as z.ZodType;
    }
    if (!(schema instanceof z.ZodObject)) return [];
    if (segment === null) return Object.keys(schema.shape);
    const next = schema.shape[String(segment)];
    if (!next) return [];
    schema = next as z.ZodType;
  }
  return [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  return schema instanceof z.ZodOptional
    ? unwrap(schema.unwrap() as z.ZodType)
    : schema;
}

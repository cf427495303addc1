/**
 * Turns one route file's text into a typed {@linkcode ServiceConfig}, or into
 * errors that each name `file:line:column` and the key path.
 *
 * Checks one file at a time; conflicts between files are plan's job.
 * @module
 */
import { isMap, isScalar, LineCounter, parseAllDocuments, visit } from "yaml";
import type { Document, Node as YamlNode } from "yaml";
import type { z } from "zod";
import { parseListenAddress } from "./address.ts";
import { parseDuration } from "./duration.ts";
import { ConfigError, formatKeyPath, type SourcePosition } from "./errors.ts";
import { interpolate, type ReferenceSource } from "./interpolate.ts";
import type { RouteSource } from "./load.ts";
import { knownKeysAt, type RouteFile, routeFileSchema } from "./schema.ts";
import {
  DEFAULT_TIMEOUTS,
  type ServiceConfig,
  type UpstreamConfig,
} from "./service.ts";

/** The outcome of validating one route file: a service, or its errors. */
export type FileResult = { service: ServiceConfig; errors?: undefined } | {
  service?: undefined;
  errors: ConfigError[];
};

/**
 * Parses, interpolates and validates one route file.
 *
 * @example Usage
 * ```ts
 * import { validateRouteFile } from "./validate.ts";
 * import { processReferences } from "./interpolate.ts";
 * const result = validateRouteFile(
 *   { file: "routes/users.yaml", text: "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\n" },
 *   processReferences,
 * );
 * result.service?.protocol; // "http"
 * ```
 */
export function validateRouteFile(
  source: RouteSource,
  references: ReferenceSource,
): FileResult {
  const lines = new LineCounter();
  const at = (offset: number): SourcePosition => {
    const { line, col } = lines.linePos(offset);
    return { file: source.file, line, column: col };
  };
  const documents = parseAllDocuments(source.text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
  });
  if (!Array.isArray(documents)) {
    return fail(
      at(0),
      "",
      "file is empty (a route file needs at least listen and upstreams)",
    );
  }
  const errors: ConfigError[] = [];
  for (const error of documents.flatMap((d) => d.errors)) {
    errors.push(
      new ConfigError(
        at(error.pos[0]),
        "",
        yamlMessage(error.message, source.text, error.pos[0]),
      ),
    );
  }
  if (errors.length > 0) return { errors };
  if (documents.length > 1) {
    return fail(
      at(documents[1]!.range[0]),
      "",
      "a route file holds one service: remove the second YAML document (after ---) or move it to its own file",
    );
  }
  const document = documents[0];
  if (document === undefined || document.contents === null) {
    return fail(
      at(0),
      "",
      "file is empty (a route file needs at least listen and upstreams)",
    );
  }
  if (!isMap(document.contents)) {
    return fail(
      at(document.contents.range?.[0] ?? 0),
      "",
      "a route file is a mapping of keys such as listen: and upstreams:",
    );
  }

  const { unresolved, shown } = interpolateStrings(
    document,
    references,
    at,
    errors,
  );
  const data: unknown = document.toJS();
  const parsed = routeFileSchema.safeParse(data);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      // A value whose reference failed is already reported; its text is not the user's.
      if (!unresolved.has(formatKeyPath(issue.path))) {
        errors.push(...issueErrors(issue, document, data, at));
      }
    }
  }
  if (!parsed.success || errors.length > 0) return { errors };
  return buildService(source.file, parsed.data, document, at, shown);
}

function fail(
  position: SourcePosition,
  keyPath: string,
  detail: string,
): FileResult {
  return { errors: [new ConfigError(position, keyPath, detail)] };
}

/** yaml's messages end with " at line L, column C": the position is ours to print. */
function yamlMessage(message: string, text: string, offset: number): string {
  const detail = message.split("\n")[0]!.replace(
    / at line \d+, column \d+:?$/,
    "",
  );
  // `${...}` inside [ ] or { } reads as a YAML flow mapping unless quoted.
  const lineStart = text.lastIndexOf("\n", offset - 1) + 1;
  const lineEnd = text.indexOf("\n", offset);
  const line = text.slice(lineStart, lineEnd < 0 ? undefined : lineEnd);
  return line.includes("${") && /[[{]/.test(line)
    ? `${detail} (quote values that hold \${...} inside [ ] or { }: '\${NAME}')`
    : detail;
}

function interpolateStrings(
  document: Document,
  references: ReferenceSource,
  at: (offset: number) => SourcePosition,
  errors: ConfigError[],
): { unresolved: Set<string>; shown: Record<string, string> } {
  const unresolved = new Set<string>();
  const shown: Record<string, string> = {};
  visit(document, {
    Scalar(key, node, path) {
      if (
        key === "key" || typeof node.value !== "string" ||
        !node.value.includes("${")
      ) {
        return;
      }
      const result = interpolate(node.value, references);
      if (result.error !== undefined) {
        const keyPath = keyPathOf(path, node);
        unresolved.add(keyPath);
        errors.push(
          new ConfigError(at(node.range?.[0] ?? 0), keyPath, result.error),
        );
      } else {
        if (result.shown !== result.value) {
          shown[keyPathOf(path, node)] = result.shown;
        }
        node.value = result.value;
      }
    },
  });
  return { unresolved, shown };
}

/** The key path of a node reached by `visit`, from its ancestors. */
function keyPathOf(ancestors: readonly unknown[], node: unknown): string {
  const path: PropertyKey[] = [];
  const chain = [...ancestors, node];
  for (let i = 1; i < chain.length; i++) {
    const parent = chain[i - 1] as { items?: unknown[]; key?: unknown };
    const child = chain[i];
    if (Array.isArray(parent.items) && !("key" in (child as object))) {
      path.push(parent.items.indexOf(child));
    } else if (
      parent.key !== undefined && child !== parent.key && isScalar(parent.key)
    ) {
      path.push(String(parent.key.value));
    }
  }
  return formatKeyPath(path);
}

function nodeAt(
  document: Document,
  path: readonly PropertyKey[],
): YamlNode | undefined {
  const node = document.getIn(path as unknown[], true);
  return node && typeof node === "object" && "range" in node
    ? node as YamlNode
    : undefined;
}

function offsetOf(document: Document, path: readonly PropertyKey[]): number {
  for (let end = path.length; end >= 0; end--) {
    const range = nodeAt(document, path.slice(0, end))?.range;
    if (range) return range[0];
  }
  return 0;
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let value = data;
  for (const segment of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

function issueErrors(
  issue: z.core.$ZodIssue,
  document: Document,
  data: unknown,
  at: (offset: number) => SourcePosition,
): ConfigError[] {
  const path = issue.path;
  if (issue.code === "unrecognized_keys") {
    const known = knownKeysAt(path);
    const map = nodeAt(document, path);
    return issue.keys.map((key) => {
      const pair = isMap(map)
        ? map.items.find((p) => isScalar(p.key) && p.key.value === key)
        : undefined;
      const keyNode = pair?.key as YamlNode | undefined;
      return new ConfigError(
        at(keyNode?.range?.[0] ?? offsetOf(document, path)),
        formatKeyPath(path),
        unknownKeyMessage(key, known),
      );
    });
  }
  const value = valueAt(data, path);
  const keyPath = formatKeyPath(path);
  const position = at(offsetOf(document, path));
  if (value === undefined) {
    const parentPath = formatKeyPath(path.slice(0, -1));
    return [
      new ConfigError(
        position,
        parentPath,
        `missing required key "${String(path.at(-1))}"`,
      ),
    ];
  }
  return [new ConfigError(position, keyPath, issueDetail(issue, value))];
}

function issueDetail(issue: z.core.$ZodIssue, value: unknown): string {
  switch (issue.code) {
    case "invalid_type":
      return `expected ${
        article(issue.expected === "int" ? "integer" : issue.expected)
      }, got ${describe(value)}`;
    case "invalid_value":
      return `${describe(value)} is not one of ${
        issue.values.map(String).join(", ")
      }`;
    case "invalid_union":
      return `${
        describe(value)
      } is not an upstream (use a URL string, or a mapping with url: and weight:)`;
    case "too_small":
      return issue.origin === "array"
        ? issue.message
        : `${describe(value)} is below the minimum ${issue.minimum}`;
    case "too_big":
      return `${describe(value)} is above the maximum ${issue.maximum}`;
    default:
      return `${describe(value)} ${issue.message}`;
  }
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const closest = known
    .map((candidate) => ({ candidate, distance: editDistance(key, candidate) }))
    .sort((a, b) => a.distance - b.distance)[0];
  if (closest && closest.distance <= Math.max(2, Math.floor(key.length / 3))) {
    return `unknown key "${key}" (did you mean "${closest.candidate}"?)`;
  }
  return `unknown key "${key}" (valid keys: ${known.join(", ")})`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}

const HTTP_ONLY_KEYS = ["match", "strip_prefix", "preserve_host"] as const;

/** Checks meaning across keys and builds the typed service. */
function buildService(
  file: string,
  route: RouteFile,
  document: Document,
  at: (offset: number) => SourcePosition,
  shown: Readonly<Record<string, string>>,
): FileResult {
  const errors: ConfigError[] = [];
  const position = (...path: PropertyKey[]) => at(offsetOf(document, path));

  let listen: ServiceConfig["listen"] | undefined;
  try {
    listen = parseListenAddress(route.listen);
  } catch (error) {
    errors.push(
      new ConfigError(position("listen"), "listen", (error as Error).message),
    );
  }

  const upstreams = route.upstreams.map((entry, index) => {
    const url = typeof entry === "string" ? entry : entry.url;
    const path = typeof entry === "string"
      ? ["upstreams", index]
      : ["upstreams", index, "url"];
    return {
      path,
      upstream: parseUpstream(
        url,
        typeof entry === "string" ? 1 : entry.weight ?? 1,
      ),
    };
  });
  const kinds = new Set(upstreams.map(({ upstream }) => upstream.protocol));
  const protocol = route.protocol ??
    (kinds.size === 1 ? [...kinds][0]! : undefined);
  if (protocol === undefined) {
    errors.push(
      new ConfigError(
        position("upstreams"),
        "upstreams",
        "mixes HTTP (http://, https://) and TCP (tcp://, tls://, unix:) upstreams: a service speaks one protocol",
      ),
    );
  } else {
    for (const { path, upstream } of upstreams) {
      if (upstream.protocol !== protocol) {
        errors.push(
          new ConfigError(
            position(...path),
            formatKeyPath(path),
            `"${upstream.config.url}" is not ${
              protocol === "http" ? "an HTTP" : "a TCP"
            } upstream (use ${
              protocol === "http"
                ? "http:// or https://"
                : "tcp://, tls:// or unix:"
            })`,
          ),
        );
      }
    }
  }
  if (protocol === "tcp") {
    for (const key of HTTP_ONLY_KEYS) {
      if (route[key] !== undefined) {
        errors.push(
          new ConfigError(
            position(key),
            key,
            "applies to HTTP services only; this service is tcp",
          ),
        );
      }
    }
    if (route.timeouts?.request !== undefined) {
      errors.push(
        new ConfigError(
          position("timeouts", "request"),
          "timeouts.request",
          "applies to HTTP services only; TCP connections use timeouts.idle",
        ),
      );
    }
  }
  if (route.strip_prefix && route.match?.path_prefix === undefined) {
    errors.push(
      new ConfigError(
        position("strip_prefix"),
        "strip_prefix",
        "needs match.path_prefix: there is no prefix to strip",
      ),
    );
  }
  if (errors.length > 0 || listen === undefined || protocol === undefined) {
    return { errors };
  }

  const stem = file.replace(/^.*[\\/]/, "").replace(/\.ya?ml$/, "");
  const pathPrefix = route.match?.path_prefix ?? "/";
  const timeouts = route.timeouts ?? {};
  const service: ServiceConfig = {
    name: route.name ?? stem,
    file,
    listen,
    protocol,
    upstreams: upstreams.map(({ upstream }) => upstream.config),
    match: {
      ...(route.match?.host === undefined
        ? {}
        : { host: route.match.host.toLowerCase() }),
      pathPrefix: pathPrefix.length > 1
        ? pathPrefix.replace(/\/$/, "")
        : pathPrefix,
    },
    stripPrefix: route.strip_prefix ?? false,
    preserveHost: route.preserve_host ?? false,
    timeouts: {
      connect: parseTimeout(timeouts.connect, DEFAULT_TIMEOUTS.connect),
      request: parseTimeout(timeouts.request, DEFAULT_TIMEOUTS.request),
      idle: parseTimeout(timeouts.idle, DEFAULT_TIMEOUTS.idle[protocol]),
    },
    shown,
    positions: {
      listen: position("listen"),
      match: position(route.match === undefined ? "listen" : "match"),
      name: position(route.name === undefined ? "listen" : "name"),
    },
  };
  return { service };
}

function parseTimeout(text: string | undefined, fallback: number): number {
  return text === undefined ? fallback : parseDuration(text);
}

/** Splits an upstream URL the schema accepted into where and how to connect. */
function parseUpstream(
  url: string,
  weight: number,
): { protocol: "http" | "tcp"; config: UpstreamConfig } {
  if (url.startsWith("unix:")) {
    return {
      protocol: "tcp",
      config: {
        url,
        address: { transport: "unix", path: url.slice("unix:".length) },
        tls: false,
        authority: "localhost",
        weight,
      },
    };
  }
  const scheme = url.slice(0, url.indexOf(":"));
  const authority = url.slice(scheme.length + 3).replace(/\/$/, "");
  const portMatch = /:(\d+)$/.exec(authority);
  const host = portMatch ? authority.slice(0, portMatch.index) : authority;
  const defaultPort = scheme === "https" ? 443 : 80;
  return {
    protocol: scheme === "http" || scheme === "https" ? "http" : "tcp",
    config: {
      url,
      address: {
        transport: "tcp",
        hostname: host.startsWith("[") ? host.slice(1, -1) : host,
        port: portMatch ? Number(portMatch[1]) : defaultPort,
      },
      tls: scheme === "https" || scheme === "tls",
      authority,
      weight,
    },
  };
}

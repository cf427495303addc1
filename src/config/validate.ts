/**
 * Turns one route file's text into a typed {@linkcode ServiceConfig}, or into
 * errors that each name `file:line:column` and the key path.
 *
 * Checks one file at a time; conflicts between files are plan's job.
 * @module
 */
import { isIPv4, isIPv6 } from "node:net";
import { isMap, isScalar, LineCounter, parseAllDocuments, visit } from "yaml";
import type { Document, Node as YamlNode } from "yaml";
import type { z } from "zod";
import { parseListenAddress } from "../address.ts";
import { parseDuration } from "./duration.ts";
import {
  ConfigError,
  describeValue,
  formatKeyPath,
  type SourcePosition,
  valueAt,
} from "./errors.ts";
import { buildHeaderRules } from "./header_rules.ts";
import { buildResilience, type Report } from "./resilience.ts";
import {
  interpolate,
  type ReferenceSource,
  type Secret,
} from "./interpolate.ts";
import type { RouteSource } from "./load.ts";
import {
  knownKeysAt,
  numberRangeAt,
  type RouteFile,
  routeFileSchema,
  SERVICE_NAME,
  SERVICE_NAME_RULE,
} from "./schema.ts";
import { parseSize } from "./size.ts";
import {
  type CertificateFiles,
  DEFAULT_TIMEOUTS,
  DEFAULT_WEBSOCKET_MAX_MESSAGE,
  type ServiceConfig,
  type UpstreamConfig,
  type UpstreamTlsConfig,
  type WebSocketConfig,
} from "./service.ts";
import {
  mismatchedKey,
  readCertificates,
  readPrivateKey,
} from "./certificates.ts";

/** The outcome of validating one route file: a service, or its errors. */
export type FileResult = { service: ServiceConfig; errors?: undefined } | {
  service?: undefined;
  errors: ConfigError[];
};

/**
 * Parses, interpolates and validates one route file.
 *
 * Error messages never hold the resolved value of a secret reference (a
 * `${file:...}`, or a variable named like a secret): they show it as written.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateRouteFile } from "./validate.ts";
 * import { processReferences } from "./interpolate.ts";
 * const result = validateRouteFile(
 *   { file: "routes/users.yaml", text: "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\n" },
 *   processReferences,
 * );
 * assert.equal(result.service?.name, "users");
 * assert.equal(result.service?.protocol, "http");
 *
 * const bad = validateRouteFile(
 *   { file: "routes/users.yaml", text: "listen: 127.0.0.1:15001\nupstreams: [{ url: http://a, weight: '3' }]\n" },
 *   processReferences,
 * );
 * assert.deepEqual(bad.errors?.map((e) => e.message), [
 *   'routes/users.yaml:2:38: upstreams[0].weight: expected an integer from 1 to 1000, got "3"',
 * ]);
 * ```
 */
export function validateRouteFile(
  source: RouteSource,
  references: ReferenceSource,
): FileResult {
  const secrets: Secret[] = [];
  const result = validateDocument(source, references, secrets);
  return result.errors && secrets.length > 0
    ? { errors: result.errors.map((error) => redact(error, secrets)) }
    : result;
}

function validateDocument(
  source: RouteSource,
  references: ReferenceSource,
  secrets: Secret[],
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

  const { unresolved, shown, templates } = interpolateStrings(
    document,
    references,
    at,
    errors,
    secrets,
  );
  const data: unknown = document.toJS();
  const parsed = routeFileSchema.safeParse(data);
  if (!parsed.success) {
    const context = { document, data, shown, at };
    for (const issue of parsed.error.issues) {
      errors.push(
        ...issueErrors(issue, context).filter((error) =>
          // A value whose reference failed is already reported; its text is not the user's.
          !unresolved.has(error.keyPath)
        ),
      );
    }
  }
  if (!parsed.success || errors.length > 0) return { errors };
  return buildService(
    source.file,
    parsed.data,
    document,
    at,
    shown,
    templates,
    references,
  );
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
  secrets: Secret[],
): {
  unresolved: Set<string>;
  shown: Record<string, string>;
  templates: Record<string, string>;
} {
  const unresolved = new Set<string>();
  const shown: Record<string, string> = {};
  const templates: Record<string, string> = {};
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
        secrets.push(...result.secrets);
        // Header values keep their file references, to follow the files.
        if (node.value.includes("${file:")) {
          const keyPath = keyPathOf(path, node);
          if (/^(?:request|response)_headers\./.test(keyPath)) {
            templates[keyPath] = node.value;
          }
        }
        node.value = result.value;
      }
    },
  });
  return { unresolved, shown, templates };
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

/** What issue messages are made from. */
interface IssueContext {
  readonly document: Document;
  /** The file's data after interpolation. */
  readonly data: unknown;
  /** Strings as written, by key path, where they hold secret references. */
  readonly shown: Readonly<Record<string, string>>;
  readonly at: (offset: number) => SourcePosition;
}

function issueErrors(
  issue: z.core.$ZodIssue,
  context: IssueContext,
): ConfigError[] {
  const { document, data, shown, at } = context;
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
  if (issue.code === "invalid_union") {
    const inner = unionBranchIssues(issue);
    if (inner) {
      return inner.flatMap((branchIssue) =>
        issueErrors(
          { ...branchIssue, path: [...path, ...branchIssue.path] },
          context,
        )
      );
    }
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
  const written = typeof value === "string" ? shown[keyPath] ?? value : value;
  return [new ConfigError(position, keyPath, issueDetail(issue, written))];
}

/**
 * The issues of the one union option whose type fits the value (a string
 * URL, or a `{ url, weight }` mapping), so that a mapping's own problems are
 * reported rather than "not an upstream"; undefined when no option fits.
 */
function unionBranchIssues(
  issue: z.core.$ZodIssueInvalidUnion,
): z.core.$ZodIssue[] | undefined {
  const fitting = issue.errors.filter((issues) =>
    !issues.some((i) => i.code === "invalid_type" && i.path.length === 0)
  );
  return fitting.length === 1 && fitting[0]!.length > 0
    ? fitting[0]
    : undefined;
}

function issueDetail(issue: z.core.$ZodIssue, value: unknown): string {
  const range = numberRangeAt(issue.path);
  switch (issue.code) {
    case "invalid_type":
      return range
        ? expectedNumber(range, value)
        : `expected ${
          article(issue.expected === "int" ? "integer" : issue.expected)
        }, got ${describeValue(value)}`;
    case "invalid_value":
      return `${describeValue(value)} is not one of ${
        issue.values.map(String).join(", ")
      }${valueHint(value, issue.values)}`;
    case "invalid_union":
      // Each union in the schema says what it accepts.
      return `${describeValue(value)} ${issue.message}`;
    case "too_small":
      if (issue.origin === "array") return issue.message;
      return range
        ? expectedNumber(range, value)
        : `${describeValue(value)} is below the minimum ${issue.minimum}`;
    case "too_big":
      return range
        ? expectedNumber(range, value)
        : `${describeValue(value)} is above the maximum ${issue.maximum}`;
    case "custom":
      // Written for this check, and must not echo the value (it may hold a password).
      return issue.message;
    default:
      return `${describeValue(value)} ${issue.message}`;
  }
}

function expectedNumber(
  range: { min: number; max: number; integer: boolean },
  value: unknown,
): string {
  const kind = range.integer ? "an integer" : "a number";
  return `expected ${kind} from ${range.min} to ${range.max}, got ${
    describeValue(value)
  }`;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

/** " (did you mean ...?)" for a value that is not one of `values`, or "". */
function valueHint(value: unknown, values: readonly unknown[]): string {
  if (typeof value !== "string") return "";
  // `on: ["502"]`: a status written as a string.
  if (values.includes(Number(value))) return ` (write ${value} without quotes)`;
  const guess = closest(
    value,
    values.filter((v): v is string => typeof v === "string"),
  );
  return guess === undefined ? "" : ` (did you mean "${guess}"?)`;
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const guess = closest(key, known);
  return guess === undefined
    ? `unknown key "${key}" (valid keys: ${known.join(", ")})`
    : `unknown key "${key}" (did you mean "${guess}"?)`;
}

/** The candidate `word` is most likely a typo of, if any is close enough. */
function closest(
  word: string,
  candidates: readonly string[],
): string | undefined {
  const best = candidates
    .map((candidate) => ({
      candidate,
      distance: editDistance(word, candidate),
    }))
    .sort((a, b) => a.distance - b.distance)[0];
  return best && best.distance <= Math.max(2, Math.floor(word.length / 3))
    ? best.candidate
    : undefined;
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

const HTTP_ONLY_KEYS = [
  "match",
  "strip_prefix",
  "preserve_host",
  "request_headers",
  "response_headers",
  "rewrite_redirects",
  "websocket",
] as const;

/** The bounds of `websocket.max_message`: Deno reads client messages up to 64 MiB. */
const MAX_MESSAGE_RANGE = { min: 1024, max: 64 * 1024 * 1024 } as const;

/** The `websocket` key: null when absent, which leaves WebSocket off. */
function buildWebSocket(
  route: RouteFile,
  report: Report,
): WebSocketConfig | null {
  if (route.websocket === undefined) return null;
  const text = route.websocket.max_message;
  const maxMessage = text === undefined
    ? DEFAULT_WEBSOCKET_MAX_MESSAGE
    : parseSize(text);
  if (
    maxMessage < MAX_MESSAGE_RANGE.min || maxMessage > MAX_MESSAGE_RANGE.max
  ) {
    report(
      ["websocket", "max_message"],
      `"${text}" is out of range: use 1KiB to 64MiB`,
    );
  }
  return { maxMessage };
}

/** Checks meaning across keys and builds the typed service. */
function buildService(
  file: string,
  route: RouteFile,
  document: Document,
  at: (offset: number) => SourcePosition,
  shown: Readonly<Record<string, string>>,
  templates: Readonly<Record<string, string>>,
  references: ReferenceSource,
): FileResult {
  const errors: ConfigError[] = [];
  const position = (...path: PropertyKey[]) => at(offsetOf(document, path));
  const report: Report = (path, detail) =>
    errors.push(
      new ConfigError(position(...path), formatKeyPath(path), detail),
    );

  let listen: ServiceConfig["listen"] | undefined;
  try {
    listen = parseListenAddress(route.listen, shown.listen);
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
    const upstream = parseUpstream(
      url,
      typeof entry === "string" ? 1 : entry.weight ?? 1,
    );
    const written = shown[formatKeyPath(path)] ?? url;
    if (upstream.problem !== undefined) {
      report(path, `"${written}": ${upstream.problem}`);
    }
    return { path, written, upstream };
  });
  const kinds = new Set(upstreams.map(({ upstream }) => upstream.protocol));
  const protocol = route.protocol ??
    (kinds.size === 1 ? [...kinds][0]! : undefined);
  if (protocol === undefined) {
    errors.push(
      new ConfigError(
        position("upstreams"),
        "upstreams",
        "mixes HTTP (http://, https://, http+unix:) and TCP (tcp://, tls://, unix:) upstreams: a service speaks one protocol",
      ),
    );
  } else {
    for (const { path, written, upstream } of upstreams) {
      if (upstream.protocol !== protocol) {
        errors.push(
          new ConfigError(
            position(...path),
            formatKeyPath(path),
            `"${written}" is not ${
              protocol === "http" ? "an HTTP" : "a TCP"
            } upstream (use ${
              protocol === "http"
                ? "http:// or https://, their +srv forms, or http+unix:"
                : "tcp://, tls://, their +srv forms, or unix:"
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
  const base = file.replace(/^.*[\\/]/, "");
  const stem = base.replace(/\.ya?ml$/, "");
  if (route.name === undefined && !SERVICE_NAME.test(stem)) {
    errors.push(
      new ConfigError(
        { file, line: 1, column: 1 },
        "",
        `file name "${base}" is not a valid service name (${SERVICE_NAME_RULE}): rename the file, or set name:`,
      ),
    );
  }
  const listenTls = route.tls === undefined
    ? null
    : readCertificateFiles(route.tls, ["tls"], references, report);
  if (route.tls !== undefined && listen?.transport === "unix") {
    report(
      ["tls"],
      "needs a host:port listen address: TLS on a unix: listener is not supported",
    );
  }
  if (route.mode !== undefined && listen?.transport !== "unix") {
    report(
      ["mode"],
      "applies to unix: listeners only (it is the socket file's permissions)",
    );
  }
  const upstreamTls = route.upstream_tls === undefined
    ? null
    : readUpstreamTls(route.upstream_tls, references, report);
  if (
    route.upstream_tls !== undefined &&
    !upstreams.some(({ upstream }) => upstream.config.tls)
  ) {
    report(
      ["upstream_tls"],
      "applies to https://, https+unix: and tls:// upstreams; this service has none",
    );
  }
  const resilience = protocol === undefined
    ? undefined
    : buildResilience(route, protocol, shown, report);
  const headerKeys = buildHeaderRules(route, templates, references, report);
  const webSocket = buildWebSocket(route, report);
  if (
    errors.length > 0 || listen === undefined || protocol === undefined ||
    resilience === undefined || listenTls === undefined ||
    upstreamTls === undefined
  ) {
    return { errors };
  }

  const pathPrefix = route.match?.path_prefix ?? "/";
  const timeouts = route.timeouts ?? {};
  const name = route.name ?? stem;
  const service: ServiceConfig = {
    name,
    file,
    listen,
    protocol,
    tls: listenTls,
    socketMode: route.mode === undefined ? null : parseInt(route.mode, 8),
    upstreamTls,
    // An HTTP upstream on a Unix socket has no host: it gets the service's name.
    upstreams: upstreams.map(({ upstream }) =>
      upstream.protocol === "http" &&
        upstream.config.address.transport === "unix"
        ? { ...upstream.config, authority: name }
        : upstream.config
    ),
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
    ...resilience,
    ...headerKeys,
    webSocket,
    shown,
    positions: {
      listen: position("listen"),
      tls: position(route.tls === undefined ? "listen" : "tls"),
      match: position(route.match === undefined ? "listen" : "match"),
      name: position(route.name === undefined ? "listen" : "name"),
    },
  };
  return { service };
}

/**
 * The certificate and key files of `tls` or `upstream_tls`, read and checked;
 * undefined (after reporting why) when they cannot be used.
 */
function readCertificateFiles(
  files: { readonly cert: string; readonly key: string },
  path: readonly PropertyKey[],
  source: ReferenceSource,
  report: Report,
): CertificateFiles | undefined {
  const cert = readCertificates(files.cert, source);
  const key = readPrivateKey(files.key, source);
  if (cert.error !== undefined) report([...path, "cert"], cert.error);
  if (key.error !== undefined) report([...path, "key"], key.error);
  if (cert.text === undefined || key.text === undefined) return undefined;
  const mismatch = mismatchedKey(
    { path: files.cert, text: cert.text },
    { path: files.key, text: key.text },
  );
  if (mismatch !== undefined) {
    report([...path, "key"], mismatch);
    return undefined;
  }
  return {
    certFile: files.cert,
    keyFile: files.key,
    cert: cert.text,
    key: key.text,
  };
}

function readUpstreamTls(
  settings: NonNullable<RouteFile["upstream_tls"]>,
  source: ReferenceSource,
  report: Report,
): UpstreamTlsConfig | undefined {
  let ok = true;
  let ca: string | null = null;
  if (settings.ca !== undefined) {
    const read = readCertificates(settings.ca, source);
    if (read.error !== undefined) {
      report(["upstream_tls", "ca"], read.error);
      ok = false;
    } else {
      ca = read.text;
    }
  }
  let client: CertificateFiles | null = null;
  const { cert, key } = settings;
  if (cert !== undefined && key !== undefined) {
    const read = readCertificateFiles(
      { cert, key },
      ["upstream_tls"],
      source,
      report,
    );
    if (read === undefined) ok = false;
    else client = read;
  } else if (cert !== undefined || key !== undefined) {
    report(
      ["upstream_tls", cert === undefined ? "key" : "cert"],
      "a client certificate needs both cert and key",
    );
    ok = false;
  }
  if (!ok) return undefined;
  return {
    caFile: settings.ca ?? null,
    ca,
    client,
    serverName: settings.server_name?.toLowerCase() ?? null,
  };
}

function validPort(port: number): boolean {
  return port >= 1 && port <= 65535;
}

/** Shorter secret values are not worth garbling a message over. */
const MIN_REDACTED_LENGTH = 4;

/**
 * `error` with every secret value in its detail replaced by the reference as
 * written. The messages above show values as written already; this catches a
 * message that does not, now or after a later change.
 */
function redact(error: ConfigError, secrets: readonly Secret[]): ConfigError {
  let detail = error.detail;
  for (const { value, reference } of secrets) {
    if (value.length < MIN_REDACTED_LENGTH) continue;
    const quoted = JSON.stringify(value).slice(1, -1);
    detail = detail.replaceAll(value, reference).replaceAll(quoted, reference);
  }
  return detail === error.detail
    ? error
    : new ConfigError(error.position, error.keyPath, detail);
}

function parseTimeout(text: string | undefined, fallback: number): number {
  return text === undefined ? fallback : parseDuration(text);
}

/** What the part of an SRV URL after `://` must be: `_service._proto.name`. */
const SRV_NAME =
  /^_[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\._[A-Za-z0-9]+(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+\.?$/;

/** A parsed upstream URL, and what is wrong with it if anything is. */
interface ParsedUpstream {
  readonly protocol: "http" | "tcp";
  readonly config: UpstreamConfig;
  /** Why the URL cannot be used, for a message after the URL as written. */
  readonly problem?: string;
}

/** Splits an upstream URL the schema accepted into where and how to connect. */
function parseUpstream(url: string, weight: number): ParsedUpstream {
  const unixHttp = /^(https?)\+unix:/.exec(url);
  if (unixHttp) {
    return {
      ...(unixHttp[1] === "https"
        ? {
          problem:
            "TLS over a Unix socket is not supported: Deno speaks TLS over TCP connections only (use http+unix:, or https:// to a TCP address)",
        }
        : {}),
      protocol: "http",
      config: {
        url,
        discovery: "static",
        address: { transport: "unix", path: url.slice(unixHttp[0].length) },
        tls: unixHttp[1] === "https",
        // The service's name, once it is known.
        authority: "localhost",
        weight,
      },
    };
  }
  if (url.startsWith("unix:")) {
    return {
      protocol: "tcp",
      config: {
        url,
        discovery: "static",
        address: { transport: "unix", path: url.slice("unix:".length) },
        tls: false,
        authority: "localhost",
        weight,
      },
    };
  }
  const scheme = url.slice(0, url.indexOf(":"));
  const base = scheme.replace(/\+srv$/, "");
  const protocol = base === "http" || base === "https" ? "http" : "tcp";
  const tls = base === "https" || base === "tls";
  const rest = url.slice(scheme.length + "://".length);
  if (base !== scheme) {
    return parseSrvUpstream(url, rest, protocol, tls, weight);
  }
  const authority = rest.replace(/\/$/, "");
  const portMatch = /:(\d+)$/.exec(authority);
  const host = portMatch ? authority.slice(0, portMatch.index) : authority;
  const hostname = host.startsWith("[") ? host.slice(1, -1) : host;
  const port = portMatch ? Number(portMatch[1]) : base === "https" ? 443 : 80;
  const config: UpstreamConfig = {
    url,
    discovery: isIPv4(hostname) || isIPv6(hostname) ? "static" : "dns",
    address: { transport: "tcp", hostname, port },
    tls,
    authority,
    weight,
  };
  const problem = host.startsWith("[") && !isIPv6(hostname)
    ? "the host in [ ] is not an IPv6 address"
    : /^[\d.]+$/.test(hostname) && !isIPv4(hostname)
    ? "the host is not an IPv4 address (four numbers from 0 to 255, such as 10.0.0.1)"
    : !validPort(port)
    ? "the port must be 1 to 65535"
    : undefined;
  return problem === undefined
    ? { protocol, config }
    : { protocol, config, problem };
}

/** An `http+srv://`, `https+srv://`, `tcp+srv://` or `tls+srv://` URL. */
function parseSrvUpstream(
  url: string,
  rest: string,
  protocol: "http" | "tcp",
  tls: boolean,
  weight: number,
): ParsedUpstream {
  // Like http://host/, an HTTP SRV URL may end in "/".
  const name = protocol === "http" ? rest.replace(/\/$/, "") : rest;
  const config: UpstreamConfig = {
    url,
    discovery: "srv",
    address: { transport: "tcp", hostname: name, port: 0 },
    tls,
    authority: name,
    weight,
  };
  const example = protocol === "http"
    ? "_http._tcp.users.default.svc.cluster.local"
    : "_redis._tcp.redis.default.svc.cluster.local";
  const problem = /[/?#]/.test(name)
    ? "an SRV URL has no path: it names the SRV records, whose targets are the endpoints"
    : /:\d*$/.test(name)
    ? "an SRV URL has no port: each SRV record gives its endpoint's port"
    : !SRV_NAME.test(name)
    ? `the name is not an SRV name (use _service._proto.name, such as ${example})`
    : undefined;
  return problem === undefined
    ? { protocol, config }
    : { protocol, config, problem };
}

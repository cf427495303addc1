/**
 * The header keys of a route file (request_headers, response_headers,
 * rewrite_redirects): names checked against what legate manages itself,
 * values kept as templates so that `${file:...}` parts can follow their
 * files.
 *
 * Part of validation: it reads one parsed route file and reports through
 * the caller; it knows nothing of other files.
 * @module
 */
import { formatKeyPath } from "./errors.ts";
import {
  type ReferenceSource,
  type TemplatePart,
  templateParts,
} from "./interpolate.ts";
import type { Report } from "./resilience.ts";
import type { RouteFile } from "./schema.ts";
import type { HeaderRulesConfig, ServiceConfig } from "./service.ts";

/** An HTTP token (RFC 9110): what a header name is made of. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Headers that describe one connection or the message's framing: the HTTP
 * code sets them, and a rule that changed them would break the exchange.
 */
const FRAMING = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
]);

/** Headers legate sets on each try or response, which rules never touch. */
const MANAGED: Record<"request" | "response", ReadonlySet<string>> = {
  request: new Set(["traceparent", "tracestate", "x-request-id"]),
  response: new Set(["x-request-id"]),
};

/** The header keys of a service. */
type HeaderKeys = Pick<
  ServiceConfig,
  "requestHeaders" | "responseHeaders" | "rewriteRedirects"
>;

/**
 * Checks the header rules and builds them. `templates` holds, by key path,
 * the values as written where they hold `${file:...}`.
 */
export function buildHeaderRules(
  route: RouteFile,
  templates: Readonly<Record<string, string>>,
  references: ReferenceSource,
  report: Report,
): HeaderKeys {
  const build = (
    key: "request_headers" | "response_headers",
  ): HeaderRulesConfig | null => {
    const rules = route[key];
    if (rules === undefined) return null;
    const direction = key === "request_headers" ? "request" : "response";
    const seen = new Map<string, string>();
    const checkName = (
      path: readonly PropertyKey[],
      written: string,
      operation: "set" | "add" | "remove",
    ): string | null => {
      const name = written.toLowerCase();
      const problem = !HEADER_NAME.test(written)
        ? `"${written}" is not a header name (use letters, digits and !#$%&'*+.^_\`|~-)`
        : FRAMING.has(name) || name.startsWith("proxy-")
        ? `"${written}" belongs to the connection, not to the message: legate manages it`
        : MANAGED[direction].has(name)
        ? `"${written}" is set by legate on every ${direction} (tracing and request IDs): rules cannot change it`
        : direction === "request" && name === "host" && operation !== "set"
        ? `"${written}" can only be set (to send another Host than the upstream's authority)`
        : seen.has(name)
        ? `"${written}" is also in ${
          seen.get(name)
        }: name each header in one place`
        : null;
      if (problem !== null) {
        report(path, problem);
        return null;
      }
      seen.set(name, formatKeyPath([key, operation]));
      return name;
    };
    const values = (operation: "set" | "add") =>
      Object.entries(rules[operation] ?? {}).flatMap(([written, value]) => {
        const path = [key, operation, written];
        const name = checkName(path, written, operation);
        if (name === null) return [];
        const template = templates[formatKeyPath(path)];
        const parts: TemplatePart[] = template === undefined
          ? [value]
          : templateParts(template, references);
        return [[name, parts] as const];
      });
    const remove = (rules.remove ?? []).flatMap((written, index) => {
      const name = checkName([key, "remove", index], written, "remove");
      return name === null ? [] : [name];
    });
    return { remove, set: values("set"), add: values("add") };
  };
  return {
    requestHeaders: build("request_headers"),
    responseHeaders: build("response_headers"),
    rewriteRedirects: route.rewrite_redirects ?? true,
  };
}

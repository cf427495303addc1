/**
 * The admin listener's routes: the status page (`/`), `/healthz`, `/readyz`,
 * `/metrics`, `/routes`, `/upstreams`, `/config/errors`, `/status` and
 * `POST /reload`. It renders what the lifecycle reports and knows nothing of
 * how that state is kept.
 *
 * A web page in the operator's browser can reach a loopback listener too, so
 * every request must name the admin host by address (no DNS rebinding), and
 * writes must come from the admin API's own origin (no cross-site requests).
 * @module
 */

import type { MetricFamily } from "../metrics.ts";
import { STATUS_PAGE, STATUS_PAGE_CSP } from "./status_page.ts";

/** What the admin API reports on and acts upon. */
export interface AdminState {
  /** Whether legate wants traffic: routes loaded, listeners open, not shutting down. */
  ready(): boolean;
  /** The effective routes, as JSON, secrets masked. */
  routes(): unknown;
  /** Every service's endpoints and their state, as JSON. */
  upstreams(): unknown;
  /** The last reload's outcome and its errors, as JSON. */
  configErrors(): unknown;
  /** Reloads the routes; `ok` is false when they were invalid or could not be applied. */
  reload(): Promise<{ ok: boolean; result: unknown }>;
  /** Prometheus text exposition of legate's metrics. */
  metrics(): string;
  /** legate's version, when it started and its uptime, as JSON. */
  status(): unknown;
}

const PATHS =
  "/ (status page), /healthz, /readyz, /metrics, /routes, /upstreams, /config/errors, /status, POST /reload";

/**
 * Makes the admin listener's handler. Requests that {@linkcode adminRefusal}
 * refuses get `403` and nothing else happens.
 *
 * @example Serves what the state reports
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAdminHandler } from "./admin.ts";
 * const handler = createAdminHandler({
 *   ready: () => true,
 *   routes: () => ({ listeners: [] }),
 *   upstreams: () => ({ services: [] }),
 *   configErrors: () => ({ errors: [] }),
 *   reload: () => Promise.resolve({ ok: true, result: {} }),
 *   metrics: () => "",
 *   status: () => ({ version: "0.1.0" }),
 * });
 * // legate listens on 127.0.0.1:9901 by default; here any free port.
 * await using server = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   handler,
 * );
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/readyz`);
 * assert.equal(response.status, 200);
 * assert.equal(await response.text(), "ready\n");
 * ```
 *
 * @example Refuses a reload that another site's page sends
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAdminHandler } from "./admin.ts";
 * let reloads = 0;
 * const handler = createAdminHandler({
 *   ready: () => true,
 *   routes: () => ({ listeners: [] }),
 *   upstreams: () => ({ services: [] }),
 *   configErrors: () => ({ errors: [] }),
 *   reload: () => Promise.resolve({ ok: true, result: { reloads: ++reloads } }),
 *   metrics: () => "",
 *   status: () => ({ version: "0.1.0" }),
 * });
 * const response = await handler(
 *   new Request("http://127.0.0.1:9901/reload", {
 *     method: "POST",
 *     headers: { origin: "http://evil.example" },
 *   }),
 * );
 * assert.equal(response.status, 403);
 * assert.equal(reloads, 0);
 * ```
 */
export function createAdminHandler(
  state: AdminState,
): (request: Request) => Promise<Response> | Response {
  return async (request) => {
    const refusal = adminRefusal(request);
    if (refusal !== undefined) return text(403, `forbidden: ${refusal}\n`);
    const { pathname } = new URL(request.url);
    const route = `${
      request.method === "HEAD" ? "GET" : request.method
    } ${pathname}`;
    switch (route) {
      case "GET /healthz":
        return text(200, "ok\n");
      case "GET /readyz":
        return state.ready()
          ? text(200, "ready\n")
          : text(503, "not ready: starting or shutting down\n");
      case "GET /metrics":
        return new Response(state.metrics(), {
          headers: {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
          },
        });
      case "GET /routes":
        return json(200, state.routes());
      case "GET /upstreams":
        return json(200, state.upstreams());
      case "GET /config/errors":
        return json(200, state.configErrors());
      case "GET /status":
        return json(200, state.status());
      case "GET /":
        return statusPage();
      case "POST /reload": {
        const { ok, result } = await state.reload();
        return json(ok ? 200 : 422, result);
      }
    }
    if (
      [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/routes",
        "/upstreams",
        "/config/errors",
        "/status",
        "/reload",
      ].includes(pathname)
    ) {
      return text(405, `method not allowed: the admin API has ${PATHS}\n`);
    }
    return text(404, `not found: the admin API has ${PATHS}\n`);
  };
}

/**
 * Why the admin API refuses `request`, or `undefined` when it serves it.
 *
 * - Every host the request names must be an IP address or localhost
 *   ({@linkcode isAdminHost}): a page whose DNS name its owner points at
 *   127.0.0.1 would otherwise read the admin API as its own origin. On a
 *   Unix socket, which browsers cannot reach, any host will do.
 * - A request that is not GET or HEAD is refused when `Sec-Fetch-Site` says
 *   `cross-site`, or when its `Origin` names another host and port than its
 *   Host: another site's page could otherwise trigger a reload. Clients that
 *   are not browsers, such as curl, send no `Origin` and pass.
 *
 * @example DNS rebinding and cross-site writes
 * ```ts
 * import assert from "node:assert/strict";
 * import { adminRefusal } from "./admin.ts";
 * const admin = "http://127.0.0.1:9901";
 * assert.equal(adminRefusal(new Request(`${admin}/routes`)), undefined);
 * assert.match(
 *   adminRefusal(
 *     new Request(`${admin}/routes`, { headers: { host: "evil.example" } }),
 *   )!,
 *   /^Host "evil\.example" is not an IP address/,
 * );
 * const reload = (origin: string) =>
 *   adminRefusal(
 *     new Request(`${admin}/reload`, { method: "POST", headers: { origin } }),
 *   );
 * assert.equal(reload(admin), undefined);
 * assert.match(reload("http://evil.example")!, /^cross-site POST/);
 * ```
 */
export function adminRefusal(request: Request): string | undefined {
  // Deno builds the URL from the client's Host, which may not parse (`a b`).
  const url = URL.parse(request.url);
  if (url === null) {
    return `the request's host ${
      JSON.stringify(request.headers.get("host") ?? "")
    } is not a host name or address`;
  }
  // A Unix socket is out of any browser's reach, so any Host is fine there
  // (`curl --unix-socket PATH http://legate/`); Deno marks it in the URL.
  const unix = url.protocol === "http+unix:";
  // Deno writes the Host header, or HTTP/2's :authority, into the URL; with
  // neither (HTTP/1.0) it makes up `localhost:PORT`.
  const urlHost = unix ? undefined : url.host;
  const host = request.headers.get("host") || urlHost;
  // Both: in absolute form (`POST http://name/reload`) they differ.
  for (const named of new Set([host, urlHost])) {
    if (!unix && named !== undefined && !isAdminHost(named)) {
      const quoted = JSON.stringify(named);
      return `Host ${quoted} is not an IP address, localhost or *.localhost: the admin API answers no other names, against DNS rebinding`;
    }
  }
  if (request.method === "GET" || request.method === "HEAD") return undefined;
  const site = request.headers.get("sec-fetch-site");
  if (site?.toLowerCase() === "cross-site") {
    return `cross-site ${request.method}: Sec-Fetch-Site is "cross-site"`;
  }
  const origin = request.headers.get("origin");
  if (origin !== null && !isOriginOf(origin, host)) {
    const quoted = JSON.stringify(origin);
    const self = host === undefined ? "this host" : JSON.stringify(host);
    return `cross-site ${request.method}: Origin ${quoted} is not ${self}`;
  }
  return undefined;
}

const IPV4_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const ADMIN_HOST = new RegExp(
  `^(?:(?<ipv4>${IPV4_OCTET}(?:\\.${IPV4_OCTET}){3})` +
    "|(?<ipv6>\\[[0-9a-f:.]+\\])" +
    "|(?<localhost>(?:[a-z0-9_-]+\\.)*localhost))" +
    "(?::(?<port>[0-9]{1,5}))?$",
  "i",
);

/**
 * Whether a Host value may reach the admin API: an IPv4 address, an IPv6
 * address in brackets, `localhost` or a name ending in `.localhost` (which
 * browsers resolve to loopback themselves), each with an optional port. Any
 * other name could be resolved by DNS to 127.0.0.1 for a hostile page.
 *
 * @example Addresses and localhost, not DNS names
 * ```ts
 * import assert from "node:assert/strict";
 * import { isAdminHost } from "./admin.ts";
 * const allowed = ["127.0.0.1:9901", "10.1.2.3", "[::1]:9901", "localhost"];
 * for (const host of [...allowed, "admin.localhost:9901"]) {
 *   assert.ok(isAdminHost(host), host);
 * }
 * const names = ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io"];
 * for (const host of [...names, "[::1", "localhost:99999", ""]) {
 *   assert.ok(!isAdminHost(host), host);
 * }
 * ```
 */
export function isAdminHost(host: string): boolean {
  const groups = ADMIN_HOST.exec(host)?.groups;
  if (groups === undefined) return false;
  if (groups.port !== undefined && Number(groups.port) > 65535) return false;
  return groups.ipv6 === undefined || URL.canParse(`http://${groups.ipv6}/`);
}

/** Whether `origin` (scheme://host[:port]) is the same host and port as `host`. */
function isOriginOf(origin: string, host: string | undefined): boolean {
  const from = URL.parse(origin);
  if (host === undefined || from === null) return false; // "null", or garbage
  if (from.protocol !== "http:" && from.protocol !== "https:") return false;
  // Parsed with the origin's scheme, so that a default port compares equal.
  return URL.parse(`${from.protocol}//${host}`)?.host === from.host;
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** The status page, which may run its own script and fetch from this origin only. */
function statusPage(): Response {
  return new Response(STATUS_PAGE, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": STATUS_PAGE_CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    },
  });
}

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * Renders metric families in the Prometheus text exposition format
 * (version 0.0.4): counters and gauges as samples, histograms as cumulative
 * `_bucket` lines with `le`, then `_sum` and `_count`.
 *
 * @example A gauge with a label, its value escaped
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderMetrics } from "./admin.ts";
 * const text = renderMetrics([{
 *   name: "legate_services",
 *   help: "Services routed.",
 *   type: "gauge",
 *   samples: [{ labels: { dir: 'routes "a"' }, value: 3 }],
 * }]);
 * assert.equal(
 *   text,
 *   "# HELP legate_services Services routed.\n" +
 *     "# TYPE legate_services gauge\n" +
 *     'legate_services{dir="routes \\"a\\""} 3\n',
 * );
 * ```
 *
 * @example A histogram
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderMetrics } from "./admin.ts";
 * const text = renderMetrics([{
 *   name: "seconds",
 *   help: "Latency.",
 *   type: "histogram",
 *   bounds: [0.1, 1],
 *   samples: [{ labels: { service: "users" }, cumulative: [0, 1], sum: 0.5, count: 1 }],
 * }]);
 * assert.equal(
 *   text,
 *   "# HELP seconds Latency.\n# TYPE seconds histogram\n" +
 *     'seconds_bucket{service="users",le="0.1"} 0\n' +
 *     'seconds_bucket{service="users",le="1"} 1\n' +
 *     'seconds_bucket{service="users",le="+Inf"} 1\n' +
 *     'seconds_sum{service="users"} 0.5\n' +
 *     'seconds_count{service="users"} 1\n',
 * );
 * ```
 */
export function renderMetrics(metrics: readonly MetricFamily[]): string {
  let out = "";
  for (const metric of metrics) {
    out +=
      `# HELP ${metric.name} ${metric.help}\n# TYPE ${metric.name} ${metric.type}\n`;
    if (metric.type !== "histogram") {
      for (const { labels, value } of metric.samples) {
        out += `${metric.name}${labelSet(labels)} ${value}\n`;
      }
      continue;
    }
    for (const { labels, cumulative, sum, count } of metric.samples) {
      metric.bounds.forEach((bound, i) => {
        out += `${metric.name}_bucket${
          labelSet({ ...labels, le: String(bound) })
        } ${cumulative[i]}\n`;
      });
      out += `${metric.name}_bucket${
        labelSet({ ...labels, le: "+Inf" })
      } ${count}\n`;
      out += `${metric.name}_sum${labelSet(labels)} ${sum}\n`;
      out += `${metric.name}_count${labelSet(labels)} ${count}\n`;
    }
  }
  return out;
}

function labelSet(labels: Readonly<Record<string, string>>): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  return `{${
    entries.map(([k, v]) =>
      `${k}="${v.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`)}"`
    ).join(",")
  }}`;
}

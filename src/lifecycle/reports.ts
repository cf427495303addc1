/**
 * What legate tells about itself: the start-up summary, the admin API's
 * `/routes` and `/upstreams` documents, and the `/metrics` families. Values
 * from secret references are shown as written, never resolved.
 *
 * Reports read state; they never change it.
 * @module
 */
import { formatListenAddress } from "../address.ts";
import { formatDuration } from "../config/duration.ts";
import type { ListenerPlan } from "../config/plan.ts";
import {
  type HeaderRulesConfig,
  type ServiceConfig,
  shownValue,
} from "../config/service.ts";
import type { Logger } from "../log.ts";
import type { MetricFamily } from "../metrics.ts";
import type { RunningListener } from "../server/listeners.ts";
import type { Cluster } from "../upstream/cluster.ts";
import type { Endpoint } from "../upstream/endpoint.ts";

/** A listener as reports see it. */
export interface ReportedListener {
  /** What it runs. */
  readonly plan: ListenerPlan;
  /** The bound listener. */
  readonly listener: RunningListener;
}

/** The effective routes, defaults filled in: `GET /routes`. */
export function routesReport(
  routesDir: string,
  listeners: readonly ReportedListener[],
): unknown {
  return {
    routes_dir: routesDir,
    listeners: listeners.map(({ plan, listener }) => ({
      address: formatAddr(listener.addr),
      protocol: plan.protocol,
      services: plan.services.map(describeService),
    })),
  };
}

/** Every service's endpoints and their state: `GET /upstreams`. */
export function upstreamsReport(clusters: readonly Cluster[]): unknown {
  const now = Date.now();
  return {
    services: clusters.map((cluster) => ({
      name: cluster.name,
      balance: cluster.settings.balance,
      requests_in_flight: cluster.active,
      endpoints: cluster.endpoints.map((e) => ({
        address: e.location,
        url: e.url,
        source: e.source,
        weight: e.weight,
        ...(e.source === "srv" ? { priority: e.priority } : {}),
        healthy: e.healthy,
        ejected_until: e.ejectedAt(now)
          ? new Date(e.ejectedUntil).toISOString()
          : null,
        ejections: e.ejections,
        in_flight: e.inFlight,
        requests: e.requests,
        failures: e.failures,
      })),
    })),
  };
}

/** The upstream metric families: health, load, retries, ejections, overflow. */
export function upstreamMetrics(
  clusters: readonly Cluster[],
): MetricFamily[] {
  const now = Date.now();
  const perEndpoint = (value: (endpoint: Endpoint) => number) =>
    clusters.flatMap((cluster) =>
      cluster.endpoints.map((endpoint) => ({
        labels: { service: cluster.name, endpoint: endpoint.location },
        value: value(endpoint),
      }))
    );
  return [
    {
      name: "legate_upstream_healthy",
      help:
        "Whether an endpoint takes traffic (1): healthy by its checks and not ejected.",
      type: "gauge",
      samples: perEndpoint((e) => e.healthy && !e.ejectedAt(now) ? 1 : 0),
    },
    {
      name: "legate_upstream_requests_in_flight",
      help: "Requests (HTTP) or connections (TCP) in flight, by endpoint.",
      type: "gauge",
      samples: perEndpoint((e) => e.inFlight),
    },
    {
      name: "legate_upstream_ejections_total",
      help: "Outlier ejections of an endpoint since it appeared.",
      type: "counter",
      samples: perEndpoint((e) => e.ejections),
    },
    {
      name: "legate_upstream_retries_total",
      help: "Retries, by service and reason.",
      type: "counter",
      samples: clusters.flatMap((cluster) =>
        [...cluster.counters.retries].map(([reason, value]) => ({
          labels: { service: cluster.name, reason },
          value,
        }))
      ),
    },
    {
      name: "legate_upstream_overflow_total",
      help:
        "Requests or connections turned away by a limit (or retries by the budget), by service and limit.",
      type: "counter",
      samples: clusters.flatMap((cluster) =>
        [...cluster.counters.overflow].map(([limit, value]) => ({
          labels: { service: cluster.name, limit },
          value,
        }))
      ),
    },
  ];
}

/** Logs what legate serves, as it starts: readable lines, or one JSON event per listener. */
export function logStartup(
  log: Logger,
  routesDir: string,
  services: number,
  listeners: readonly ReportedListener[],
  admin: Deno.Addr,
): void {
  if (log.json) {
    for (const { plan, listener } of listeners) {
      log.info("listening", {
        listener: formatAddr(listener.addr),
        protocol: plan.protocol,
        services: plan.services.map((s) => ({
          name: shownValue(s, "name", s.name),
          file: s.file,
          ...(s.protocol === "http"
            ? {
              host: shownHost(s),
              path_prefix: shownValue(
                s,
                "match.path_prefix",
                s.match.pathPrefix,
              ),
            }
            : {}),
          upstreams: s.upstreams.map((_, i) => shownUpstream(s, i)),
        })),
      });
    }
    log.info("started", {
      services,
      listeners: listeners.length,
      admin: formatAddr(admin),
      routes: routesDir,
    });
    return;
  }
  const lines = [
    `legate serving ${services} service(s) from ${routesDir}; admin on ${
      formatAddr(admin)
    }`,
  ];
  for (const { plan, listener } of listeners) {
    lines.push(`  ${plan.protocol.padEnd(4)} ${formatAddr(listener.addr)}`);
    for (const s of plan.services) {
      const match = s.protocol === "http"
        ? ` host ${shownHost(s)} path ${
          shownValue(s, "match.path_prefix", s.match.pathPrefix)
        }${s.stripPrefix ? " (stripped)" : ""}`
        : "";
      const upstreams = s.upstreams.map((_, i) => shownUpstream(s, i));
      lines.push(
        `    ${shownValue(s, "name", s.name)}${match} -> ${
          upstreams.join(", ")
        }`,
      );
    }
  }
  log.text(lines);
}

/** A bound address as route files write it. */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport === "unix" || addr.transport === "unixpacket") {
    return `unix:${addr.path}`;
  }
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return formatListenAddress({
      transport: "tcp",
      hostname: addr.hostname,
      port: addr.port,
    });
  }
  return String(addr.transport);
}

/** An upstream URL as it may be shown: secret references stay as written. */
function shownUpstream(service: ServiceConfig, index: number): string {
  const key = `upstreams[${index}]`;
  const url = service.upstreams[index]!.url;
  return shownValue(service, key, shownValue(service, `${key}.url`, url));
}

/** `match.host` as it may be shown, `*` for any host. */
function shownHost(service: ServiceConfig): string {
  return service.match.host === undefined
    ? "*"
    : shownValue(service, "match.host", service.match.host);
}

/** The header names rules touch, without their values. */
function headerNames(rules: HeaderRulesConfig | null): unknown {
  return rules === null ? null : {
    set: rules.set.map(([name]) => name),
    add: rules.add.map(([name]) => name),
    remove: rules.remove,
  };
}

/** A service in route-file words, every default filled in. */
function describeService(service: ServiceConfig): unknown {
  const http = service.protocol === "http";
  const { healthCheck, outlier, retries, limits, hashOn } = service;
  return {
    name: shownValue(service, "name", service.name),
    file: service.file,
    protocol: service.protocol,
    listen: shownValue(
      service,
      "listen",
      formatListenAddress(service.listen),
    ),
    upstreams: service.upstreams.map((u, i) => ({
      url: shownUpstream(service, i),
      weight: u.weight,
      discovery: u.discovery,
    })),
    ...(http
      ? {
        match: {
          host: service.match.host === undefined
            ? null
            : shownValue(service, "match.host", service.match.host),
          path_prefix: shownValue(
            service,
            "match.path_prefix",
            service.match.pathPrefix,
          ),
        },
        strip_prefix: service.stripPrefix,
        preserve_host: service.preserveHost,
        // Names only: a value may hold a credential.
        request_headers: headerNames(service.requestHeaders),
        response_headers: headerNames(service.responseHeaders),
        rewrite_redirects: service.rewriteRedirects,
      }
      : {}),
    timeouts: {
      connect: formatDuration(service.timeouts.connect),
      ...(http ? { request: formatDuration(service.timeouts.request) } : {}),
      idle: formatDuration(service.timeouts.idle),
    },
    balance: service.balance,
    hash_on: hashOn === null
      ? null
      : hashOn.kind === "header" || hashOn.kind === "cookie"
      ? `${hashOn.kind}:${hashOn.name}`
      : hashOn.kind,
    health_check: healthCheck === null ? null : {
      ...(http
        ? {
          path: healthCheck.path,
          expect_status: healthCheck.expectStatus.map(([low, high]) =>
            low === high ? `${low}` : `${low}-${high}`
          ),
        }
        : { send: healthCheck.send, expect: healthCheck.expect }),
      interval: formatDuration(healthCheck.interval),
      timeout: formatDuration(healthCheck.timeout),
      healthy_threshold: healthCheck.healthyThreshold,
      unhealthy_threshold: healthCheck.unhealthyThreshold,
    },
    outlier: {
      consecutive_failures: outlier.consecutiveFailures,
      base_ejection: formatDuration(outlier.baseEjection),
      max_ejection_percent: outlier.maxEjectionPercent,
    },
    retries: {
      attempts: retries.attempts,
      on: retries.on,
      per_try_timeout: retries.perTryTimeout === null
        ? null
        : formatDuration(retries.perTryTimeout),
      budget: `${retries.budgetPercent}%`,
      retry_non_idempotent: retries.retryNonIdempotent,
    },
    limits: {
      max_connections: limits.maxConnections,
      max_pending: limits.maxPending,
      max_requests: limits.maxRequests,
    },
    dns_refresh: formatDuration(service.dnsRefresh),
  };
}

/**
 * The resilience keys of a route file (balance, hash_on, health_check,
 * outlier, retries, limits, dns_refresh): checked against each other and
 * against the service's protocol, with every default filled in.
 *
 * Part of validation: it reads one parsed route file and reports through
 * the caller; it knows nothing of other files.
 * @module
 */
import { formatDuration, parseDuration } from "./duration.ts";
import { describeValue, formatKeyPath, valueAt } from "./errors.ts";
import type { RouteFile } from "./schema.ts";
import {
  DEFAULT_RESILIENCE,
  type HashOnConfig,
  type HealthCheckConfig,
  type RetriesConfig,
  type RetryOn,
  type ServiceConfig,
} from "./service.ts";

/** Records an error at the value of `path`. */
export type Report = (path: readonly PropertyKey[], detail: string) => void;

/** The resilience keys: how endpoints are chosen, checked and spared. */
type Resilience = Pick<
  ServiceConfig,
  | "balance"
  | "hashOn"
  | "healthCheck"
  | "outlier"
  | "retries"
  | "limits"
  | "dnsRefresh"
>;

/** The smallest `dns_refresh`: resolving more often only loads the DNS server. */
const MIN_DNS_REFRESH = 100;

/**
 * Checks the resilience keys against each other and the protocol, and fills
 * every default: nothing downstream defaults again.
 */
export function buildResilience(
  route: RouteFile,
  protocol: "http" | "tcp",
  shown: Readonly<Record<string, string>>,
  report: Report,
): Resilience {
  const written = (path: readonly PropertyKey[], value: string): string =>
    shown[formatKeyPath(path)] ?? value;
  const duration: DurationAt = (path, fallback, example = fallback) => {
    const text = valueAt(route, path);
    if (typeof text !== "string") return fallback;
    const ms = parseDuration(text);
    if (ms <= 0) {
      report(
        path,
        `"${
          written(path, text)
        }" is too short: use a duration above 0, such as ${
          formatDuration(example)
        }`,
      );
    }
    return ms;
  };

  const defaults = DEFAULT_RESILIENCE;
  const balance = route.balance ?? defaults.balance;
  const hashOn = buildHashOn(route, balance, protocol, written, report);
  const healthCheck = buildHealthCheck(
    route.health_check,
    protocol,
    duration,
    written,
    report,
  );
  const outlier = route.outlier ?? {};
  const retries = buildRetries(route.retries, protocol, duration, report);
  const limits = route.limits ?? {};
  const dnsRefresh = duration(["dns_refresh"], defaults.dnsRefresh);
  if (dnsRefresh > 0 && dnsRefresh < MIN_DNS_REFRESH) {
    report(
      ["dns_refresh"],
      `"${
        written(["dns_refresh"], route.dns_refresh!)
      }" is too short: use at least ${
        formatDuration(MIN_DNS_REFRESH)
      } (resolving more often only loads the DNS server)`,
    );
  }
  return {
    balance,
    hashOn,
    healthCheck,
    outlier: {
      consecutiveFailures: outlier.consecutive_failures ??
        defaults.outlier.consecutiveFailures,
      baseEjection: duration(
        ["outlier", "base_ejection"],
        defaults.outlier.baseEjection,
      ),
      maxEjectionPercent: outlier.max_ejection_percent ??
        defaults.outlier.maxEjectionPercent,
    },
    retries,
    limits: {
      maxConnections: limits.max_connections ??
        defaults.limits.maxConnections,
      maxPending: limits.max_pending ?? defaults.limits.maxPending,
      maxRequests: limits.max_requests ?? defaults.limits.maxRequests,
    },
    dnsRefresh,
  };
}

/** What ring_hash and maglev hash; null for the other policies. */
function buildHashOn(
  route: RouteFile,
  balance: ServiceConfig["balance"],
  protocol: "http" | "tcp",
  written: (path: readonly PropertyKey[], value: string) => string,
  report: Report,
): HashOnConfig | null {
  const text = route.hash_on;
  if (balance !== "ring_hash" && balance !== "maglev") {
    if (text !== undefined) {
      report(
        ["hash_on"],
        `applies to balance ring_hash or maglev only; balance is ${balance}${
          route.balance === undefined ? " (the default)" : ""
        }`,
      );
    }
    return null;
  }
  if (text === undefined) return DEFAULT_RESILIENCE.hashOn;
  const hashOn = parseHashOn(text);
  if (protocol === "tcp" && hashOn.kind !== "source_ip") {
    report(
      ["hash_on"],
      `"${
        written(["hash_on"], text)
      }" does not apply to TCP services: they hash source_ip only`,
    );
  }
  return hashOn;
}

/** Splits a `hash_on` the schema accepted; header names are lowercased. */
function parseHashOn(text: string): HashOnConfig {
  const colon = text.indexOf(":");
  if (colon < 0) return { kind: text === "path" ? "path" : "source_ip" };
  const name = text.slice(colon + 1);
  return text.startsWith("header:")
    ? { kind: "header", name: name.toLowerCase() }
    : { kind: "cookie", name };
}

/**
 * The duration at `path` in milliseconds, or `fallback` when not given; one
 * of 0 is an error that suggests `example`.
 */
type DurationAt = (
  path: readonly PropertyKey[],
  fallback: number,
  example?: number,
) => number;

const HTTP_CHECK_KEYS = ["path", "expect_status"] as const;
const TCP_CHECK_KEYS = ["send", "expect"] as const;

/** Active health checks, or null when the route file asks for none. */
function buildHealthCheck(
  check: RouteFile["health_check"],
  protocol: "http" | "tcp",
  duration: DurationAt,
  written: (path: readonly PropertyKey[], value: string) => string,
  report: Report,
): HealthCheckConfig | null {
  if (check === undefined) return null;
  const defaults = DEFAULT_RESILIENCE.healthCheck;
  for (const key of protocol === "http" ? TCP_CHECK_KEYS : HTTP_CHECK_KEYS) {
    if (check[key] === undefined) continue;
    report(
      ["health_check", key],
      protocol === "http"
        ? "applies to TCP services only; an HTTP check GETs health_check.path and checks the status against health_check.expect_status"
        : "applies to HTTP services only; a TCP check connects, then sends health_check.send and reads health_check.expect when given",
    );
  }
  const interval = duration(["health_check", "interval"], defaults.interval);
  const timeout = duration(["health_check", "timeout"], defaults.timeout);
  if (interval > 0 && timeout > 0 && timeout >= interval) {
    if (check.timeout !== undefined) {
      report(
        ["health_check", "timeout"],
        `"${
          written(["health_check", "timeout"], check.timeout)
        }" must be less than health_check.interval (${
          formatDuration(interval)
        }${
          check.interval === undefined ? ", the default" : ""
        }): a check ends before the next one starts`,
      );
    } else {
      report(
        ["health_check", "interval"],
        `"${
          written(["health_check", "interval"], check.interval!)
        }" must be more than health_check.timeout (${
          formatDuration(timeout)
        }, the default): a check ends before the next one starts (or set a shorter timeout)`,
      );
    }
  }
  const http = protocol === "http";
  return {
    path: http ? check.path ?? defaults.path : null,
    send: http ? null : check.send ?? null,
    expect: http ? null : check.expect ?? null,
    interval,
    timeout,
    healthyThreshold: check.healthy_threshold ?? defaults.healthyThreshold,
    unhealthyThreshold: check.unhealthy_threshold ??
      defaults.unhealthyThreshold,
    expectStatus: !http
      ? []
      : check.expect_status === undefined
      ? defaults.expectStatus
      : statusRanges(check.expect_status, report),
  };
}

/** `200`, `"200-399"` or a list of them as inclusive ranges. */
function statusRanges(
  spec: NonNullable<NonNullable<RouteFile["health_check"]>["expect_status"]>,
  report: Report,
): [number, number][] {
  const entries = Array.isArray(spec) ? spec : [spec];
  return entries.map((entry, index) => {
    if (typeof entry === "number") return [entry, entry];
    const [low, high = low] = entry.split("-").map(Number) as [
      number,
      number?,
    ];
    if (low > high) {
      report(
        Array.isArray(spec)
          ? ["health_check", "expect_status", index]
          : ["health_check", "expect_status"],
        `"${entry}" is not a range: its first status is above its last (write ${high}-${low})`,
      );
    }
    return [low, high];
  });
}

const HTTP_RETRY_KEYS = [
  "per_try_timeout",
  "budget",
  "retry_non_idempotent",
] as const;

/** Retries; a TCP service retries only connections that failed to open. */
function buildRetries(
  retries: RouteFile["retries"],
  protocol: "http" | "tcp",
  duration: DurationAt,
  report: Report,
): RetriesConfig {
  const defaults = DEFAULT_RESILIENCE.retries;
  if (protocol === "tcp") {
    for (const key of HTTP_RETRY_KEYS) {
      if (retries?.[key] === undefined) continue;
      report(
        ["retries", key],
        "applies to HTTP services only; TCP services retry connections that failed to open (retries.attempts and retries.on: [connect_failure])",
      );
    }
    retries?.on?.forEach((on, index) => {
      if (on === "connect_failure") return;
      report(
        ["retries", "on", index],
        `${
          describeValue(on)
        } does not apply to TCP services: they retry connect_failure only (once bytes have flowed, a connection cannot be replayed)`,
      );
    });
  }
  const on: readonly RetryOn[] = retries?.on !== undefined
    ? [...new Set(retries.on)]
    : protocol === "tcp"
    ? ["connect_failure"]
    : defaults.on;
  const budget = retries?.budget;
  return {
    attempts: retries?.attempts ?? defaults.attempts,
    on,
    perTryTimeout: protocol === "tcp" || retries?.per_try_timeout === undefined
      ? defaults.perTryTimeout
      : duration(["retries", "per_try_timeout"], 0, 2_000),
    budgetPercent: budget === undefined
      ? defaults.budgetPercent
      : typeof budget === "number"
      ? budget
      : Number(budget.slice(0, -1)),
    retryNonIdempotent: retries?.retry_non_idempotent ??
      defaults.retryNonIdempotent,
  };
}

/**
 * Groups services by listen address into the desired state, and finds the
 * conflicts between files: duplicate names, two TCP services or TCP and HTTP on
 * one address, two HTTP services with the same match, overlapping binds.
 * @module
 */
import {
  addressesOverlap,
  formatListenAddress,
  type ListenAddress,
} from "../address.ts";
import { ConfigError, type SourcePosition } from "./errors.ts";
import {
  type CertificateFiles,
  type ServiceConfig,
  shownValue,
} from "./service.ts";

/** One listener and the services it carries. */
export interface ListenerPlan {
  /** `host:port` or `unix:/path`: the listener's identity across reloads. */
  readonly key: string;
  /** Where it listens. */
  readonly address: ListenAddress;
  /** What it speaks. */
  readonly protocol: "http" | "tcp";
  /** TLS on the listener (one certificate for all its services), or null. */
  readonly tls: CertificateFiles | null;
  /** `unix:` listeners: the socket file's permissions, or null to leave them as created. */
  readonly socketMode: number | null;
  /** Its services: exactly one for TCP, one or more for HTTP. */
  readonly services: readonly ServiceConfig[];
}

/** The desired state: every listener to run. */
export interface Plan {
  /** Listeners in the order their first service's file sorts. */
  readonly listeners: readonly ListenerPlan[];
}

/**
 * Plans listeners for `services`, or returns every conflict.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { planListeners } from "./plan.ts";
 * import { validateRouteFile } from "./validate.ts";
 * import { processReferences } from "./interpolate.ts";
 * const service = (file: string, text: string) =>
 *   validateRouteFile({ file, text }, processReferences).service!;
 * const { plan, errors } = planListeners([
 *   service("users.yaml", "listen: 127.0.0.1:15001\nupstreams: [http://users]\nmatch: { path_prefix: /users }\n"),
 *   service("orders.yaml", "listen: 127.0.0.1:15001\nupstreams: [http://orders]\nmatch: { path_prefix: /orders }\n"),
 *   service("redis.yaml", "listen: 127.0.0.1:15001\nupstreams: [tcp://redis:6379]\n"),
 * ]);
 * // Two HTTP services share one listener; the TCP service cannot join them.
 * assert.deepEqual(plan.listeners.map((l) => [l.key, l.services.length]), [["127.0.0.1:15001", 2]]);
 * assert.match(errors[0]!.message, /^redis\.yaml:1:9: listen: "127\.0\.0\.1:15001" is already the HTTP listener of "users"/);
 * ```
 */
export function planListeners(
  services: readonly ServiceConfig[],
): { plan: Plan; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const byName = new Map<string, ServiceConfig>();
  const byKey = new Map<string, ServiceConfig[]>();
  for (const service of services) {
    const twin = byName.get(service.name);
    if (twin) {
      errors.push(conflict(
        service.positions.name,
        service.file === twin.file ? "name" : "",
        `service name "${nameOf(service)}" is already used by ${twin.file}`,
      ));
      continue;
    }
    byName.set(service.name, service);
    const key = formatListenAddress(service.listen);
    const group = byKey.get(key) ?? [];
    const clash = group.find((other) => !canShare(other, service));
    if (clash) {
      const sameMatch = clash.protocol === "http" &&
        service.protocol === "http";
      errors.push(
        conflict(
          sameMatch ? service.positions.match : service.positions.listen,
          sameMatch ? "match" : "listen",
          shareProblem(clash, service),
        ),
      );
      continue;
    }
    const first = group[0];
    const disagreement = first && !clash
      ? listenerDisagreement(first, service)
      : undefined;
    if (disagreement) {
      errors.push(
        conflict(disagreement.position, disagreement.key, disagreement.detail),
      );
      continue;
    }
    const overlap = [...byKey.entries()].find(([otherKey, others]) =>
      otherKey !== key && addressesOverlap(others[0]!.listen, service.listen)
    );
    if (overlap) {
      errors.push(conflict(
        service.positions.listen,
        "listen",
        `"${listenOf(service)}" overlaps "${listenOf(overlap[1][0]!)}" of ${
          overlap[1][0]!.file
        }: one of them listens on every interface of the same port (use the same address, or another port)`,
      ));
      continue;
    }
    byKey.set(key, [...group, service]);
  }
  const listeners = [...byKey.entries()].map(([key, group]): ListenerPlan => ({
    key,
    address: group[0]!.listen,
    protocol: group[0]!.protocol,
    tls: group[0]!.tls,
    socketMode: group[0]!.socketMode,
    services: group,
  }));
  return { plan: { listeners }, errors };
}

function canShare(a: ServiceConfig, b: ServiceConfig): boolean {
  return a.protocol === "http" && b.protocol === "http" &&
    (a.match.host !== b.match.host ||
      a.match.pathPrefix !== b.match.pathPrefix);
}

/**
 * What two HTTP services on one address disagree on about the listener
 * itself: its certificate (Deno serves one certificate per listener, with no
 * choice by SNI) or its socket file's mode.
 */
function listenerDisagreement(
  existing: ServiceConfig,
  service: ServiceConfig,
): { position: SourcePosition; key: string; detail: string } | undefined {
  const key = listenOf(service);
  const name = nameOf(existing);
  const files = (tls: CertificateFiles | null) =>
    tls === null
      ? "no tls"
      : `tls cert "${tls.certFile}" and key "${tls.keyFile}"`;
  if (
    existing.tls?.certFile !== service.tls?.certFile ||
    existing.tls?.keyFile !== service.tls?.keyFile
  ) {
    return {
      position: service.tls ? service.positions.tls : service.positions.listen,
      key: service.tls ? "tls" : "listen",
      detail: `"${key}" is served with ${
        files(existing.tls)
      } by "${name}" in ${existing.file}, and this file gives ${
        files(service.tls)
      }: services sharing a listener share its certificate (Deno serves one certificate per listener and cannot choose one by SNI), so name the same files or use another port`,
    };
  }
  if (existing.socketMode !== service.socketMode) {
    const mode = (value: number | null) =>
      value === null ? "no mode" : `mode "0${value.toString(8)}"`;
    return {
      position: service.positions.listen,
      key: "mode",
      detail: `"${key}" is created with ${
        mode(existing.socketMode)
      } by "${name}" in ${existing.file}, and this file gives ${
        mode(service.socketMode)
      }: services sharing a socket give it the same mode`,
    };
  }
  return undefined;
}

function shareProblem(
  existing: ServiceConfig,
  service: ServiceConfig,
): string {
  const key = listenOf(service);
  const name = nameOf(existing);
  if (existing.protocol === "tcp" && service.protocol === "tcp") {
    return `"${key}" is already the listener of TCP service "${name}" in ${existing.file} (a TCP listener carries one service: use another port)`;
  }
  if (existing.protocol !== service.protocol) {
    return `"${key}" is already the ${existing.protocol.toUpperCase()} listener of "${name}" in ${existing.file} (HTTP and TCP services cannot share a listener: use another port)`;
  }
  const host = service.match.host === undefined
    ? "any host"
    : shownValue(service, "match.host", service.match.host);
  const prefix = shownValue(
    service,
    "match.path_prefix",
    service.match.pathPrefix,
  );
  return `${host} with path prefix ${prefix} on "${key}" is already routed to "${name}" in ${existing.file} (give one of them another match.host or match.path_prefix)`;
}

// Messages show values as written: a secret reference in a route file must
// not come out resolved in an error.
function nameOf(service: ServiceConfig): string {
  return shownValue(service, "name", service.name);
}

function listenOf(service: ServiceConfig): string {
  return shownValue(service, "listen", formatListenAddress(service.listen));
}

function conflict(
  position: SourcePosition,
  keyPath: string,
  detail: string,
): ConfigError {
  return new ConfigError(position, keyPath, detail);
}

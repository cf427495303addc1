/**
 * The build step: a validated service becomes what runs. Its cluster's
 * settings (endpoint sources, selection, health checks, outlier ejection,
 * retries, limits) and its route's settings (match, path and Host handling,
 * timeouts, hashing). With the rest of lifecycle, the only code outside
 * src/config/ that reads config types: servers and clusters see only what
 * this step gives them.
 * @module
 */
import type {
  HeaderRulesConfig,
  ServiceConfig,
  UpstreamConfig,
} from "../config/service.ts";
import type { HeaderRules } from "../server/header_rules.ts";
import type { HttpRoute } from "../server/http_proxy.ts";
import type { SecretFiles } from "./secret_files.ts";
import type { TemplatePart } from "../config/interpolate.ts";
import type { TcpRoute } from "../server/tcp_proxy.ts";
import type { ClusterSettings } from "../upstream/cluster.ts";
import type { UpstreamSource } from "../upstream/discovery.ts";

/**
 * The cluster settings of `service`.
 *
 * @example Defaults come from the route file's validation
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateRouteFile } from "../config/validate.ts";
 * import { processReferences } from "../config/interpolate.ts";
 * import { clusterSettings } from "./build.ts";
 * const { service } = validateRouteFile({
 *   file: "routes/users.yaml",
 *   text: "listen: 127.0.0.1:15001\nupstreams: [http://10.0.0.1:8080, http://users.internal]\n",
 * }, processReferences);
 * const settings = clusterSettings(service!);
 * assert.equal(settings.name, "users");
 * assert.deepEqual(settings.sources.map((s) => s.kind), ["static", "dns"]);
 * assert.equal(settings.balance, "round_robin");
 * ```
 */
export function clusterSettings(service: ServiceConfig): ClusterSettings {
  return {
    name: service.name,
    sources: service.upstreams.map(upstreamSource),
    balance: service.balance,
    healthCheck: service.healthCheck,
    outlier: service.outlier,
    retries: service.retries,
    limits: service.limits,
    dnsRefresh: service.dnsRefresh,
    // A request waits for an endpoint with room at most as long as a connect may take.
    pendingTimeout: service.timeouts.connect,
    upstreamTls: service.upstreamTls && {
      caCerts: service.upstreamTls.ca === null ? [] : [service.upstreamTls.ca],
      clientCertificate: service.upstreamTls.client && {
        cert: service.upstreamTls.client.cert,
        key: service.upstreamTls.client.key,
      },
      serverName: service.upstreamTls.serverName,
    },
  };
}

/** The route settings of an HTTP service; the listener adds its cluster. */
export function httpRouteSettings(
  service: ServiceConfig,
  secretFiles: SecretFiles,
): Omit<HttpRoute, "cluster"> {
  return {
    name: service.name,
    match: service.match,
    stripPrefix: service.stripPrefix,
    preserveHost: service.preserveHost,
    timeouts: {
      connect: service.timeouts.connect,
      request: service.retries.perTryTimeout === null
        ? service.timeouts.request
        : Math.min(service.retries.perTryTimeout, service.timeouts.request),
      idle: service.timeouts.idle,
    },
    hashOn: hashes(service) ? service.hashOn : null,
    requestHeaders: headerRules(service.requestHeaders, secretFiles, true),
    responseHeaders: headerRules(service.responseHeaders, secretFiles, false),
    rewriteRedirects: service.rewriteRedirects,
    webSocket: service.webSocket,
  };
}

/** The files that header values of `services` read. */
export function headerFiles(
  services: readonly ServiceConfig[],
): Set<string> {
  const files = new Set<string>();
  for (const service of services) {
    for (const rules of [service.requestHeaders, service.responseHeaders]) {
      for (const [, parts] of [...rules?.set ?? [], ...rules?.add ?? []]) {
        for (const part of parts) {
          if (typeof part !== "string") files.add(part.file);
        }
      }
    }
  }
  return files;
}

/**
 * Header rules as the pipeline applies them; a request's `host` rule
 * becomes its Host, which each try sets.
 */
function headerRules(
  config: HeaderRulesConfig | null,
  secretFiles: SecretFiles,
  request: boolean,
): HeaderRules | null {
  if (config === null) return null;
  const value = ([name, parts]: readonly [string, readonly TemplatePart[]]) =>
    [name, secretFiles.value(parts)] as const;
  const host = request
    ? config.set.find(([name]) => name === "host")
    : undefined;
  const set = config.set.filter((rule) => rule !== host).map(value);
  return {
    remove: new Set([...config.remove, ...set.map(([name]) => name)]),
    set,
    add: config.add.map(value),
    host: host === undefined ? null : value(host)[1],
  };
}

/** The route settings of a TCP service; the listener adds its cluster. */
export function tcpRouteSettings(
  service: ServiceConfig,
): Omit<TcpRoute, "cluster"> {
  return {
    name: service.name,
    timeouts: {
      connect: service.timeouts.connect,
      idle: service.timeouts.idle,
    },
    hashSourceIp: hashes(service),
  };
}

function hashes(service: ServiceConfig): boolean {
  return service.balance === "ring_hash" || service.balance === "maglev";
}

function upstreamSource(upstream: UpstreamConfig): UpstreamSource {
  const { url, address, tls, authority, weight } = upstream;
  if (address.transport === "unix" || upstream.discovery === "static") {
    return { kind: "static", url, address, tls, authority, weight };
  }
  if (upstream.discovery === "srv") {
    return { kind: "srv", url, name: address.hostname, tls, weight };
  }
  return {
    kind: "dns",
    url,
    hostname: address.hostname,
    port: address.port,
    tls,
    authority,
    weight,
  };
}

/**
 * One upstream endpoint and what legate knows of it: where it is, and its
 * state (health, ejection, requests in flight, counters). An endpoint is
 * identified by its key; the cluster keeps the same object for as long as
 * discovery and reloads keep that key, so its state survives both.
 * @module
 */
import type { UpstreamTlsOptions } from "../transport/connect.ts";
import type { DiscoveredEndpoint } from "./discovery.ts";
import type { Selectable } from "./selection.ts";

/** An upstream endpoint with its state. */
export class Endpoint implements Selectable {
  /** Identity across refreshes and reloads. */
  readonly key: string;
  /** The upstream URL it came from. */
  readonly url: string;
  /** How it was found. */
  readonly source: DiscoveredEndpoint["source"];
  /** Where to connect. */
  readonly address: DiscoveredEndpoint["address"];
  /** Whether to speak TLS. */
  readonly tls: boolean;
  /** The name TLS sends and verifies. */
  readonly serverName: string;
  /** The Host header an HTTP upstream gets. */
  readonly authority: string;
  /** Relative share of traffic; an SRV refresh may change it. */
  weight: number;
  /** SRV priority: only the lowest priority with a healthy endpoint is used. */
  priority: number;

  /**
   * The service's TLS settings (CA, client certificate, server name); a
   * reload replaces them, and new connections use them.
   */
  upstreamTls: UpstreamTlsOptions | null = null;

  /** Requests (or TCP connections) in flight now. */
  inFlight = 0;
  /** Requests (or TCP connections) sent to it since it appeared. */
  requests = 0;
  /** Failures counted against it since it appeared. */
  failures = 0;
  /** Failures in a row, for outlier ejection. */
  consecutiveFailures = 0;
  /** Until when it is ejected, in epoch milliseconds; 0 when it is not. */
  ejectedUntil = 0;
  /** How many times it was ejected: the next ejection lasts that much longer. */
  ejections = 0;
  /** The active health checks' verdict; true until checks say otherwise. */
  healthy = true;
  /** Whether its last attempt failed, so that recovering is logged once. */
  failing = false;

  /** Makes an endpoint from what discovery found. */
  constructor(found: DiscoveredEndpoint) {
    this.key = found.key;
    this.url = found.url;
    this.source = found.source;
    this.address = found.address;
    this.tls = found.tls;
    this.serverName = found.serverName;
    this.authority = found.authority;
    this.weight = found.weight;
    this.priority = found.priority;
  }

  /** Whether it is ejected at `now` (epoch milliseconds). */
  ejectedAt(now: number): boolean {
    return this.ejectedUntil > now;
  }

  /** The address as logs and the admin API show it: `ip:port` or `unix:/path`. */
  get location(): string {
    const { address } = this;
    return address.transport === "unix"
      ? `unix:${address.path}`
      : address.hostname.includes(":")
      ? `[${address.hostname}]:${address.port}`
      : `${address.hostname}:${address.port}`;
  }
}

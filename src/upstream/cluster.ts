/**
 * Clusters: one per service, holding its endpoints and their state, and
 * deciding which endpoint takes the next request or connection. A cluster
 * owns its service's discovery (DNS, SRV), active health checks, passive
 * outlier ejection, limits (circuit breaking) and retry budget.
 *
 * Clusters live in a registry keyed by service name, endpoints in a cluster
 * by key: a reload that keeps a service keeps its cluster, and one that keeps
 * an endpoint keeps its state. State changes (unreachable, ejected,
 * unhealthy, back) are logged once each, never per request.
 *
 * It knows nothing of route files or of HTTP; the build step turns a route
 * file into {@linkcode ClusterSettings}, and the request pipelines report
 * each attempt's outcome.
 * @module
 */
import type { Logger } from "../log.ts";
import type { UpstreamTlsOptions } from "../transport/connect.ts";
import { ProxyError } from "../transport/errors.ts";
import { type Cancel, schedule } from "../transport/timer_wheel.ts";
import type { DiscoveredEndpoint, UpstreamSource } from "./discovery.ts";
import { Endpoint } from "./endpoint.ts";
import {
  HealthChecker,
  type HealthCheckSettings,
  type Probe,
} from "./health.ts";
import type { SelectionPolicy, Selector } from "./selection.ts";
import { createSelector } from "./selectors.ts";

/** Passive outlier ejection. */
export interface OutlierSettings {
  /** Failures in a row that eject an endpoint; 0 turns ejection off. */
  readonly consecutiveFailures: number;
  /** Ejection time in milliseconds, times the endpoint's ejections so far. */
  readonly baseEjection: number;
  /** At most this percentage of endpoints ejected at once (always at least one). */
  readonly maxEjectionPercent: number;
}

/** When a failed attempt is tried again. */
export interface RetrySettings {
  /** Tries in all, the first included. */
  readonly attempts: number;
  /** Which failures are retried: `connect_failure`, `reset`, `timeout`, or a status. */
  readonly on: readonly (string | number)[];
  /** Per try, until response headers, in milliseconds; null: the request timeout. */
  readonly perTryTimeout: number | null;
  /** At most this percentage of active requests may be retries (always at least 3). */
  readonly budgetPercent: number;
  /** Whether non-idempotent requests are retried after they may have been received. */
  readonly retryNonIdempotent: boolean;
}

/** Circuit breaking. */
export interface LimitSettings {
  /** Requests or connections in flight per endpoint. */
  readonly maxConnections: number;
  /** Requests waiting for an endpoint with room, per service. */
  readonly maxPending: number;
  /** Requests or connections in flight per service. */
  readonly maxRequests: number;
}

/** Everything a cluster needs to know of its service. */
export interface ClusterSettings {
  /** The service name: the cluster's identity. */
  readonly name: string;
  /** Where endpoints come from. */
  readonly sources: readonly UpstreamSource[];
  /** How an endpoint is chosen. */
  readonly balance: SelectionPolicy;
  /** Active health checks, or null when off. */
  readonly healthCheck: HealthCheckSettings | null;
  /** Passive outlier ejection. */
  readonly outlier: OutlierSettings;
  /** Retries. */
  readonly retries: RetrySettings;
  /** Circuit breaking. */
  readonly limits: LimitSettings;
  /** How often names are resolved again, in milliseconds. */
  readonly dnsRefresh: number;
  /** How long a request may wait for an endpoint with room, in milliseconds. */
  readonly pendingTimeout: number;
  /** TLS settings of the service's TLS upstreams, or null for the defaults. */
  readonly upstreamTls: UpstreamTlsOptions | null;
}

/** Finds the endpoints of a service and follows their changes. */
export type Discover = (
  sources: readonly UpstreamSource[],
  refreshMs: number,
  onChange: (endpoints: readonly DiscoveredEndpoint[]) => void,
) => Promise<DiscoveryHandle>;

/** A running discovery. */
export interface DiscoveryHandle {
  /** The endpoints found so far. */
  readonly endpoints: readonly DiscoveredEndpoint[];
  /**
   * Takes other sources or another refresh interval (a reload), keeping
   * the last answers of names that stay; resolves with the endpoints found.
   */
  update(
    sources: readonly UpstreamSource[],
    refreshMs: number,
  ): Promise<readonly DiscoveredEndpoint[]>;
  /** Stops looking. */
  stop(): void;
}

/** What clusters are made with. */
export interface ClusterDeps {
  /** Where state changes are logged. */
  readonly log: Logger;
  /** Finds endpoints. */
  readonly discover: Discover;
  /** Runs one health check of an endpoint. */
  readonly probe: Probe;
}

/** Counters a cluster keeps for `/metrics`. */
export interface ClusterCounters {
  /** Retries by reason (`connect_failure`, `reset`, `timeout`, or a status). */
  readonly retries: Map<string, number>;
  /** Requests or connections turned away, by limit. */
  readonly overflow: Map<string, number>;
}

const MAX_EJECTION_MS = 300_000;
/** Retries always allowed in flight, whatever the budget's percentage says. */
const MIN_RETRY_CONCURRENCY = 3;

/** One service's endpoints and the decisions about them. */
export class Cluster {
  #settings: ClusterSettings;
  readonly #deps: ClusterDeps;
  readonly #endpoints = new Map<string, Endpoint>();
  #list: Endpoint[] = [];
  #selector: Selector<Endpoint>;
  #discovery: DiscoveryHandle | undefined;
  #discoveries = 0;
  #health: HealthChecker | undefined;
  #active = 0;
  #activeRetries = 0;
  #panicking = false;
  #closed = false;
  readonly #waiters: (() => void)[] = [];
  readonly #ejectionTimers = new Map<Endpoint, Cancel>();
  /** Counters for `/metrics`. */
  readonly counters: ClusterCounters = {
    retries: new Map(),
    overflow: new Map(),
  };

  private constructor(settings: ClusterSettings, deps: ClusterDeps) {
    this.#settings = settings;
    this.#deps = deps;
    this.#selector = createSelector(settings.balance, []);
  }

  /** Makes a cluster and finds its endpoints for the first time. */
  static async create(
    settings: ClusterSettings,
    deps: ClusterDeps,
  ): Promise<Cluster> {
    const cluster = new Cluster(settings, deps);
    await cluster.#startDiscovery();
    cluster.#startHealthChecks();
    return cluster;
  }

  /** The service name. */
  get name(): string {
    return this.#settings.name;
  }

  /** The settings in effect. */
  get settings(): ClusterSettings {
    return this.#settings;
  }

  /** The endpoints, sorted by key. */
  get endpoints(): readonly Endpoint[] {
    return this.#list;
  }

  /** Requests or connections in flight. */
  get active(): number {
    return this.#active;
  }

  /**
   * Takes new settings of the same service (a reload): endpoints that stay
   * keep their state; discovery and health checks restart only when what
   * they do changed.
   */
  async update(settings: ClusterSettings): Promise<void> {
    const before = this.#settings;
    this.#settings = settings;
    for (const endpoint of this.#list) {
      endpoint.upstreamTls = settings.upstreamTls;
    }
    if (
      before.dnsRefresh !== settings.dnsRefresh ||
      JSON.stringify(before.sources) !== JSON.stringify(settings.sources)
    ) {
      // Names that stay keep their last answer, even should DNS be down now.
      this.#setEndpoints(
        await this.#discovery!.update(settings.sources, settings.dnsRefresh),
      );
    } else if (before.balance !== settings.balance) {
      this.#selector = createSelector(settings.balance, this.#list);
    }
    if (
      JSON.stringify(before.healthCheck) !==
        JSON.stringify(settings.healthCheck)
    ) {
      this.#health?.stop();
      this.#health = undefined;
      for (const endpoint of this.#list) endpoint.healthy = true;
      this.#startHealthChecks();
    }
  }

  /** Stops discovery, health checks and timers: the service is gone. */
  close(): void {
    this.#closed = true;
    this.#discovery?.stop();
    this.#health?.stop();
    for (const cancel of this.#ejectionTimers.values()) cancel();
    this.#ejectionTimers.clear();
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Admits one request or connection under `limits.maxRequests`; false when
   * the service is full. Each admission ends with {@linkcode Cluster.leave}.
   */
  admit(): boolean {
    if (this.#active >= this.#settings.limits.maxRequests) {
      this.#overflow("max_requests");
      return false;
    }
    this.#active++;
    return true;
  }

  /** Ends an admission. */
  leave(): void {
    this.#active--;
  }

  /**
   * The endpoint for the next attempt: the policy's choice among those that
   * are healthy, not ejected, with room under `limits.maxConnections`, in the
   * lowest priority that has one, preferring endpoints not `tried` already
   * (a retry moves on to the next priority before it tries an endpoint
   * again). When every endpoint is unhealthy or ejected, all of them are
   * used (panic mode, logged once). Undefined when none has room or there
   * are none.
   */
  pick(
    hash: number | undefined,
    tried: ReadonlySet<Endpoint>,
  ): Endpoint | undefined {
    const list = this.#list;
    if (list.length === 0) return undefined;
    const now = Date.now();
    const max = this.#settings.limits.maxConnections;
    if (list.length === 1) {
      // One endpoint: used whatever its health (alone, it is in panic mode).
      const only = list[0]!;
      this.#notePanic(!only.healthy || only.ejectedAt(now));
      return only.inFlight < max ? only : undefined;
    }
    let panic = true;
    for (const e of list) {
      if (e.healthy && !e.ejectedAt(now)) {
        panic = false;
        break;
      }
    }
    this.#notePanic(panic);
    const open = (e: Endpoint) =>
      e.inFlight < max && (panic || (e.healthy && !e.ejectedAt(now)));
    // The lowest priority with an open endpoint not tried yet; failing that,
    // the lowest with an open endpoint at all.
    let fresh = Infinity;
    let any = Infinity;
    for (const e of list) {
      if (!open(e)) continue;
      if (e.priority < any) any = e.priority;
      if (e.priority < fresh && !tried.has(e)) fresh = e.priority;
    }
    if (fresh !== Infinity) {
      return this.#selector.pick(
        (e) => e.priority === fresh && open(e) && !tried.has(e),
        hash,
      );
    }
    if (any === Infinity) return undefined;
    return this.#selector.pick((e) => e.priority === any && open(e), hash);
  }

  /**
   * Like {@linkcode Cluster.pick}, but when every endpoint is full, waits for
   * room when `wait` says so (at most `limits.maxPending` requests wait, each
   * for at most `pendingTimeout`), and counts every request turned away.
   *
   * @throws {ProxyError} `destination_unavailable` when the service has no
   *   endpoints, `connection_limit_reached` when they are full (and waiting
   *   is not allowed, already full, or too long).
   */
  async acquire(
    hash: number | undefined,
    tried: ReadonlySet<Endpoint>,
    wait: boolean,
  ): Promise<Endpoint> {
    const endpoint = this.pick(hash, tried);
    if (endpoint) return endpoint;
    if (this.#list.length === 0) {
      throw new ProxyError(
        "destination_unavailable",
        `service "${this.name}" has no endpoints: ${
          this.#settings.sources.map((s) => s.url).join(", ")
        } resolved to no address`,
      );
    }
    if (!wait) {
      this.#overflow("max_connections");
      throw this.#limitError("max_connections");
    }
    if (this.#waiters.length >= this.#settings.limits.maxPending) {
      this.#overflow("max_pending");
      throw this.#limitError("max_pending");
    }
    const deadline = Date.now() + this.#settings.pendingTimeout;
    while (!this.#closed) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const wake = () => {
          cancel();
          resolve();
        };
        const cancel = schedule(left, () => {
          const index = this.#waiters.indexOf(wake);
          if (index >= 0) this.#waiters.splice(index, 1);
          resolve();
        });
        this.#waiters.push(wake);
      });
      const ready = this.pick(hash, tried);
      if (ready) return ready;
    }
    this.#overflow("max_connections");
    throw this.#limitError("max_connections");
  }

  /**
   * An attempt on `endpoint` starts: it holds one of the endpoint's slots
   * until {@linkcode Cluster.released}.
   */
  started(endpoint: Endpoint): void {
    endpoint.inFlight++;
    endpoint.requests++;
  }

  /** An attempt gave its slot on `endpoint` back: its exchange is over. */
  released(endpoint: Endpoint): void {
    endpoint.inFlight--;
    this.#waiters.shift()?.();
  }

  /**
   * What an attempt on `endpoint` came to: `failure` says why the endpoint
   * failed (for the log), or is null when it answered. Failures count
   * towards outlier ejection; an answer resets them.
   */
  finished(endpoint: Endpoint, failure: string | null): void {
    if (failure === null) {
      endpoint.consecutiveFailures = 0;
      if (endpoint.failing) {
        endpoint.failing = false;
        this.#deps.log.info("upstream reachable again", {
          service: this.name,
          endpoint: endpoint.location,
          failures: endpoint.failures,
        });
      }
      return;
    }
    endpoint.failures++;
    endpoint.consecutiveFailures++;
    if (!endpoint.failing) {
      endpoint.failing = true;
      this.#deps.log.warn("upstream unreachable", {
        service: this.name,
        endpoint: endpoint.location,
        reason: failure,
      });
    }
    const { outlier } = this.#settings;
    if (
      outlier.consecutiveFailures > 0 &&
      endpoint.consecutiveFailures >= outlier.consecutiveFailures
    ) {
      this.#eject(endpoint, failure);
    }
  }

  /**
   * Whether one more retry for `reason` may go: retries in flight stay under
   * `budgetPercent` of the requests in flight, or 3. A retry after a failed
   * connect is always allowed and holds no share of the budget: nothing
   * reached an upstream, so it cannot multiply an upstream's load. Each
   * allowed retry ends with {@linkcode Cluster.retryEnded}.
   */
  retryAllowed(reason: string): boolean {
    const { retries } = this.counters;
    if (reason === "connect_failure") {
      retries.set(reason, (retries.get(reason) ?? 0) + 1);
      return true;
    }
    const { budgetPercent } = this.#settings.retries;
    const budget = Math.max(
      MIN_RETRY_CONCURRENCY,
      Math.floor(this.#active * budgetPercent / 100),
    );
    if (this.#activeRetries >= budget) {
      this.#overflow("retry_budget");
      return false;
    }
    this.#activeRetries++;
    retries.set(reason, (retries.get(reason) ?? 0) + 1);
    return true;
  }

  /** A retry for `reason` allowed by {@linkcode Cluster.retryAllowed} ended. */
  retryEnded(reason: string): void {
    if (reason !== "connect_failure") this.#activeRetries--;
  }

  async #startDiscovery(): Promise<void> {
    const { sources, dnsRefresh } = this.#settings;
    // Changes reported by a discovery that was replaced meanwhile are stale.
    const generation = ++this.#discoveries;
    const started = await this.#deps.discover(sources, dnsRefresh, (found) => {
      if (generation === this.#discoveries) this.#setEndpoints(found);
    });
    this.#discovery = started;
    this.#setEndpoints(started.endpoints);
  }

  #startHealthChecks(): void {
    const settings = this.#settings.healthCheck;
    if (settings === null || this.#closed) return;
    this.#health = new HealthChecker(settings, this.#deps.probe, {
      changed: (endpoint, healthy, reason) => {
        this.#deps.log[healthy ? "info" : "warn"](
          healthy ? "upstream healthy" : "upstream unhealthy",
          {
            service: this.name,
            endpoint: endpoint.location,
            ...(reason ? { reason } : {}),
          },
        );
        if (healthy) this.#waiters.shift()?.();
      },
    });
    this.#health.watch(this.#list);
  }

  #setEndpoints(found: readonly DiscoveredEndpoint[]): void {
    const next = new Map<string, Endpoint>();
    for (const spec of found) {
      const known = this.#endpoints.get(spec.key) ?? next.get(spec.key);
      const endpoint = known ?? new Endpoint(spec);
      endpoint.weight = spec.weight;
      endpoint.priority = spec.priority;
      endpoint.upstreamTls = this.#settings.upstreamTls;
      next.set(spec.key, endpoint);
    }
    for (const [key, endpoint] of this.#endpoints) {
      if (!next.has(key)) {
        this.#ejectionTimers.get(endpoint)?.();
        this.#ejectionTimers.delete(endpoint);
      }
    }
    this.#endpoints.clear();
    for (const [key, endpoint] of next) this.#endpoints.set(key, endpoint);
    this.#list = [...next.values()].sort((a, b) =>
      a.key < b.key ? -1 : a.key > b.key ? 1 : 0
    );
    this.#selector = createSelector(this.#settings.balance, this.#list);
    this.#health?.watch(this.#list);
    // New endpoints may have room for requests waiting.
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #eject(endpoint: Endpoint, failure: string): void {
    const now = Date.now();
    if (endpoint.ejectedAt(now)) return;
    const ejected = this.#list.filter((e) => e.ejectedAt(now)).length;
    const allowed = Math.max(
      1,
      Math.floor(
        this.#list.length * this.#settings.outlier.maxEjectionPercent / 100,
      ),
    );
    if (ejected >= allowed) return;
    endpoint.ejections++;
    endpoint.consecutiveFailures = 0;
    const duration = Math.min(
      this.#settings.outlier.baseEjection * endpoint.ejections,
      MAX_EJECTION_MS,
    );
    endpoint.ejectedUntil = now + duration;
    this.#deps.log.warn("upstream ejected", {
      service: this.name,
      endpoint: endpoint.location,
      for_ms: duration,
      ejections: endpoint.ejections,
      reason: failure,
    });
    this.#ejectionTimers.get(endpoint)?.();
    this.#ejectionTimers.set(
      endpoint,
      schedule(duration, () => {
        this.#ejectionTimers.delete(endpoint);
        this.#deps.log.info("upstream back from ejection", {
          service: this.name,
          endpoint: endpoint.location,
        });
        this.#waiters.shift()?.();
      }),
    );
  }

  #notePanic(panic: boolean): void {
    if (panic === this.#panicking) return;
    this.#panicking = panic;
    if (panic) {
      this.#deps.log.warn(
        "every endpoint is unhealthy or ejected: sending to all of them (panic mode)",
        { service: this.name, endpoints: this.#list.length },
      );
    } else {
      this.#deps.log.info("a healthy endpoint is back: panic mode over", {
        service: this.name,
      });
    }
  }

  #overflow(limit: string): void {
    const { overflow } = this.counters;
    overflow.set(limit, (overflow.get(limit) ?? 0) + 1);
  }

  #limitError(limit: "max_pending" | "max_connections"): ProxyError {
    const { limits } = this.#settings;
    const value = limit === "max_pending"
      ? limits.maxPending
      : limits.maxConnections;
    return new ProxyError(
      "connection_limit_reached",
      `service "${this.name}" is at limits.${limit} (${value})`,
    );
  }
}

/**
 * The one place that composes the stages: load the routes, open the admin
 * listener and every route listener, reload on change (applying only the
 * difference), and drain everything on shutdown.
 *
 * A reload builds a whole new snapshot. When it is invalid, the last good one
 * keeps serving; when it is valid, new listeners open, listeners that stay
 * swap their routing table (requests and connections in flight keep the one
 * they started with), and removed listeners stop accepting and drain.
 * @module
 */
import { createAdminHandler, renderMetrics } from "../admin/admin.ts";
import type { ListenAddress } from "../address.ts";
import {
  formatListenAddress,
  isLoopback,
  parseListenAddress,
} from "../address.ts";
import { type ConfigSnapshot, loadConfig } from "../config/config.ts";
import { type ConfigError, RoutesDirectoryError } from "../config/errors.ts";
import type { ReferenceSource } from "../config/interpolate.ts";
import type { ListenerPlan } from "../config/plan.ts";
import type { ServiceConfig } from "../config/service.ts";
import { type RoutesWatch, watchFiles, watchRoutes } from "../config/watch.ts";
import type { Logger } from "../log.ts";
import { type MetricFamily, MetricsRegistry } from "../metrics.ts";
import { HttpRouter } from "../router/router.ts";
import { AccessLog, type AccessLogFormat } from "../server/access_log.ts";
import {
  createHttpHandler,
  type HttpProxyContext,
  type HttpRoute,
  type RequestOutcome,
} from "../server/http_proxy.ts";
import {
  type HttpListenerOptions,
  serveHttp,
} from "../server/http_listener.ts";
import { ListenError, type RunningListener } from "../server/listeners.ts";
import type { TlsMaterial } from "../server/tls_termination.ts";
import { serveTcp } from "../server/tcp_listener.ts";
import {
  createTcpHandler,
  type TcpProxyContext,
  type TcpRoute,
} from "../server/tcp_proxy.ts";
import { Traffic } from "../server/traffic.ts";
import { SecretFiles } from "./secret_files.ts";
import { Http1Transport } from "../transport/http1/client.ts";
import { Discovery } from "../upstream/discovery.ts";
import { probeEndpoint } from "../upstream/health.ts";
import { ClusterRegistry, type StagedClusters } from "../upstream/registry.ts";
import {
  clusterSettings,
  headerFiles,
  httpRouteSettings,
  tcpRouteSettings,
} from "./build.ts";
import {
  logStartup,
  routesReport,
  upstreamMetrics,
  upstreamsReport,
} from "./reports.ts";

/** How often, and how far apart, a reload retries binding a busy address. */
const REBIND_ATTEMPTS = 40;
const REBIND_INTERVAL_MS = 25;

/**
 * How often the certificate and key files route files name are looked at: a
 * renewed file applies within two looks.
 */
const CERTIFICATE_POLL_MS = 500;

/** Options of {@linkcode Legate.start}. */
export interface LegateOptions {
  /** The routes directory. */
  readonly routesDir: string;
  /** The admin listener's address, e.g. `127.0.0.1:9901`. */
  readonly admin: string;
  /** Where events go. */
  readonly log: Logger;
  /** Where `${...}` references resolve; defaults to the environment and files. */
  readonly references?: ReferenceSource;
  /**
   * Watch the routes directory and reload when it changes.
   * @default {true}
   */
  readonly watch?: boolean;
  /**
   * How long removed listeners, and all listeners at shutdown, may take to
   * finish their requests and connections, in milliseconds.
   * @default {30000}
   */
  readonly drainTimeout?: number;
  /**
   * How long an HTTP client connection may take to send a complete request
   * head, after it opens and after each response, in milliseconds.
   * @default {30000}
   */
  readonly headerTimeout?: number;
  /**
   * Idle HTTP client connections kept per listener; past it the longest
   * idle one is closed.
   * @default {1024}
   */
  readonly maxIdleConnections?: number;
  /**
   * The DNS server that resolves upstream host names and SRV names; the
   * system's (/etc/resolv.conf) when absent.
   */
  readonly resolver?: { readonly hostname: string; readonly port: number };
  /**
   * legate's version, as `GET /status` reports it (main.ts passes mod.ts'
   * `VERSION`); `null` there when absent.
   */
  readonly version?: string;
  /**
   * Write one line per HTTP request and per TCP connection to standard
   * output, as text or JSON; none when absent.
   */
  readonly accessLog?: AccessLogFormat;
}

/** The route files are invalid; `errors` has every problem. */
export class InvalidConfigError extends Error {
  /** Every problem, each with file:line:column. */
  readonly errors: readonly ConfigError[];

  /** Makes the error from config errors. */
  constructor(errors: readonly ConfigError[]) {
    super(
      `Invalid route files:\n${errors.map((e) => `  ${e.message}`).join("\n")}`,
    );
    this.name = "InvalidConfigError";
    this.errors = errors;
  }
}

/** A listener legate opened for a route file's `listen`. */
export interface OpenListener {
  /** What it runs now. */
  readonly plan: ListenerPlan;
  /** The bound listener. */
  readonly listener: RunningListener;
}

/** What a reload did. */
export interface ReloadResult {
  /** `applied` changed something; `unchanged` found nothing to change; `invalid` and `failed` kept the last good config. */
  readonly outcome: "applied" | "unchanged" | "invalid" | "failed";
  /** Listener addresses opened. */
  readonly added: readonly string[];
  /** Listener addresses closed (draining). */
  readonly removed: readonly string[];
  /** Listener addresses whose services changed. */
  readonly updated: readonly string[];
  /** Why it was invalid or failed. */
  readonly errors: readonly ReportedError[];
}

/** A config error as the admin API reports it. */
export interface ReportedError {
  /** The whole message, as logged. */
  readonly message: string;
  /** The route file, when the error is in one. */
  readonly file?: string;
  /** Line, from 1. */
  readonly line?: number;
  /** Column, from 1. */
  readonly column?: number;
  /** Key path, e.g. `upstreams[1]`. */
  readonly key?: string;
}

/** A route listener with the routing table it serves now. */
interface ActiveListener extends OpenListener {
  plan: ListenerPlan;
  readonly listener: RunningListener;
  /** Swaps the routing table; work in flight keeps the old one. */
  update(plan: ListenerPlan, clusters: StagedClusters): void;
}

interface Context {
  readonly transport: Http1Transport;
  readonly log: Logger;
  readonly metrics: MetricsRegistry;
  readonly accessLog: AccessLog | null;
  readonly http: HttpListenerOptions;
  readonly clusters: ClusterRegistry;
  readonly secretFiles: SecretFiles;
  readonly httpProxy: HttpProxyContext;
  readonly tcpProxy: TcpProxyContext;
}

/**
 * A running legate: its admin listener and one listener per listen address.
 *
 * @example Starts on a routes directory, reloads it, shuts down
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { Legate } from "./legate.ts";
 * import { Logger } from "../log.ts";
 * const routesDir = await Deno.makeTempDir();
 * const file = join(routesDir, "users.yaml");
 * await Deno.writeTextFile(file, "listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:8080]\n");
 * const legate = await Legate.start({
 *   routesDir,
 *   admin: "127.0.0.1:0",
 *   watch: false,
 *   log: new Logger({ level: "error", format: "text" }),
 * });
 * assert.deepEqual(legate.config.services.map((s) => s.name), ["users"]);
 * // Another service on the same listener, by path.
 * await Deno.writeTextFile(
 *   join(routesDir, "orders.yaml"),
 *   "listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:8081]\nmatch: { path_prefix: /orders }\n",
 * );
 * assert.equal((await legate.reload("manual")).outcome, "applied");
 * assert.deepEqual(legate.config.services.map((s) => s.name), ["orders", "users"]);
 * assert.equal(await legate.shutdown(), 0);
 * await Deno.remove(routesDir, { recursive: true });
 * ```
 */
export class Legate {
  /** The admin listener. */
  readonly admin: RunningListener;
  #config: ConfigSnapshot;
  readonly #listeners: Map<string, ActiveListener>;
  readonly #context: Context;
  readonly #options: LegateOptions;
  readonly #drainTimeout: number;
  readonly #draining = new Set<Promise<number>>();
  #queue: Promise<unknown> = Promise.resolve();
  #watch: RoutesWatch | undefined;
  #certificateWatch: RoutesWatch | undefined;
  #ready = false;
  #lastReload: {
    at: Date;
    trigger: string;
    ok: boolean;
    errors: readonly ReportedError[];
  };
  #lastSuccess: Date;
  /** When legate started serving, for `GET /status`. */
  readonly #startedAt = new Date();
  readonly #reloads = { success: 0, failure: 0 };

  private constructor(
    options: LegateOptions,
    config: ConfigSnapshot,
    admin: RunningListener,
    listeners: Map<string, ActiveListener>,
    context: Context,
  ) {
    this.#options = options;
    this.#config = config;
    this.admin = admin;
    this.#listeners = listeners;
    this.#context = context;
    this.#drainTimeout = options.drainTimeout ?? 30_000;
    this.#lastSuccess = new Date();
    this.#lastReload = {
      at: this.#lastSuccess,
      trigger: "start",
      ok: true,
      errors: [],
    };
  }

  /**
   * Loads the routes and opens every listener.
   *
   * @throws {InvalidConfigError} When route files are invalid.
   * @throws {RoutesDirectoryError} When the routes directory is missing or empty.
   * @throws {ListenError} When an address cannot be bound; nothing stays open.
   */
  static async start(options: LegateOptions): Promise<Legate> {
    const { log } = options;
    const result = await loadConfig(options.routesDir, options.references);
    if (result.errors) throw new InvalidConfigError(result.errors);
    const { config } = result;
    const adminAddress = parseAdminAddress(options.admin);
    const metrics = new MetricsRegistry();
    const traffic = new Traffic(metrics);
    const accessLog = options.accessLog
      ? new AccessLog(options.accessLog)
      : null;
    const transport = new Http1Transport();
    const context: Context = {
      transport,
      log,
      secretFiles: new SecretFiles(log, undefined, options.references),
      metrics,
      accessLog,
      clusters: new ClusterRegistry({
        log,
        discover: async (sources, refreshMs, onChange) => {
          const discovery = new Discovery(sources, {
            refreshMs,
            onChange,
            onLookupError: (url, reason) =>
              log.warn("upstream lookup failed: keeping its last answer", {
                upstream: url,
                reason,
              }),
            onLookupRecovered: (url) =>
              log.info("upstream lookup works again", { upstream: url }),
            ...(options.resolver ? { resolver: options.resolver } : {}),
          });
          await discovery.start();
          return {
            get endpoints() {
              return discovery.endpoints;
            },
            update: (sources, refreshMs) =>
              discovery.update(sources, refreshMs),
            stop: () => void discovery.stop(),
          };
        },
        probe: probeEndpoint,
      }),
      httpProxy: {
        transport,
        log,
        attempts: traffic,
        webSockets: traffic,
        logPhase: [
          (outcome) => traffic.observe(outcome),
          ...(accessLog ? [(o: RequestOutcome) => accessLog.request(o)] : []),
        ],
      },
      tcpProxy: {
        log,
        traffic,
        logPhase: accessLog ? [(o) => accessLog.connection(o)] : [],
      },
      http: {
        ...(options.headerTimeout === undefined
          ? {}
          : { headerTimeout: options.headerTimeout }),
        ...(options.maxIdleConnections === undefined
          ? {}
          : { maxIdleConnections: options.maxIdleConnections }),
        onAcceptError: (error, transient) =>
          log[transient ? "debug" : "warn"]("accept failed", {
            reason: error.message,
          }),
      },
    };
    const listeners = new Map<string, ActiveListener>();
    // The admin listener opens first and learns the instance once it exists.
    const started: { legate?: Legate } = {};
    let admin: RunningListener | undefined;
    let staged: StagedClusters | undefined;
    try {
      admin = await serveHttp(
        adminAddress,
        createAdminHandler({
          ready: () => started.legate?.ready ?? false,
          routes: () => started.legate ? started.legate.#routesReport() : null,
          configErrors: () =>
            started.legate ? started.legate.#errorsReport() : null,
          reload: async () => {
            const outcome = await started.legate!.reload("admin");
            return {
              ok: outcome.outcome === "applied" ||
                outcome.outcome === "unchanged",
              result: outcome,
            };
          },
          upstreams: () => upstreamsReport(context.clusters.clusters),
          status: () => {
            if (started.legate === undefined) return null;
            const startedAt = started.legate.#startedAt;
            return {
              version: options.version ?? null,
              started_at: startedAt.toISOString(),
              uptime_seconds: Math.floor(
                (Date.now() - startedAt.getTime()) / 1000,
              ),
            };
          },
          metrics: () => renderMetrics(context.metrics.collect()),
        }),
        context.http,
      );
      staged = await context.clusters.stage(
        config.services.map(clusterSettings),
      );
      for (const plan of config.plan.listeners) {
        listeners.set(plan.key, await openListener(plan, context, staged));
      }
      await staged.commit();
    } catch (error) {
      await Promise.all(
        [admin, ...[...listeners.values()].map((l) => l.listener)].map((l) =>
          l?.drain(0)
        ),
      );
      staged?.abort();
      context.clusters.close();
      context.transport.close();
      if (error instanceof ListenError) {
        const plan = config.plan.listeners[listeners.size];
        throw admin && plan ? explainListenError(error, plan) : new ListenError(
          `${error.message}; it is the admin address (--admin, LEGATE_ADMIN)`,
          { cause: error },
        );
      }
      throw error;
    }
    const legate = new Legate(options, config, admin, listeners, context);
    started.legate = legate;
    metrics.collector(() => [
      ...legate.#configMetrics(),
      ...upstreamMetrics(context.clusters.clusters),
    ]);
    if (accessLog) {
      metrics.collector(() => [{
        name: "legate_access_log_dropped_lines_total",
        help:
          "Access log lines dropped because standard output fell more than 4 MiB behind.",
        type: "counter",
        samples: [{ labels: {}, value: accessLog.dropped }],
      }]);
    }
    if (!isLoopback(adminAddress)) {
      log.warn("the admin listener accepts connections from other hosts", {
        admin: formatListenAddress(adminAddress),
      });
    }
    legate.#logSummary();
    if (options.watch ?? true) {
      legate.#watch = await watchRoutes(
        options.routesDir,
        () => legate.reload("file change"),
        {
          onDirectoryChange: (event) =>
            log.warn(event, { routes: options.routesDir }),
        },
      );
      legate.#certificateWatch = await watchFiles(
        () => certificateFiles(legate.#config.services),
        () => legate.reload("certificate change"),
        { intervalMs: CERTIFICATE_POLL_MS },
      );
    }
    legate.#ready = true;
    return legate;
  }

  /** The config being served: the last one that loaded and applied. */
  get config(): ConfigSnapshot {
    return this.#config;
  }

  /** The route listeners, in plan order. */
  get listeners(): readonly OpenListener[] {
    return [...this.#listeners.values()];
  }

  /** Whether legate wants traffic: listeners open and not shutting down. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Requests and connections in flight on every listener, draining ones included. */
  get active(): number {
    return [...this.#listeners.values()].reduce(
      (sum, l) => sum + l.listener.active(),
      0,
    );
  }

  /**
   * Reloads the routes directory. Reloads run one at a time, in order. An
   * invalid directory keeps the current config serving.
   */
  reload(trigger: string): Promise<ReloadResult> {
    const run = this.#queue.then(() => this.#reload(trigger)).catch((error) =>
      // Whatever went wrong, the running config stays and legate stays up.
      this.#rejected(trigger, "failed", [{
        message: `Reload failed: ${(error as Error).message ?? error}`,
      }])
    );
    this.#queue = run;
    return run;
  }

  /** Marks legate not ready (`/readyz` answers 503) while it keeps serving. */
  stopBeingReady(): void {
    this.#ready = false;
  }

  /**
   * Stops accepting on every route listener, lets requests and connections in
   * flight finish for up to `deadlineMs` (default: the drain timeout), cuts
   * the rest, then closes the admin listener. Resolves with how many requests
   * or connections were cut.
   */
  async shutdown(deadlineMs: number = this.#drainTimeout): Promise<number> {
    this.#ready = false;
    await this.#watch?.close();
    await this.#certificateWatch?.close();
    await this.#queue;
    const cuts = await Promise.all([
      ...[...this.#listeners.values()].map((l) => l.listener.drain(deadlineMs)),
      ...this.#draining,
    ]);
    this.#context.clusters.close();
    this.#context.transport.close();
    this.#context.secretFiles.stop();
    await this.admin.drain(0);
    await this.#context.accessLog?.flush();
    return cuts.reduce((sum, n) => sum + n, 0);
  }

  async #reload(trigger: string): Promise<ReloadResult> {
    const { log } = this.#context;
    const none = { added: [], removed: [], updated: [] };
    let loaded;
    try {
      loaded = await loadConfig(
        this.#options.routesDir,
        this.#options.references,
      );
    } catch (error) {
      if (!(error instanceof RoutesDirectoryError)) throw error;
      return this.#rejected(trigger, "invalid", [{ message: error.message }]);
    }
    if (loaded.errors) {
      return this.#rejected(trigger, "invalid", loaded.errors.map(reportError));
    }
    const next = loaded.config;
    if (fingerprint(next) === fingerprint(this.#config)) {
      this.#accepted(trigger);
      log.debug("routes unchanged", { trigger });
      return { outcome: "unchanged", ...none, errors: [] };
    }

    const desired = new Map(next.plan.listeners.map((p) => [p.key, p]));
    const replaced = [...desired.values()].filter((p) => {
      const current = this.#listeners.get(p.key);
      return current !== undefined && !reusable(current.plan, p);
    });
    const added = [...desired.values()].filter((p) =>
      !this.#listeners.has(p.key)
    );
    const clusters = await this.#context.clusters.stage(
      next.services.map(clusterSettings),
    );
    const opened = new Map<string, ActiveListener>();
    try {
      for (const plan of added) {
        opened.set(plan.key, await this.#open(plan, clusters));
      }
    } catch (error) {
      await Promise.all([...opened.values()].map((l) => l.listener.drain(0)));
      clusters.abort();
      if (!(error instanceof ListenError)) throw error;
      const plan = added[opened.size]!;
      return this.#rejected(trigger, "failed", [
        reportListenError(error, plan),
      ]);
    }

    const updated: string[] = [];
    const removed: string[] = [];
    for (const [key, active] of [...this.#listeners]) {
      const plan = desired.get(key);
      if (plan && reusable(active.plan, plan)) {
        if (
          fingerprintServices(plan.services) !==
            fingerprintServices(active.plan.services)
        ) {
          active.update(plan, clusters);
          updated.push(key);
        }
        continue;
      }
      this.#listeners.delete(key);
      removed.push(key);
      const draining = active.listener.drain(this.#drainTimeout);
      this.#draining.add(draining);
      draining.then((cut) => {
        this.#draining.delete(draining);
        log.info("listener drained", { listener: key, cut });
      });
    }
    for (const [key, active] of opened) this.#listeners.set(key, active);
    // A listener whose protocol changed reopens once the old one stopped accepting.
    const failures: ReportedError[] = [];
    for (const plan of replaced) {
      try {
        this.#listeners.set(plan.key, await this.#open(plan, clusters));
      } catch (error) {
        if (!(error instanceof ListenError)) throw error;
        failures.push(reportListenError(error, plan));
      }
    }
    await clusters.commit();
    this.#config = next;
    this.#context.secretFiles.retain(headerFiles(next.services));
    const result: ReloadResult = {
      outcome: failures.length > 0 ? "failed" : "applied",
      added: [...added, ...replaced].map((p) => p.key),
      removed,
      updated,
      errors: failures,
    };
    if (failures.length > 0) {
      for (const failure of failures) log.error(failure.message, { trigger });
      this.#record(trigger, false, failures);
    } else {
      this.#accepted(trigger);
    }
    log.info("routes reloaded", {
      trigger,
      services: next.services.length,
      added: result.added,
      removed,
      updated,
    });
    return result;
  }

  /**
   * Opens a listener during a reload. A port legate itself just stopped
   * listening on can stay busy for a moment after Deno.serve's shutdown()
   * resolves, so "address in use" is retried briefly before it counts.
   */
  async #open(
    plan: ListenerPlan,
    clusters: StagedClusters,
  ): Promise<ActiveListener> {
    for (let attempt = 1;; attempt++) {
      try {
        return await openListener(plan, this.#context, clusters);
      } catch (error) {
        const busy = error instanceof ListenError &&
          error.cause instanceof Deno.errors.AddrInUse;
        if (!busy || attempt === REBIND_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, REBIND_INTERVAL_MS));
      }
    }
  }

  #rejected(
    trigger: string,
    outcome: "invalid" | "failed",
    errors: readonly ReportedError[],
  ): ReloadResult {
    const { log } = this.#context;
    for (const error of errors) log.error(error.message, { trigger });
    log.warn("reload rejected: the last good routes keep serving", {
      trigger,
      errors: errors.length,
    });
    this.#record(trigger, false, errors);
    return { outcome, added: [], removed: [], updated: [], errors };
  }

  #accepted(trigger: string): void {
    this.#lastSuccess = new Date();
    this.#record(trigger, true, []);
  }

  #record(
    trigger: string,
    ok: boolean,
    errors: readonly ReportedError[],
  ): void {
    this.#lastReload = { at: new Date(), trigger, ok, errors };
    this.#reloads[ok ? "success" : "failure"]++;
  }

  #routesReport(): unknown {
    return routesReport(this.#config.routesDir, [...this.#listeners.values()]);
  }

  #errorsReport(): unknown {
    const { at, trigger, ok, errors } = this.#lastReload;
    return {
      last_reload: { at: at.toISOString(), trigger, successful: ok },
      errors,
    };
  }

  /** Families about the routes and their reloads, read when metrics are scraped. */
  #configMetrics(): MetricFamily[] {
    return [
      {
        name: "legate_config_last_reload_successful",
        help:
          "Whether the last reload of the routes succeeded (1) or kept the previous routes (0).",
        type: "gauge",
        samples: [{ labels: {}, value: this.#lastReload.ok ? 1 : 0 }],
      },
      {
        name: "legate_config_last_reload_success_timestamp_seconds",
        help: "When the routes last loaded successfully, in Unix seconds.",
        type: "gauge",
        samples: [{
          labels: {},
          value: Math.floor(this.#lastSuccess.getTime() / 1000),
        }],
      },
      {
        name: "legate_config_reloads_total",
        help: "Reloads of the routes since start, by result.",
        type: "counter",
        samples: [
          { labels: { result: "success" }, value: this.#reloads.success },
          { labels: { result: "failure" }, value: this.#reloads.failure },
        ],
      },
      {
        name: "legate_services",
        help: "Services in the routes being served.",
        type: "gauge",
        samples: [{ labels: {}, value: this.#config.services.length }],
      },
    ];
  }

  #logSummary(): void {
    logStartup(
      this.#context.log,
      this.#config.routesDir,
      this.#config.services.length,
      [...this.#listeners.values()],
      this.admin.addr,
    );
  }
}

function reportError(error: ConfigError): ReportedError {
  const { file, line, column } = error.position;
  return {
    message: error.message,
    file,
    line,
    column,
    ...(error.keyPath ? { key: error.keyPath } : {}),
  };
}

/** Every PEM file the services read: listener and upstream certificates, keys, CAs. */
function certificateFiles(services: readonly ServiceConfig[]): string[] {
  return services.flatMap((service) => [
    ...(service.tls ? [service.tls.certFile, service.tls.keyFile] : []),
    ...(service.upstreamTls?.caFile ? [service.upstreamTls.caFile] : []),
    ...(service.upstreamTls?.client
      ? [
        service.upstreamTls.client.certFile,
        service.upstreamTls.client.keyFile,
      ]
      : []),
  ]);
}

/**
 * Whether a running listener can take `next` by swapping its routes: the
 * same protocol, TLS on both or on neither, and WebSocket on both or on
 * neither (it decides how connections are served).
 */
function reusable(current: ListenerPlan, next: ListenerPlan): boolean {
  return current.protocol === next.protocol &&
    (current.tls === null) === (next.tls === null) &&
    upgrades(current) === upgrades(next);
}

/** Whether a listener serves a service that forwards WebSocket. */
function upgrades(plan: ListenerPlan): boolean {
  return plan.services.some((service) => service.webSocket !== null);
}

/** What a config means, without where it is written: comments and layout do not count. */
function fingerprint(config: ConfigSnapshot): string {
  return fingerprintServices(config.services);
}

function fingerprintServices(services: readonly ServiceConfig[]): string {
  return JSON.stringify(
    services.map(({ positions: _, ...meaning }) => meaning),
  );
}

/** A listen failure as the admin API reports it: at the first owner's `listen:`. */
function reportListenError(
  error: ListenError,
  plan: ListenerPlan,
): ReportedError {
  const { file, line, column } = plan.services[0]!.positions.listen;
  return {
    message: explainListenError(error, plan).message,
    file,
    line,
    column,
    key: "listen",
  };
}

function explainListenError(
  error: ListenError,
  plan: ListenerPlan,
): ListenError {
  const owners = plan.services.map((s) => `"${s.name}" (${s.file})`).join(", ");
  return new ListenError(
    `${error.message}; it is the listen address of ${owners}`,
    { cause: error },
  );
}

function parseAdminAddress(text: string): ListenAddress {
  try {
    return parseListenAddress(text);
  } catch (error) {
    throw new ListenError(`Invalid admin address: ${(error as Error).message}`);
  }
}

async function openListener(
  plan: ListenerPlan,
  context: Context,
  clusters: StagedClusters,
): Promise<ActiveListener> {
  const onAcceptError = (error: Error, transient: boolean) =>
    context.log[transient ? "debug" : "warn"]("accept failed", {
      listener: plan.key,
      reason: error.message,
    });
  if (plan.protocol === "http") {
    let router = httpRouter(plan, clusters, context.secretFiles);
    const active: ActiveListener = {
      plan,
      listener: await serveHttp(
        plan.address,
        createHttpHandler(
          () => router,
          context.httpProxy,
          plan.tls ? "https" : "http",
        ),
        {
          ...context.http,
          onAcceptError,
          ...listenerSecurity(plan),
          upgrades: upgrades(plan),
          onHopRestart: (error) =>
            context.log.warn("inner HTTP server restarted", {
              listener: plan.key,
              reason: error instanceof Error ? error.message : String(error),
            }),
        },
      ),
      update(next, staged) {
        updateListener(active, next);
        router = httpRouter(next, staged, context.secretFiles);
        active.plan = next;
      },
    };
    return active;
  }
  let route = tcpRoute(plan, clusters);
  const active: ActiveListener = {
    plan,
    listener: await serveTcp(
      plan.address,
      createTcpHandler(() => route, context.tcpProxy),
      { onAcceptError, ...listenerSecurity(plan) },
    ),
    update(next, staged) {
      updateListener(active, next);
      route = tcpRoute(next, staged);
      active.plan = next;
    },
  };
  return active;
}

/** A listener's certificate and socket file mode, as serveHttp and serveTcp take them. */
function listenerSecurity(
  plan: ListenerPlan,
): { tls?: TlsMaterial; socketMode: number | null } {
  return {
    ...(plan.tls ? { tls: { cert: plan.tls.cert, key: plan.tls.key } } : {}),
    socketMode: plan.socketMode,
  };
}

/**
 * Applies what a reload changed about a listener that stays: a renewed
 * certificate (new connections get it), a socket file mode.
 */
function updateListener(active: ActiveListener, next: ListenerPlan): void {
  const before = active.plan;
  if (
    next.tls &&
    (next.tls.cert !== before.tls?.cert || next.tls.key !== before.tls?.key)
  ) {
    active.listener.useCertificate?.({
      cert: next.tls.cert,
      key: next.tls.key,
    });
  }
  if (
    next.address.transport === "unix" && next.socketMode !== null &&
    next.socketMode !== before.socketMode
  ) {
    Deno.chmodSync(next.address.path, next.socketMode);
  }
}

function httpRouter(
  plan: ListenerPlan,
  clusters: StagedClusters,
  secretFiles: SecretFiles,
): HttpRouter<HttpRoute> {
  return new HttpRouter<HttpRoute>(
    plan.services.map((service) => ({
      ...httpRouteSettings(service, secretFiles),
      cluster: clusters.cluster(service.name),
    })),
  );
}

function tcpRoute(plan: ListenerPlan, clusters: StagedClusters): TcpRoute {
  const service = plan.services[0]!;
  return {
    ...tcpRouteSettings(service),
    cluster: clusters.cluster(service.name),
  };
}

/**
 * The one place that composes the stages: load the routes, open the admin
 * listener and every route listener, and drain them all on shutdown.
 * @module
 */
import type { ListenAddress } from "../config/address.ts";
import { formatListenAddress, parseListenAddress } from "../config/address.ts";
import { type ConfigSnapshot, loadConfig } from "../config/config.ts";
import type { ConfigError } from "../config/errors.ts";
import type { ReferenceSource } from "../config/interpolate.ts";
import type { ListenerPlan } from "../config/plan.ts";
import { createAdminHandler } from "../admin/admin.ts";
import type { Logger } from "../log.ts";
import { HttpRouter } from "../router/router.ts";
import { createHttpHandler, type HttpRoute } from "../server/http_proxy.ts";
import {
  ListenError,
  type RunningListener,
  serveHttp,
  serveTcp,
} from "../server/listeners.ts";
import { createTcpHandler } from "../server/tcp_proxy.ts";
import { Http1Transport } from "../transport/http1.ts";
import { Reachability } from "../upstream/reachability.ts";
import { RoundRobin } from "../upstream/round_robin.ts";

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
  /** What it was planned as. */
  readonly plan: ListenerPlan;
  /** The bound listener. */
  readonly listener: RunningListener;
}

/**
 * A running legate: its admin listener and one listener per listen address.
 *
 * @example Usage
 * ```ts ignore
 * import { Legate } from "./legate.ts";
 * import { Logger } from "../log.ts";
 * const legate = await Legate.start({ routesDir: "routes", admin: "127.0.0.1:9901", log: new Logger({ level: "info", format: "text" }) });
 * await legate.shutdown(10_000);
 * ```
 */
export class Legate {
  /** The config it runs. */
  readonly config: ConfigSnapshot;
  /** The admin listener. */
  readonly admin: RunningListener;
  /** The route listeners, in plan order. */
  readonly listeners: readonly OpenListener[];
  readonly #transport: Http1Transport;
  readonly #log: Logger;
  readonly #readiness: { ready: boolean };

  private constructor(
    config: ConfigSnapshot,
    admin: RunningListener,
    listeners: readonly OpenListener[],
    transport: Http1Transport,
    log: Logger,
    readiness: { ready: boolean },
  ) {
    this.#readiness = readiness;
    this.config = config;
    this.admin = admin;
    this.listeners = listeners;
    this.#transport = transport;
    this.#log = log;
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
    const transport = new Http1Transport();
    const reachability = new Reachability(log);
    const opened: OpenListener[] = [];
    const readiness = { ready: false };
    let admin: RunningListener | undefined;
    try {
      admin = await serveHttp(
        adminAddress,
        createAdminHandler({ ready: () => readiness.ready }),
      );
      for (const plan of config.plan.listeners) {
        opened.push({
          plan,
          listener: await openListener(plan, { transport, log, reachability }),
        });
      }
    } catch (error) {
      await Promise.all(
        [admin, ...opened.map((o) => o.listener)].map((l) => l?.drain(0)),
      );
      transport.close();
      if (error instanceof ListenError) {
        const plan = config.plan.listeners[opened.length];
        if (admin && plan) {
          const owners = plan.services.map((s) => `"${s.name}" (${s.file})`)
            .join(", ");
          throw new ListenError(
            `${error.message}; it is the listen address of ${owners}`,
            { cause: error },
          );
        }
        throw new ListenError(
          `${error.message}; it is the admin address (--admin, LEGATE_ADMIN)`,
          { cause: error },
        );
      }
      throw error;
    }
    const legate = new Legate(config, admin, opened, transport, log, readiness);
    readiness.ready = true;
    legate.#logSummary();
    return legate;
  }

  /** Whether legate wants traffic: listeners open and not shutting down. */
  get ready(): boolean {
    return this.#readiness.ready;
  }

  /**
   * Stops accepting on every route listener, lets requests and connections in
   * flight finish for up to `deadlineMs`, cuts the rest, then closes the admin
   * listener. Resolves with how many requests or connections were cut.
   */
  async shutdown(deadlineMs: number): Promise<number> {
    this.#readiness.ready = false;
    const cuts = await Promise.all(
      this.listeners.map((o) => o.listener.drain(deadlineMs)),
    );
    this.#transport.close();
    await this.admin.drain(0);
    return cuts.reduce((sum, n) => sum + n, 0);
  }

  #logSummary(): void {
    const { config } = this;
    const log = this.#log;
    if (log.json) {
      for (const { plan, listener } of this.listeners) {
        log.info("listening", {
          listener: formatAddr(listener.addr),
          protocol: plan.protocol,
          services: plan.services.map((s) => ({
            name: s.name,
            file: s.file,
            ...(s.protocol === "http"
              ? { host: s.match.host ?? "*", path_prefix: s.match.pathPrefix }
              : {}),
            upstreams: s.upstreams.map((u) => u.url),
          })),
        });
      }
      log.info("started", {
        services: config.services.length,
        listeners: this.listeners.length,
        admin: formatAddr(this.admin.addr),
        routes: config.routesDir,
      });
      return;
    }
    const lines = [
      `legate serving ${config.services.length} service(s) from ${config.routesDir}; admin on ${
        formatAddr(this.admin.addr)
      }`,
    ];
    for (const { plan, listener } of this.listeners) {
      lines.push(`  ${plan.protocol.padEnd(4)} ${formatAddr(listener.addr)}`);
      for (const s of plan.services) {
        const match = s.protocol === "http"
          ? ` host ${s.match.host ?? "*"} path ${s.match.pathPrefix}${
            s.stripPrefix ? " (stripped)" : ""
          }`
          : "";
        lines.push(
          `    ${s.name}${match} -> ${
            s.upstreams.map((u) => u.url).join(", ")
          }`,
        );
      }
    }
    log.text(lines);
  }
}

function parseAdminAddress(text: string): ListenAddress {
  try {
    return parseListenAddress(text);
  } catch (error) {
    throw new ListenError(`Invalid admin address: ${(error as Error).message}`);
  }
}

function formatAddr(addr: Deno.Addr): string {
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

async function openListener(
  plan: ListenerPlan,
  context: {
    transport: Http1Transport;
    log: Logger;
    reachability: Reachability;
  },
): Promise<RunningListener> {
  if (plan.protocol === "http") {
    const router = new HttpRouter<HttpRoute>(
      plan.services.map((service) => ({
        service,
        match: service.match,
        balancer: new RoundRobin(service.upstreams),
      })),
    );
    return await serveHttp(
      plan.address,
      createHttpHandler(() => router, context),
    );
  }
  const service = plan.services[0]!;
  const route = { service, balancer: new RoundRobin(service.upstreams) };
  return await serveTcp(plan.address, createTcpHandler(() => route, context));
}

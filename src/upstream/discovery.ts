/**
 * Endpoint discovery for one service: turns its upstream sources (IP
 * addresses, host names, SRV names) into endpoints, and keeps them current by
 * resolving again on an interval. A lookup that fails keeps the source's last
 * good answer, so a DNS outage never empties a service; it is reported once
 * per run of failures, and its recovery once.
 *
 * Discovery owns the timers and lookups; it holds no endpoint state (health,
 * connections): the cluster keeps that by {@linkcode DiscoveredEndpoint.key},
 * which stays the same for as long as an endpoint does. It knows nothing of
 * route files: other code turns those into {@linkcode UpstreamSource}s.
 * @module
 */
import {
  denoDnsClient,
  type DnsClient,
  type LookupContext,
  type NameServer,
  readResolverFiles,
  resolveHost,
  resolveSrv,
} from "./dns.ts";

/** Where one upstream's endpoints come from (built from a route file by other code). */
export type UpstreamSource =
  | {
    /** One endpoint at an IP address or a Unix socket: nothing to resolve. */
    readonly kind: "static";
    /** The upstream URL as configured. */
    readonly url: string;
    /** Where to connect. */
    readonly address: EndpointAddress;
    /** Whether to speak TLS. */
    readonly tls: boolean;
    /** `host[:port]` of the URL: the Host header, and the name TLS verifies. */
    readonly authority: string;
    /** Relative share of traffic. */
    readonly weight: number;
  }
  | {
    /** Every A and AAAA record of a host name is an endpoint. */
    readonly kind: "dns";
    /** The upstream URL as configured. */
    readonly url: string;
    /** The name to resolve, as the URL wrote it. */
    readonly hostname: string;
    /** The port of every endpoint. */
    readonly port: number;
    /** Whether to speak TLS. */
    readonly tls: boolean;
    /** `host[:port]` of the URL: the Host header. */
    readonly authority: string;
    /** Relative share of traffic, of each endpoint. */
    readonly weight: number;
  }
  | {
    /** Every SRV record's target address and port is an endpoint. */
    readonly kind: "srv";
    /** The upstream URL as configured. */
    readonly url: string;
    /** The SRV name: `_http._tcp.users.default.svc.cluster.local`. */
    readonly name: string;
    /** Whether to speak TLS. */
    readonly tls: boolean;
    /** Multiplies each record's weight. */
    readonly weight: number;
  };

/** Where an endpoint listens. */
export type EndpointAddress =
  | {
    readonly transport: "tcp";
    /** An IP address. */
    readonly hostname: string;
    readonly port: number;
  }
  | { readonly transport: "unix"; readonly path: string };

/** One endpoint discovery found. */
export interface DiscoveredEndpoint {
  /**
   * Identity across refreshes and reloads: the same key is the same
   * endpoint, whose state is kept. Made of TLS or not, the server name and
   * the address: `tls users.internal 10.0.0.1:8443`,
   * `tcp users.internal [fd00::1]:8080`, `tcp localhost unix:/run/users.sock`.
   */
  readonly key: string;
  /** The upstream URL it came from. */
  readonly url: string;
  /** The kind of that upstream. */
  readonly source: "static" | "dns" | "srv";
  /** Where to connect: an IP address and port, or a Unix socket. */
  readonly address: EndpointAddress;
  /** Whether to speak TLS. */
  readonly tls: boolean;
  /**
   * The name TLS verifies and SNI sends: the URL's host, or the SRV target;
   * lower case, without a final dot.
   */
  readonly serverName: string;
  /** The Host header: the URL's `host[:port]`, or `target:port` for SRV. */
  readonly authority: string;
  /** Relative share of traffic: the source's weight times the SRV record's (0 counts as 1). */
  readonly weight: number;
  /** SRV priority, lowest preferred; 0 for other sources. */
  readonly priority: number;
}

/** How a {@linkcode Discovery} resolves and whom it tells. */
export interface DiscoveryOptions {
  /** Time between the end of one round of lookups and the start of the next, in milliseconds. */
  readonly refreshMs: number;
  /** The DNS server to ask. @default the servers of the system's resolv.conf */
  readonly resolver?: NameServer;
  /** Asks DNS instead of `Deno.resolveDns`, for tests and embedding; `resolver` is then unused. */
  readonly dnsClient?: DnsClient;
  /** Read before DNS, every round. @default {"/etc/hosts"} */
  readonly hostsFile?: string;
  /** Its `search`, `domain` and `ndots` apply to every name, every round. @default {"/etc/resolv.conf"} */
  readonly resolvConf?: string;
  /** Longest time one source's lookup may take, in milliseconds, search list and SRV targets included. @default {5000} */
  readonly lookupTimeoutMs?: number;
  /** After a round whose endpoints differ from the last round's, with all of them. Must not throw. */
  readonly onChange?: (endpoints: readonly DiscoveredEndpoint[]) => void;
  /** The first failure of a run of failed lookups of `url`. Must not throw. */
  readonly onLookupError?: (url: string, message: string) => void;
  /** The first good lookup of `url` after a run of failures. Must not throw. */
  readonly onLookupRecovered?: (url: string) => void;
  /** After every round, changed or not: for metrics and tests. Must not throw. */
  readonly onRefresh?: (endpoints: readonly DiscoveredEndpoint[]) => void;
}

/** The longest a lookup may take unless the options say otherwise, in milliseconds. */
export const DEFAULT_LOOKUP_TIMEOUT = 5_000;

/** The last good answer for a host name: its addresses. */
interface HostAnswer {
  /** The name that answered (a search domain may have been added). */
  readonly name: string;
  readonly addresses: readonly string[];
}

/** The last good answer for an SRV name: its records and their targets' addresses. */
interface SrvAnswer {
  readonly records: readonly Deno.SrvRecord[];
  readonly targets: ReadonlyMap<string, readonly string[]>;
}

/** One round's result for one name: the answer to use, and what went wrong. */
interface LookupResult<T> {
  readonly answer: T | undefined;
  readonly error: string | null;
}

/**
 * Discovers the endpoints of one service's upstream sources, and keeps them
 * current: {@linkcode Discovery.start} resolves every source in parallel,
 * then every `refreshMs` they are resolved again. `onChange` hears of every
 * change. The refresh timer is unref'd: a discovery waiting for its next
 * round never keeps a process alive; a lookup in flight does, for at most
 * `lookupTimeoutMs`.
 *
 * @example Static addresses and names from the hosts file
 * ```ts
 * import assert from "node:assert/strict";
 * import { Discovery } from "./discovery.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/hosts`, "10.0.0.1 users.internal\n10.0.0.2 users.internal\n");
 * const discovery = new Discovery([
 *   {
 *     kind: "dns",
 *     url: "http://users.internal:8080",
 *     hostname: "users.internal",
 *     port: 8080,
 *     tls: false,
 *     authority: "users.internal:8080",
 *     weight: 1,
 *   },
 *   {
 *     kind: "static",
 *     url: "https://10.0.0.9:8443",
 *     address: { transport: "tcp", hostname: "10.0.0.9", port: 8443 },
 *     tls: true,
 *     authority: "10.0.0.9:8443",
 *     weight: 2,
 *   },
 * ], {
 *   refreshMs: 5_000,
 *   hostsFile: `${dir}/hosts`,
 *   resolvConf: `${dir}/resolv.conf`, // missing: no search domains
 *   // Nothing here needs DNS; a client that is asked fails the example.
 *   dnsClient: {
 *     addresses: () => Promise.reject(new Error("DNS was asked")),
 *     srv: () => Promise.reject(new Error("DNS was asked")),
 *   },
 * });
 * const endpoints = await discovery.start();
 * await discovery.stop();
 * assert.deepEqual(endpoints.map((e) => [e.key, e.weight]), [
 *   ["tcp users.internal 10.0.0.1:8080", 1],
 *   ["tcp users.internal 10.0.0.2:8080", 1],
 *   ["tls 10.0.0.9 10.0.0.9:8443", 2],
 * ]);
 * assert.equal(endpoints[0]!.authority, "users.internal:8080");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @example SRV records: each target's addresses on the record's port
 * ```ts
 * import assert from "node:assert/strict";
 * import { Discovery } from "./discovery.ts";
 * const records = [
 *   { priority: 0, weight: 3, port: 8080, target: "users-1.test." },
 *   { priority: 1, weight: 0, port: 9090, target: "users-2.test." },
 * ];
 * const addresses: Record<string, string> = {
 *   "users-1.test.": "10.0.0.1",
 *   "users-2.test.": "10.0.0.2",
 * };
 * const discovery = new Discovery([
 *   { kind: "srv", url: "http+srv://_http._tcp.users.test", name: "_http._tcp.users.test", tls: false, weight: 2 },
 * ], {
 *   refreshMs: 5_000,
 *   hostsFile: "/nonexistent/hosts",
 *   resolvConf: "/nonexistent/resolv.conf",
 *   dnsClient: {
 *     srv: async () => records,
 *     addresses: async (fqdn, type) => {
 *       if (type === "A" && addresses[fqdn]) return [addresses[fqdn]];
 *       throw new Deno.errors.NotFound();
 *     },
 *   },
 * });
 * const endpoints = await discovery.start();
 * await discovery.stop();
 * assert.deepEqual(
 *   endpoints.map((e) => [e.key, e.authority, e.priority, e.weight]),
 *   [
 *     ["tcp users-1.test 10.0.0.1:8080", "users-1.test:8080", 0, 6],
 *     ["tcp users-2.test 10.0.0.2:9090", "users-2.test:9090", 1, 2],
 *   ],
 * );
 * ```
 */
export class Discovery {
  readonly #options: DiscoveryOptions;
  readonly #client: DnsClient;
  readonly #hostsFile: string;
  readonly #resolvConf: string;
  readonly #lookupTimeoutMs: number;
  #sources: readonly UpstreamSource[];
  /** Last good answers by lookup (`host NAME` or `srv NAME`), kept while a source uses them. */
  readonly #answers = new Map<string, HostAnswer | SrvAnswer>();
  /** Sources whose lookups are failing, by URL: reported once per run. */
  readonly #failing = new Set<string>();
  /** Lookups in flight, aborted by stop(). */
  readonly #inFlight = new Set<AbortController>();
  #endpoints: readonly DiscoveredEndpoint[] = [];
  #signature = JSON.stringify([]);
  /** Rounds run one after another: a round and an update never interleave. */
  #rounds: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #refreshMs: number;
  #started = false;
  #stopped = false;

  /** Discovers the endpoints of `sources`; nothing happens until {@linkcode Discovery.start}. */
  constructor(sources: readonly UpstreamSource[], options: DiscoveryOptions) {
    this.#sources = sources;
    this.#options = options;
    this.#refreshMs = options.refreshMs;
    this.#client = options.dnsClient ?? denoDnsClient(options.resolver);
    this.#hostsFile = options.hostsFile ?? "/etc/hosts";
    this.#resolvConf = options.resolvConf ?? "/etc/resolv.conf";
    this.#lookupTimeoutMs = options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT;
  }

  /** The endpoints of the last round, sorted by key. */
  get endpoints(): readonly DiscoveredEndpoint[] {
    return this.#endpoints;
  }

  /**
   * Resolves every source (in parallel, each within `lookupTimeoutMs`), then
   * keeps resolving every `refreshMs`. Resolves with the first endpoints,
   * which `onChange` does not repeat; a source whose lookup failed has none,
   * and `onLookupError` has said why.
   */
  async start(): Promise<readonly DiscoveredEndpoint[]> {
    if (this.#started) throw new Error("Discovery already started");
    this.#started = true;
    await this.#queueRound(false);
    this.#schedule();
    return this.#endpoints;
  }

  /**
   * Replaces the sources and the refresh interval (a route file changed) and
   * resolves them at once. Sources that look up a name a previous source did
   * keep its last good answer, so a reload during a DNS outage loses no
   * endpoints. Resolves with the new endpoints, after `onChange` if they
   * changed.
   */
  async update(
    sources: readonly UpstreamSource[],
    refreshMs: number = this.#refreshMs,
  ): Promise<readonly DiscoveredEndpoint[]> {
    this.#sources = sources;
    this.#refreshMs = refreshMs;
    if (!this.#started || this.#stopped) return this.#endpoints;
    clearTimeout(this.#timer);
    await this.#queueRound(true);
    this.#schedule();
    return this.#endpoints;
  }

  /**
   * Ends refreshing: clears the timer and aborts lookups in flight, whose
   * answers are ignored. Resolves once the round in flight has ended, so no
   * lookup outlives it.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const reason = new DOMException("Discovery stopped", "AbortError");
    for (const controller of this.#inFlight) controller.abort(reason);
    await this.#rounds;
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    const timer = setTimeout(() => {
      this.#timer = undefined;
      this.#queueRound(true).finally(() => this.#schedule());
    }, this.#refreshMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #queueRound(notify: boolean): Promise<void> {
    const round = this.#rounds.then(() => this.#round(notify));
    // The chain must go on after a round whose callback threw; the caller
    // of this round still sees the error.
    this.#rounds = round.catch(() => {});
    return round;
  }

  /** Resolves every source once, then reports and applies the result. */
  async #round(notify: boolean): Promise<void> {
    if (this.#stopped) return;
    const sources = this.#sources;
    const lookups = new Map<
      string,
      Exclude<UpstreamSource, { kind: "static" }>
    >();
    for (const source of sources) {
      if (source.kind !== "static") lookups.set(lookupKey(source), source);
    }
    const results = new Map<string, LookupResult<HostAnswer | SrvAnswer>>();
    if (lookups.size > 0) {
      const files = await readResolverFiles(this.#hostsFile, this.#resolvConf);
      if (this.#stopped) return;
      const context: LookupContext = { ...files, client: this.#client };
      await Promise.all(
        [...lookups].map(async ([key, source]) => {
          results.set(key, await this.#lookup(key, source, context));
        }),
      );
      if (this.#stopped) return;
    }
    for (const [key, result] of results) {
      if (result.answer) this.#answers.set(key, result.answer);
    }
    this.#report(sources, results);
    const endpoints = buildEndpoints(sources, this.#answers);
    this.#forgetUnused();
    const signature = JSON.stringify(endpoints);
    const changed = signature !== this.#signature;
    this.#endpoints = endpoints;
    this.#signature = signature;
    if (changed && notify) this.#options.onChange?.(endpoints);
    this.#options.onRefresh?.(endpoints);
  }

  /** One source's lookup, bounded by `lookupTimeoutMs`; never rejects. */
  async #lookup(
    key: string,
    source: Exclude<UpstreamSource, { kind: "static" }>,
    context: LookupContext,
  ): Promise<LookupResult<HostAnswer | SrvAnswer>> {
    const controller = new AbortController();
    this.#inFlight.add(controller);
    const ms = this.#lookupTimeoutMs;
    const timer = setTimeout(
      () =>
        controller.abort(
          new DOMException(`Lookup took longer than ${ms}ms`, "TimeoutError"),
        ),
      ms,
    );
    // This timer stays ref'd: a lookup in flight has someone awaiting it
    // (start() before listeners open), and the deadline is what guarantees
    // an answer. It lives at most `lookupTimeoutMs`, and stop() ends it.
    try {
      const previous = this.#answers.get(key);
      return source.kind === "dns"
        ? await lookupHost(
          source.hostname,
          previous as HostAnswer | undefined,
          context,
          controller.signal,
        )
        : await lookupSrv(
          source.name,
          previous as SrvAnswer | undefined,
          context,
          controller.signal,
        );
    } finally {
      clearTimeout(timer);
      this.#inFlight.delete(controller);
    }
  }

  /** Tells of the first failure of a run, and of the recovery after one. */
  #report(
    sources: readonly UpstreamSource[],
    results: ReadonlyMap<string, LookupResult<unknown>>,
  ): void {
    const urls = new Set<string>();
    for (const source of sources) {
      if (source.kind === "static" || urls.has(source.url)) continue;
      urls.add(source.url);
      const error = results.get(lookupKey(source))?.error ?? null;
      if (error !== null && !this.#failing.has(source.url)) {
        this.#failing.add(source.url);
        this.#options.onLookupError?.(source.url, error);
      } else if (error === null && this.#failing.delete(source.url)) {
        this.#options.onLookupRecovered?.(source.url);
      }
    }
    for (const url of this.#failing) {
      if (!urls.has(url)) this.#failing.delete(url);
    }
  }

  /** Drops answers no current source needs; an update may have removed some. */
  #forgetUnused(): void {
    const used = new Set(
      this.#sources.filter((s) => s.kind !== "static").map(lookupKey),
    );
    for (const key of this.#answers.keys()) {
      if (!used.has(key)) this.#answers.delete(key);
    }
  }
}

function lookupKey(
  source: Exclude<UpstreamSource, { kind: "static" }>,
): string {
  return source.kind === "dns"
    ? `host ${source.hostname.toLowerCase()}`
    : `srv ${source.name.toLowerCase()}`;
}

/**
 * Resolves a host name. An address family that failed while the other
 * answered keeps its previous addresses, so a resolver that drops AAAA
 * questions now and then does not make IPv6 endpoints come and go.
 */
async function lookupHost(
  hostname: string,
  previous: HostAnswer | undefined,
  context: LookupContext,
  signal: AbortSignal,
): Promise<LookupResult<HostAnswer>> {
  try {
    const found = await resolveHost(hostname, context, signal);
    if (found.failed.length === 0) {
      return { answer: found, error: null };
    }
    const kept = previous?.name === found.name
      ? previous.addresses.filter((address) =>
        found.failed.includes(address.includes(":") ? "AAAA" : "A")
      )
      : [];
    return {
      answer: {
        name: found.name,
        addresses: [...new Set([...found.addresses, ...kept])],
      },
      error: `Cannot resolve "${hostname}" fully: ${found.problem}`,
    };
  } catch (error) {
    return { answer: previous, error: messageOf(error) };
  }
}

/**
 * Resolves an SRV name and its targets. A target that cannot be resolved
 * keeps its previous addresses; the lookup still counts as failed.
 */
async function lookupSrv(
  name: string,
  previous: SrvAnswer | undefined,
  context: LookupContext,
  signal: AbortSignal,
): Promise<LookupResult<SrvAnswer>> {
  let records: readonly Deno.SrvRecord[];
  try {
    records = (await resolveSrv(name, context, signal)).records;
  } catch (error) {
    return { answer: previous, error: messageOf(error) };
  }
  const names = [...new Set(records.map((record) => record.target))];
  const errors: string[] = [];
  const targets = new Map<string, readonly string[]>();
  await Promise.all(names.map(async (target) => {
    const before = previous?.targets.get(target);
    // Targets are fully qualified: the search list must not apply.
    const result = await lookupHost(
      `${target}.`,
      before && { name: target, addresses: before },
      context,
      signal,
    );
    if (result.error !== null) errors.push(result.error);
    targets.set(target, result.answer?.addresses ?? []);
  }));
  return {
    answer: { records, targets },
    error: errors.length === 0
      ? null
      : `Cannot resolve SRV targets of "${name}": ${errors.join("; ")}`,
  };
}

/** The endpoints of `sources` with the answers at hand, one per key, sorted by key. */
function buildEndpoints(
  sources: readonly UpstreamSource[],
  answers: ReadonlyMap<string, HostAnswer | SrvAnswer>,
): DiscoveredEndpoint[] {
  const byKey = new Map<string, DiscoveredEndpoint>();
  // A key found twice (one URL listed twice, two SRV records of one target
  // and port) is one endpoint: the best priority, the weights of that
  // priority added up.
  const add = (endpoint: DiscoveredEndpoint) => {
    const known = byKey.get(endpoint.key);
    if (!known || endpoint.priority < known.priority) {
      byKey.set(endpoint.key, endpoint);
    } else if (endpoint.priority === known.priority) {
      byKey.set(endpoint.key, {
        ...known,
        weight: known.weight + endpoint.weight,
      });
    }
  };
  for (const source of sources) {
    if (source.kind === "static") {
      const address = source.address.transport === "tcp"
        ? {
          ...source.address,
          hostname: source.address.hostname.replace(/^\[(.*)\]$/, "$1"),
        }
        : source.address;
      add(endpointAt(source, address, hostOf(source.authority), {
        authority: source.authority,
        weight: source.weight,
        priority: 0,
      }));
    } else if (source.kind === "dns") {
      const answer = answers.get(lookupKey(source)) as HostAnswer | undefined;
      const serverName = source.hostname.toLowerCase().replace(/\.$/, "");
      for (const hostname of answer?.addresses ?? []) {
        add(endpointAt(
          source,
          { transport: "tcp", hostname, port: source.port },
          serverName,
          {
            authority: source.authority,
            weight: source.weight,
            priority: 0,
          },
        ));
      }
    } else {
      const answer = answers.get(lookupKey(source)) as SrvAnswer | undefined;
      for (const record of answer?.records ?? []) {
        for (const hostname of answer?.targets.get(record.target) ?? []) {
          add(endpointAt(
            source,
            { transport: "tcp", hostname, port: record.port },
            record.target,
            {
              authority: `${record.target}:${record.port}`,
              weight: source.weight * Math.max(record.weight, 1),
              priority: record.priority,
            },
          ));
        }
      }
    }
  }
  return [...byKey.values()].sort((a, b) =>
    a.key < b.key ? -1 : a.key > b.key ? 1 : 0
  );
}

function endpointAt(
  source: UpstreamSource,
  address: EndpointAddress,
  serverName: string,
  rest: Pick<DiscoveredEndpoint, "authority" | "weight" | "priority">,
): DiscoveredEndpoint {
  const where = address.transport === "unix"
    ? `unix:${address.path}`
    : address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
  return {
    key: `${source.tls ? "tls" : "tcp"} ${serverName} ${where}`,
    url: source.url,
    source: source.kind,
    address,
    tls: source.tls,
    serverName,
    ...rest,
  };
}

/** The host of `host[:port]`, lower case, without brackets or a final dot. */
function hostOf(authority: string): string {
  const host = authority.startsWith("[")
    ? authority.slice(1, authority.indexOf("]"))
    : authority.replace(/:\d*$/, "");
  return host.toLowerCase().replace(/\.$/, "");
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Name resolution as getaddrinfo does it, on `Deno.resolveDns`: the hosts file
 * first, then A and AAAA through DNS with resolv.conf's search list; SRV
 * records likewise. legate resolves names itself because every address is an
 * endpoint with its own state, and because Deno's DNS has no hosts file and no
 * search list once a name server is given.
 *
 * This module answers one question at a time; it keeps no state and no
 * timers. Refreshing, last good answers and reporting are discovery's.
 * @module
 */

/** A DNS server to ask instead of the system's: an IP address and a port. */
export interface NameServer {
  /** An IPv4 or IPv6 address (Deno cannot take a name here). */
  readonly hostname: string;
  /** UDP and TCP port, usually 53. */
  readonly port: number;
}

/**
 * Asks DNS one question about a fully qualified name (with its final dot).
 * Both methods reject with `Deno.errors.NotFound` when the name has no such
 * records, and with the signal's reason when it aborts.
 */
export interface DnsClient {
  /** The A or AAAA records of `fqdn`. */
  addresses(
    fqdn: string,
    type: "A" | "AAAA",
    signal: AbortSignal,
  ): Promise<string[]>;
  /** The SRV records of `fqdn`. */
  srv(fqdn: string, signal: AbortSignal): Promise<Deno.SrvRecord[]>;
}

/**
 * A {@linkcode DnsClient} over `Deno.resolveDns`: asks `nameServer`, or the
 * servers of the system's resolv.conf when none is given.
 *
 * @example Asks the given server; an aborted question rejects with the reason
 * ```ts
 * import assert from "node:assert/strict";
 * import { denoDnsClient } from "./dns.ts";
 * const client = denoDnsClient({ hostname: "127.0.0.1", port: 53 });
 * const controller = new AbortController();
 * const reason = new DOMException("Lookup took longer than 1ms", "TimeoutError");
 * controller.abort(reason);
 * await assert.rejects(
 *   () => client.addresses("users.test.", "A", controller.signal),
 *   (error) => error === reason,
 * );
 * assert.throws(
 *   () => denoDnsClient({ hostname: "dns.internal", port: 53 }),
 *   TypeError,
 * );
 * ```
 */
export function denoDnsClient(nameServer?: NameServer): DnsClient {
  let options: { nameServer?: { ipAddr: string; port: number } } = {};
  if (nameServer) {
    const ipAddr = ipAddress(nameServer.hostname);
    if (ipAddr === null) {
      throw new TypeError(
        `Cannot use DNS server "${nameServer.hostname}": an IP address is required`,
      );
    }
    options = { nameServer: { ipAddr, port: nameServer.port } };
  }
  return {
    // An aborted lookup asks nothing more: later search names and SRV
    // targets are not sent once the deadline has passed.
    async addresses(fqdn, type, signal) {
      signal.throwIfAborted();
      return await Deno.resolveDns(fqdn, type, { ...options, signal });
    },
    async srv(fqdn, signal) {
      signal.throwIfAborted();
      return await Deno.resolveDns(fqdn, "SRV", { ...options, signal });
    },
  };
}

/** The parts of resolv.conf that decide which names are asked. */
export interface ResolvConf {
  /** Domains tried after (or before) a name, without final dots. */
  readonly search: readonly string[];
  /** Names with fewer dots than this try the search domains first. */
  readonly ndots: number;
}

/** What resolv.conf says when it says nothing: no search domains, ndots 1. */
export const DEFAULT_RESOLV_CONF: ResolvConf = { search: [], ndots: 1 };

/**
 * Reads the search list and `ndots` from resolv.conf text, as glibc does: the
 * last `search` or `domain` line wins, `ndots` is capped at 15.
 *
 * @example A Kubernetes pod's resolv.conf
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseResolvConf } from "./dns.ts";
 * const conf = parseResolvConf(
 *   "nameserver 10.96.0.10\n" +
 *     "search default.svc.cluster.local svc.cluster.local cluster.local\n" +
 *     "options ndots:5\n",
 * );
 * assert.deepEqual(conf, {
 *   search: ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
 *   ndots: 5,
 * });
 * assert.deepEqual(parseResolvConf("domain corp.example.\n"), {
 *   search: ["corp.example"],
 *   ndots: 1,
 * });
 * ```
 */
export function parseResolvConf(text: string): ResolvConf {
  let search: string[] = [];
  let ndots = DEFAULT_RESOLV_CONF.ndots;
  for (const line of text.split("\n")) {
    const [keyword, ...values] = line.replace(/[#;].*/, "").trim().split(
      /\s+/,
    );
    if (keyword === "search" || keyword === "domain") {
      search = values.map((domain) => domain.replace(/\.$/, "").toLowerCase())
        .filter((domain) => domain !== "");
      if (keyword === "domain") search = search.slice(0, 1);
    } else if (keyword === "options") {
      for (const option of values) {
        const match = /^ndots:(\d+)$/.exec(option);
        if (match) ndots = Math.min(Number(match[1]), 15);
      }
    }
  }
  return { search, ndots };
}

/** Addresses by lower-case host name, in file order, as a hosts file lists them. */
export type HostsTable = ReadonlyMap<string, readonly string[]>;

/**
 * Reads a hosts file: an address, then its names, on each line; `#` starts a
 * comment. Lines whose address is not an IP address are skipped.
 *
 * @example Names and aliases map to their addresses
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHosts } from "./dns.ts";
 * const hosts = parseHosts(
 *   "127.0.0.1 localhost\n" +
 *     "::1 localhost ip6-localhost # loopback\n" +
 *     "10.1.2.3 users.internal users\n" +
 *     "not-an-address broken\n",
 * );
 * assert.deepEqual(hosts.get("localhost"), ["127.0.0.1", "::1"]);
 * assert.deepEqual(hosts.get("users"), ["10.1.2.3"]);
 * assert.equal(hosts.get("broken"), undefined);
 * ```
 */
export function parseHosts(text: string): HostsTable {
  const table = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [address, ...names] = line.replace(/#.*/, "").trim().split(/\s+/);
    const ip = address === undefined ? null : ipAddress(address);
    if (ip === null) continue;
    for (const name of names) {
      const key = name.toLowerCase();
      const addresses = table.get(key) ?? [];
      if (!addresses.includes(ip)) addresses.push(ip);
      table.set(key, addresses);
    }
  }
  return table;
}

/**
 * The IP address `text` spells, in its usual form (IPv6 compressed, without
 * brackets), or null when it is not one.
 *
 * @example IPv4, IPv6 and names
 * ```ts
 * import assert from "node:assert/strict";
 * import { ipAddress } from "./dns.ts";
 * assert.equal(ipAddress("10.0.0.1"), "10.0.0.1");
 * assert.equal(ipAddress("[0:0::1]"), "::1");
 * assert.equal(ipAddress("FE80:0:0:0:0:0:0:1"), "fe80::1");
 * assert.equal(ipAddress("users.internal"), null);
 * assert.equal(ipAddress("256.0.0.1"), null);
 * ```
 */
export function ipAddress(text: string): string | null {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const octets = v4.slice(1).map(Number);
    return octets.every((octet) => octet <= 255) ? octets.join(".") : null;
  }
  const v6 = text.startsWith("[") && text.endsWith("]")
    ? text.slice(1, -1)
    : text;
  if (!v6.includes(":") || !/^[0-9a-fA-F:.]+$/.test(v6)) return null;
  // The URL parser is a complete IPv6 parser and prints the canonical form.
  try {
    return new URL(`http://[${v6}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

/**
 * The fully qualified names (with final dots) to ask DNS for `name`, in order,
 * as glibc's `res_search` tries them: a name with a final dot as it is; a name
 * with fewer dots than `ndots` with each search domain first, then as it is;
 * any other name as it is first, then with each search domain.
 *
 * @example Kubernetes short names try the cluster domains first
 * ```ts
 * import assert from "node:assert/strict";
 * import { searchNames } from "./dns.ts";
 * const conf = { search: ["default.svc.cluster.local", "cluster.local"], ndots: 5 };
 * assert.deepEqual(searchNames("users", conf), [
 *   "users.default.svc.cluster.local.",
 *   "users.cluster.local.",
 *   "users.",
 * ]);
 * assert.deepEqual(searchNames("users.example.com.", conf), ["users.example.com."]);
 * assert.deepEqual(searchNames("api.example.com", { search: ["corp"], ndots: 1 }), [
 *   "api.example.com.",
 *   "api.example.com.corp.",
 * ]);
 * ```
 */
export function searchNames(name: string, conf: ResolvConf): string[] {
  if (name.endsWith(".")) return [name];
  const searched = conf.search.map((domain) => `${name}.${domain}.`);
  const dots = name.split(".").length - 1;
  return dots < conf.ndots
    ? [...searched, `${name}.`]
    : [`${name}.`, ...searched];
}

/**
 * A failed lookup: what was asked and why it failed. `notFound` tells a name
 * that does not exist from a DNS server that could not be asked.
 *
 * @example A name with no records
 * ```ts
 * import assert from "node:assert/strict";
 * import { DnsLookupError, resolveHost } from "./dns.ts";
 * const context = {
 *   hosts: new Map(),
 *   conf: { search: [], ndots: 1 },
 *   client: {
 *     addresses: () => Promise.reject(new Deno.errors.NotFound()),
 *     srv: () => Promise.reject(new Deno.errors.NotFound()),
 *   },
 * };
 * await assert.rejects(
 *   () => resolveHost("gone.test", context, new AbortController().signal),
 *   (error) =>
 *     error instanceof DnsLookupError && error.notFound &&
 *     error.host === "gone.test" &&
 *     error.message === 'Cannot resolve "gone.test": no A or AAAA records for "gone.test."',
 * );
 * ```
 */
export class DnsLookupError extends Error {
  /** The name as given to the lookup. */
  readonly host: string;
  /** True when DNS answered that no such records exist (NXDOMAIN or no data). */
  readonly notFound: boolean;

  /** Makes an error for `host`; `notFound` when DNS had no such records. */
  constructor(
    message: string,
    host: string,
    notFound: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "DnsLookupError";
    this.host = host;
    this.notFound = notFound;
  }
}

/** What a lookup reads besides DNS itself. */
export interface LookupContext {
  /** The hosts file's entries, asked before DNS. */
  readonly hosts: HostsTable;
  /** The search list and ndots. */
  readonly conf: ResolvConf;
  /** How DNS is asked. */
  readonly client: DnsClient;
}

/** The addresses a host name resolved to. */
export interface HostAddresses {
  /** The name that answered, without a final dot: a search domain may have been added. */
  readonly name: string;
  /** Where the answer came from. */
  readonly from: "address" | "hosts" | "localhost" | "dns";
  /** IP addresses in their usual form, IPv4 before IPv6, each once. */
  readonly addresses: readonly string[];
  /**
   * Address families whose question failed with an error (not "no such
   * records") while the other family answered: their addresses may be missing.
   */
  readonly failed: readonly ("A" | "AAAA")[];
  /** Why those questions failed, or null when none did. */
  readonly problem: string | null;
}

/**
 * Resolves a host name as getaddrinfo would: an IP address is itself; a name
 * the hosts file lists gets the hosts file's addresses; `localhost` and names
 * under it are loopback (RFC 6761) and never asked; any other name is asked
 * for A and AAAA records under each of its {@linkcode searchNames} in turn,
 * until one has records. Rejects with a {@linkcode DnsLookupError}; a lookup
 * that fails other than with "no such records" ends the search, as glibc's
 * does, so an unreachable server never lets a later search domain answer.
 *
 * @example The hosts file first, then DNS with the search list
 * ```ts
 * import assert from "node:assert/strict";
 * import { type DnsClient, parseHosts, resolveHost } from "./dns.ts";
 * const records: Record<string, string[]> = {
 *   "A users.svc.test.": ["10.0.0.1", "10.0.0.2"],
 *   "AAAA users.svc.test.": ["fd00::1"],
 * };
 * const asked: string[] = [];
 * const client: DnsClient = {
 *   addresses(fqdn, type) {
 *     asked.push(`${type} ${fqdn}`);
 *     const found = records[`${type} ${fqdn}`];
 *     return found ? Promise.resolve(found) : Promise.reject(new Deno.errors.NotFound());
 *   },
 *   srv: () => Promise.reject(new Deno.errors.NotFound()),
 * };
 * const context = {
 *   hosts: parseHosts("10.9.9.9 users.svc.test billing\n"),
 *   conf: { search: ["svc.test"], ndots: 1 },
 *   client,
 * };
 * const signal = new AbortController().signal;
 * const users = await resolveHost("users", context, signal);
 * assert.equal(users.name, "users.svc.test");
 * assert.deepEqual(users.addresses, ["10.0.0.1", "10.0.0.2", "fd00::1"]);
 * assert.deepEqual(asked, ["A users.svc.test.", "AAAA users.svc.test."]);
 * // The hosts file is read for the name as written, and wins over DNS.
 * assert.deepEqual((await resolveHost("billing", context, signal)).addresses, ["10.9.9.9"]);
 * ```
 */
export async function resolveHost(
  host: string,
  context: LookupContext,
  signal: AbortSignal,
): Promise<HostAddresses> {
  const literal = ipAddress(host);
  if (literal !== null) {
    return {
      name: literal,
      from: "address",
      addresses: [literal],
      failed: [],
      problem: null,
    };
  }
  const name = host.toLowerCase();
  const bare = name.replace(/\.$/, "");
  const listed = context.hosts.get(name) ?? context.hosts.get(bare);
  if (listed) {
    return {
      name: bare,
      from: "hosts",
      addresses: ordered(listed),
      failed: [],
      problem: null,
    };
  }
  if (bare === "localhost" || bare.endsWith(".localhost")) {
    return {
      name: bare,
      from: "localhost",
      addresses: ["127.0.0.1", "::1"],
      failed: [],
      problem: null,
    };
  }
  const tried: string[] = [];
  for (const fqdn of searchNames(name, context.conf)) {
    tried.push(fqdn);
    const [a, aaaa] = await Promise.allSettled([
      context.client.addresses(fqdn, "A", signal),
      context.client.addresses(fqdn, "AAAA", signal),
    ]);
    const addresses: string[] = [];
    const failed: ("A" | "AAAA")[] = [];
    const reasons: string[] = [];
    for (const [type, result] of [["A", a], ["AAAA", aaaa]] as const) {
      if (result.status === "fulfilled") {
        for (const address of result.value) {
          const ip = ipAddress(address);
          if (ip !== null) addresses.push(ip);
        }
      } else if (!(result.reason instanceof Deno.errors.NotFound)) {
        failed.push(type);
        reasons.push(reasonText(result.reason, signal));
      }
    }
    const problem = failed.length === 0
      ? null
      : new Set(reasons).size === 1
      ? `asking "${fqdn}" for ${failed.join(" and ")} records failed: ${
        reasons[0]
      }`
      : `asking "${fqdn}" for A records failed: ${
        reasons[0]
      }; for AAAA records: ${reasons[1]}`;
    if (addresses.length > 0) {
      return {
        name: fqdn.slice(0, -1),
        from: "dns",
        addresses: ordered(addresses),
        failed,
        problem,
      };
    }
    if (problem !== null) {
      throw new DnsLookupError(
        `Cannot resolve "${host}": ${problem}`,
        host,
        false,
      );
    }
  }
  throw new DnsLookupError(
    `Cannot resolve "${host}": no A or AAAA records for ${quoted(tried)}`,
    host,
    true,
  );
}

/** The SRV records of a name, as found. */
export interface SrvRecords {
  /** The name that answered, without a final dot: a search domain may have been added. */
  readonly name: string;
  /**
   * The records, targets lower case and without final dots. Records whose
   * target is "." (RFC 2782: the service is not offered) are left out.
   */
  readonly records: readonly Deno.SrvRecord[];
}

/**
 * Looks up the SRV records of `name` under each of its
 * {@linkcode searchNames} in turn, until one has records. The targets are
 * names still to resolve with {@linkcode resolveHost}. Rejects with a
 * {@linkcode DnsLookupError}.
 *
 * @example Records with their priorities, weights, ports and targets
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveSrv } from "./dns.ts";
 * const context = {
 *   hosts: new Map(),
 *   conf: { search: [], ndots: 1 },
 *   client: {
 *     addresses: () => Promise.reject(new Deno.errors.NotFound()),
 *     srv: (fqdn: string) =>
 *       Promise.resolve(fqdn === "_http._tcp.users.test."
 *         ? [
 *           { priority: 0, weight: 5, port: 8080, target: "Users-1.test." },
 *           { priority: 1, weight: 0, port: 8080, target: "." },
 *         ]
 *         : []),
 *   },
 * };
 * const found = await resolveSrv("_http._tcp.users.test", context, new AbortController().signal);
 * assert.deepEqual(found, {
 *   name: "_http._tcp.users.test",
 *   records: [{ priority: 0, weight: 5, port: 8080, target: "users-1.test" }],
 * });
 * ```
 */
export async function resolveSrv(
  name: string,
  context: LookupContext,
  signal: AbortSignal,
): Promise<SrvRecords> {
  const tried: string[] = [];
  for (const fqdn of searchNames(name.toLowerCase(), context.conf)) {
    tried.push(fqdn);
    let records: Deno.SrvRecord[];
    try {
      records = await context.client.srv(fqdn, signal);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw new DnsLookupError(
        `Cannot resolve "${name}": asking "${fqdn}" for SRV records failed: ${
          reasonText(error, signal)
        }`,
        name,
        false,
      );
    }
    if (records.length === 0) continue;
    return {
      name: fqdn.slice(0, -1),
      records: records
        .map((record) => ({
          ...record,
          target: record.target.toLowerCase().replace(/\.$/, ""),
        }))
        .filter((record) => record.target !== ""),
    };
  }
  throw new DnsLookupError(
    `Cannot resolve "${name}": no SRV records for ${quoted(tried)}`,
    name,
    true,
  );
}

/** The hosts file and resolv.conf, read for one round of lookups. */
export interface ResolverFiles {
  /** The hosts file's entries; empty when it cannot be read. */
  readonly hosts: HostsTable;
  /** The search list and ndots; the defaults when it cannot be read. */
  readonly conf: ResolvConf;
}

/**
 * Reads the hosts file and resolv.conf. A file that is missing or unreadable
 * counts as empty, as it does for getaddrinfo: a `FROM scratch` image may have
 * neither.
 *
 * @example Files that do not exist give empty answers
 * ```ts
 * import assert from "node:assert/strict";
 * import { readResolverFiles } from "./dns.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/hosts`, "127.0.0.1 localhost\n");
 * const files = await readResolverFiles(`${dir}/hosts`, `${dir}/missing.conf`);
 * assert.deepEqual(files.hosts.get("localhost"), ["127.0.0.1"]);
 * assert.deepEqual(files.conf, { search: [], ndots: 1 });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readResolverFiles(
  hostsFile: string,
  resolvConf: string,
): Promise<ResolverFiles> {
  const [hosts, conf] = await Promise.all([
    readOptional(hostsFile),
    readOptional(resolvConf),
  ]);
  return {
    hosts: parseHosts(hosts),
    conf: conf === "" ? DEFAULT_RESOLV_CONF : parseResolvConf(conf),
  };
}

async function readOptional(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/** IPv4 before IPv6, each once, otherwise in the order given. */
function ordered(addresses: readonly string[]): string[] {
  const unique = [...new Set(addresses)];
  return [
    ...unique.filter((address) => !address.includes(":")),
    ...unique.filter((address) => address.includes(":")),
  ];
}

/** Why a question failed: the abort reason when the signal ended it. */
function reasonText(reason: unknown, signal: AbortSignal): string {
  const error = signal.aborted ? signal.reason : reason;
  const text = error instanceof Error ? error.message : String(error);
  // Deno's messages repeat the question: "proto error: request timed out".
  return text.replace(/^proto error: /, "");
}

function quoted(names: readonly string[]): string {
  return names.map((name) => `"${name}"`).join(", ");
}

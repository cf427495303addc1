/**
 * A real DNS server for the tests: dnsmasq (Debian's `dnsmasq-base`) on a
 * free loopback port, answering only from a hosts file it re-reads on SIGHUP
 * and from `--srv-host` entries. It forwards nothing: names it does not know
 * under `.test` get NXDOMAIN, and nothing leaves loopback.
 * @module
 */
import { join } from "node:path";
// The same helpers tests/_helpers.ts re-exports, without the whole of legate.
import { freePort } from "../scripts/free_port.ts";
import { waitFor } from "../scripts/wait_for.ts";

/** One `--srv-host` entry. */
export interface SrvEntry {
  /** `_service._proto.domain`. */
  readonly name: string;
  /** The target host name. */
  readonly target: string;
  /** The port the record gives. */
  readonly port: number;
  /** Lowest is preferred. @default {0} */
  readonly priority?: number;
  /** Share within a priority. @default {0} */
  readonly weight?: number;
}

/** Host names and their addresses, as the hosts file lists them. */
export type HostEntries = Record<string, readonly string[]>;

/** dnsmasq running for a test; dispose to stop it and remove its files. */
export interface Dnsmasq extends AsyncDisposable {
  /** The port it answers on, UDP and TCP, on 127.0.0.1; the same after restarts. */
  readonly port: number;
  /** `{ hostname: "127.0.0.1", port }`: the resolver option of discovery. */
  readonly resolver: { readonly hostname: string; readonly port: number };
  /** Whether it is running. */
  readonly running: boolean;
  /** Rewrites the hosts file, sends SIGHUP and waits until dnsmasq has read it. */
  setHosts(hosts: HostEntries): Promise<void>;
  /** Stops it (SIGTERM) and waits for it to exit; the port stays reserved for `start`. */
  stop(): Promise<void>;
  /** Starts it again on the same port, with `srv` entries if given, else the last ones. */
  start(srv?: readonly SrvEntry[]): Promise<void>;
  /** `stop`, then `start(srv)`: how SRV entries change. */
  restart(srv: readonly SrvEntry[]): Promise<void>;
  /**
   * How many questions of `type` (any type when not given) for `name` it
   * has logged, over every run; always 0 unless started with `logQueries`.
   */
  queries(name: string, type?: string): number;
}

/**
 * Starts dnsmasq on 127.0.0.1 with a hosts file of `hosts` and `srv` entries,
 * and waits until it has read the hosts file. It is authoritative for `.test`
 * (`--local=/test/`): a name there that it does not know is NXDOMAIN.
 */
export async function startDnsmasq(
  options: {
    hosts?: HostEntries;
    srv?: readonly SrvEntry[];
    /** Log every question, for {@linkcode Dnsmasq.queries}. @default {false} */
    logQueries?: boolean;
  } = {},
): Promise<Dnsmasq> {
  const dir = await Deno.makeTempDir({ prefix: "legate-dnsmasq-" });
  const hostsFile = join(dir, "hosts");
  await Deno.writeTextFile(hostsFile, hostsText(options.hosts ?? {}));
  let srv = options.srv ?? [];
  const logQueries = options.logQueries ?? false;
  let process: DnsmasqProcess | undefined;
  /** The logs of runs that ended. */
  let pastLogs = "";
  let port = 0;
  // freePort checks TCP only; dnsmasq also needs the UDP port: try another.
  for (let attempt = 1; process === undefined; attempt++) {
    port = freePort();
    try {
      process = await spawnDnsmasq(port, hostsFile, srv, logQueries);
    } catch (error) {
      if (attempt >= 5) {
        await Deno.remove(dir, { recursive: true });
        throw error;
      }
    }
  }
  const dnsmasq: Dnsmasq = {
    port,
    resolver: { hostname: "127.0.0.1", port },
    get running() {
      return process !== undefined;
    },
    async setHosts(hosts) {
      await Deno.writeTextFile(hostsFile, hostsText(hosts));
      if (!process) return;
      const reads = process.reads();
      process.child.kill("SIGHUP");
      await process.waitForLog(
        () => process!.reads() > reads,
        `dnsmasq to re-read ${hostsFile}`,
      );
    },
    async stop() {
      if (!process) return;
      const stopping = process;
      process = undefined;
      stopping.child.kill("SIGTERM");
      await stopping.exited;
      pastLogs += stopping.log();
    },
    async start(entries) {
      if (process) throw new Error("dnsmasq is already running");
      srv = entries ?? srv;
      process = await spawnDnsmasq(port, hostsFile, srv, logQueries);
    },
    async restart(entries) {
      await dnsmasq.stop();
      await dnsmasq.start(entries);
    },
    queries(name, type) {
      const log = pastLogs + (process?.log() ?? "");
      const asked = type === undefined ? "[^\\]]+" : type;
      const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      return log.match(
        new RegExp(`: query\\[${asked}\\] ${escaped} from `, "gi"),
      )?.length ?? 0;
    },
    async [Symbol.asyncDispose]() {
      await dnsmasq.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return dnsmasq;
}

interface DnsmasqProcess {
  readonly child: Deno.ChildProcess;
  /** Resolves when the process has exited and its log is read. */
  readonly exited: Promise<void>;
  /** How often it has logged reading the hosts file. */
  reads(): number;
  /** What it has logged so far. */
  log(): string;
  waitForLog(condition: () => boolean, what: string): Promise<void>;
}

/** Starts dnsmasq and waits until it has read its hosts file; rejects if it exits first. */
async function spawnDnsmasq(
  port: number,
  hostsFile: string,
  srv: readonly SrvEntry[],
  logQueries: boolean,
): Promise<DnsmasqProcess> {
  const child = new Deno.Command("dnsmasq", {
    args: [
      "--keep-in-foreground",
      "--conf-file=/dev/null", // no system configuration
      "--no-resolv", // no upstream servers: nothing is forwarded
      "--no-hosts", // not /etc/hosts: only the test's hosts file
      "--local=/test/", // unknown names under .test are NXDOMAIN
      "--bind-interfaces",
      "--listen-address=127.0.0.1",
      `--port=${port}`,
      `--addn-hosts=${hostsFile}`,
      "--log-facility=-",
      "--pid-file=", // none: several run at once
      // As root dnsmasq would drop to "nobody", who cannot read the test's
      // hosts file in its private temporary directory.
      "--user=root",
      ...(logQueries ? ["--log-queries"] : []),
      ...srv.map((entry) =>
        `--srv-host=${entry.name},${entry.target},${entry.port},${
          entry.priority ?? 0
        },${entry.weight ?? 0}`
      ),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  let done = false;
  const exited = (async () => {
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      log += chunk;
    }
    await child.status;
    done = true;
  })();
  const reads = () => log.split(`read ${hostsFile} `).length - 1;
  const waitForLog = async (condition: () => boolean, what: string) => {
    await waitFor(() => done || condition(), what, 10_000);
    if (!condition()) throw new Error(`dnsmasq exited: ${log.trim()}`);
  };
  try {
    // It reads the hosts file once its sockets are bound: then it answers.
    await waitForLog(() => reads() > 0, `dnsmasq to start on port ${port}`);
  } catch (error) {
    if (!done) child.kill("SIGTERM");
    await exited;
    throw error;
  }
  return { child, exited, reads, log: () => log, waitForLog };
}

function hostsText(hosts: HostEntries): string {
  return Object.entries(hosts)
    .flatMap(([name, addresses]) =>
      addresses.map((address) => `${address} ${name}\n`)
    )
    .join("");
}

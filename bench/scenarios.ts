/**
 * The five benchmark scenarios, each a load command (wrk for HTTP,
 * bench/tcp_load.ts for TCP) run against one target, and the check that every
 * target forwards correctly before anything is measured.
 * @module
 */
import { join } from "node:path";
import { ROOT, type Target } from "./peers.ts";
import { run } from "./procs.ts";
import { bulk, latency, type LoadResult } from "./tcp_load.ts";

/** Durations and sizes of one benchmark run. */
export interface Settings {
  /** Seconds per measured run of a time-based scenario (whole seconds: wrk's `-d`). */
  readonly seconds: number;
  /** Bytes per TCP bulk run. */
  readonly bulkBytes: number;
}

/** One scenario: what it measures and how to run it against a target. */
export interface Scenario {
  /** Short name, used by `--scenarios`. */
  readonly id: string;
  /** Heading in BENCHMARKS.md. */
  readonly title: string;
  /** A label short enough for the chart. */
  readonly short: string;
  /** TCP scenarios also run against socat. */
  readonly tcp: boolean;
  /** Unit of `LoadResult.throughput`. */
  readonly unit: string;
  /** Unit of proxy CPU per work item, and the factor from CPU seconds per item to it. */
  readonly cpuUnit: string;
  /** Multiplies CPU seconds per work item into `cpuUnit`. */
  readonly cpuScale: number;
  /** Which number the ratios and the chart compare. */
  readonly headline: "throughput" | "p99";
  /** One sentence on what the load is. */
  readonly load: string;
  /** The load command for a target listening on `port` (`deno` and repo-relative paths). */
  command(port: number | string, s: Settings): string[];
}

const URL_BASE = "http://127.0.0.1:";
const BIG = 10 * 1024 * 1024;

const wrk =
  (conns: number, path: string) => (port: number | string, s: Settings) => [
    "wrk",
    "-t1",
    `-c${conns}`,
    `-d${Math.max(1, Math.round(s.seconds))}s`,
    "--latency",
    "--timeout",
    "10s",
    `${URL_BASE}${port}${path}`,
  ];

const tcpLoad =
  (mode: string, extra: (s: Settings) => string[]) =>
  (port: number | string, s: Settings) => [
    "deno",
    "run",
    "--allow-net",
    "bench/tcp_load.ts",
    mode,
    "--port",
    String(port),
    ...extra(s),
  ];

/** The scenarios in the order they run. */
export const SCENARIOS: readonly Scenario[] = [
  {
    id: "http-small",
    title: "HTTP small responses",
    short: "HTTP 100 B",
    tcp: false,
    unit: "req/s",
    cpuUnit: "µs/req",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "`GET` of a 100-byte body, keep-alive, 50 connections, one wrk thread.",
    command: wrk(50, "/small"),
  },
  {
    id: "http-10mib",
    title: "HTTP 10 MiB downloads",
    short: "HTTP 10 MiB",
    tcp: false,
    unit: "MB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "`GET` of a 10 MiB body, repeatedly, keep-alive, 4 connections, one wrk thread; MB/s = bytes wrk read / seconds.",
    command: wrk(4, "/big"),
  },
  {
    id: "tcp-bulk",
    title: "TCP bulk throughput",
    short: "TCP bulk",
    tcp: true,
    unit: "GB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "one connection pushes the bulk size in 256 KiB writes to the sink upstream and waits for its one-byte answer.",
    command: tcpLoad("bulk", (s) => ["--bytes", String(s.bulkBytes)]),
  },
  {
    id: "tcp-connect",
    title: "TCP connection rate",
    short: "TCP conn/s",
    tcp: true,
    unit: "conn/s",
    cpuUnit: "µs/conn",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "32 concurrent loops of connect, 16-byte echo round trip, close (p50/p99: one whole connection).",
    command: tcpLoad(
      "connect",
      (s) => ["--seconds", String(s.seconds), "--workers", "32"],
    ),
  },
  {
    id: "tcp-latency",
    title: "TCP latency, 200 connections",
    short: "TCP p99 latency",
    tcp: true,
    unit: "trips/s",
    cpuUnit: "µs/trip",
    cpuScale: 1e6,
    headline: "p99",
    load:
      "200 open connections, each doing 64-byte echo round trips back to back (p50/p99: one round trip).",
    command: tcpLoad(
      "latency",
      (s) => ["--seconds", String(s.seconds), "--conns", "200"],
    ),
  },
];

const TIME_UNITS: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3, m: 6e4 };
const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
  TB: 1024 ** 4,
};

/** Reads wrk's `--latency` report. */
export function parseWrk(text: string, bytesPerRequest: boolean): LoadResult {
  const num = (re: RegExp) => {
    const m = text.match(re);
    if (!m) throw new Error(`wrk output lacks ${re}:\n${text}`);
    return m;
  };
  const done = num(/(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(\w+) read/);
  const requests = Number(done[1]);
  const seconds = Number(done[2]) * TIME_UNITS[done[3]!]! / 1000;
  const bytes = Number(done[4]) * (SIZE_UNITS[done[5]!] ?? NaN);
  const pct = (p: string) => {
    const m = num(new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)`, "m"));
    return Number(m[1]) * TIME_UNITS[m[2]!]!;
  };
  const non2xx = text.match(/Non-2xx or 3xx responses: (\d+)/);
  const socket = text.match(
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
  );
  const errors = Number(non2xx?.[1] ?? 0) +
    (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return bytesPerRequest
    ? {
      throughput: bytes / seconds / 1e6,
      work: bytes,
      seconds,
      errors,
      p50Ms: pct("50"),
      p99Ms: pct("99"),
    }
    : {
      throughput: requests / seconds,
      work: requests,
      seconds,
      errors,
      p50Ms: pct("50"),
      p99Ms: pct("99"),
    };
}

/** The port of `target` that `scenario` loads. */
export function portFor(scenario: Scenario, target: Target): number {
  const port = scenario.tcp
    ? (scenario.id === "tcp-bulk" ? target.ports.sink : target.ports.echo)
    : target.ports.http;
  if (port === undefined) {
    throw new Error(`${target.name} has no port for ${scenario.id}`);
  }
  return port;
}

/** Runs `scenario` once against `target` and returns what the load tool measured. */
export async function runScenario(
  scenario: Scenario,
  target: Target,
  s: Settings,
): Promise<LoadResult> {
  const [cmd, ...args] = scenario.command(portFor(scenario, target), s);
  const deno = cmd === "deno";
  const absolute = args.map((a) => a.startsWith("bench/") ? join(ROOT, a) : a);
  const out = await run(
    deno ? Deno.execPath() : cmd!,
    absolute,
    (s.seconds + 120) * 1000,
  );
  if (out.code !== 0) {
    throw new Error(
      `${cmd} failed (${out.code}) on ${target.name}:\n${out.stderr}${out.stdout}`,
    );
  }
  if (deno) {
    const line = out.stdout.trim().split("\n").at(-1) ?? "";
    return JSON.parse(line) as LoadResult;
  }
  return parseWrk(out.stdout, scenario.id === "http-10mib");
}

/** Checks that `target` forwards each service correctly; throws what is wrong. */
export async function smokeCheck(target: Target): Promise<void> {
  const what = (s: string) => `${target.name}: ${s}`;
  if (target.ports.http !== undefined) {
    for (const [path, size] of [["/small", 100], ["/big", BIG]] as const) {
      const res = await fetch(`${URL_BASE}${target.ports.http}${path}`, {
        signal: AbortSignal.timeout(10_000),
      });
      const body = await res.arrayBuffer();
      if (res.status !== 200 || body.byteLength !== size) {
        throw new Error(
          what(`GET ${path}: ${res.status}, ${body.byteLength} bytes`),
        );
      }
    }
  }
  const echo = await within(latency(target.ports.echo, 0.05, 2), what("echo"));
  if (echo.errors > 0 || echo.work === 0) {
    throw new Error(what(`TCP echo failed: ${JSON.stringify(echo)}`));
  }
  await within(bulk(target.ports.sink, 1024 * 1024), what("sink"));
}

/** `promise`, or an error after 10 s. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out`)), 10_000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

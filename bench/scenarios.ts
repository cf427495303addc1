/**
 * The benchmark scenarios, each a load command (wrk for HTTP downloads and
 * HTTP over TCP, bench/upload.ts for uploads, redis-benchmark for Redis,
 * bench/tcp_load.ts for raw TCP) run against one service of a target, and the
 * check that every target forwards each service correctly before anything is
 * measured.
 * @module
 */
import { join } from "node:path";
import { BIG_BYTES, ROOT, type Service, type Target } from "./peers.ts";
import { run } from "./procs.ts";
import { bulk, latency, type LoadResult } from "./tcp_load.ts";

/** Durations and sizes of one benchmark run. */
export interface Settings {
  /** Seconds per measured run of a time-based scenario (whole seconds: wrk's `-d`). */
  readonly seconds: number;
  /** Bytes per TCP bulk run. */
  readonly bulkBytes: number;
  /** The file the upload scenarios send. */
  readonly uploadFile: string;
}

/** How a scenario's load tool reports. */
type Output = "wrk" | "wrk-bytes" | "json" | "redis";

/** One scenario: what it measures and how to run it against a target. */
export interface Scenario {
  /** Short name, used by `--scenarios`. */
  readonly id: string;
  /** Heading in BENCHMARKS.md. */
  readonly title: string;
  /** A label short enough for the chart. */
  readonly short: string;
  /** Which service of the target it loads. */
  readonly service: Service;
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
  /** How the load tool reports. */
  readonly output: Output;
  /**
   * The load command for a target listening on `port` (`deno` and
   * repo-relative paths); `rate` is the throughput of this target's previous
   * run, for loads sized by count rather than time.
   */
  command(port: number | string, s: Settings, rate?: number): string[];
}

const URL_BASE = "http://127.0.0.1:";

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

const upload = (mode: "cl" | "chunked") =>
(
  port: number | string,
  s: Settings,
) => [
  "deno",
  "run",
  "--allow-run",
  "--allow-read",
  "bench/upload.ts",
  mode,
  "--port",
  String(port),
  "--file",
  s.uploadFile,
  "--seconds",
  String(s.seconds),
];

/**
 * redis-benchmark GET and SET with `pipeline` commands in flight per
 * connection; `-n` is sized from the target's last rate (or `guess`) so that
 * the run takes about `--seconds`.
 */
const redis =
  (pipeline: number, guess: number) =>
  (port: number | string, s: Settings, rate?: number) => [
    "redis-benchmark",
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-c",
    "50",
    "-n",
    String(
      Math.min(
        5e7,
        Math.max(1000, Math.round((rate ?? guess) * s.seconds / 2)),
      ),
    ),
    "-P",
    String(pipeline),
    "-t",
    "get,set",
    "--csv",
  ];

/** The scenarios in the order they run. */
export const SCENARIOS: readonly Scenario[] = [
  {
    id: "http-small",
    title: "HTTP small responses",
    short: "HTTP 100 B",
    service: "http",
    unit: "req/s",
    cpuUnit: "µs/req",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "`GET` of a 100-byte body (nginx `return 200`), keep-alive, 50 connections, one wrk thread.",
    output: "wrk",
    command: wrk(50, "/small"),
  },
  {
    id: "http-10mib",
    title: "HTTP 10 MiB downloads",
    short: "HTTP 10 MiB",
    service: "http",
    unit: "MB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "`GET` of a 10 MiB static file (nginx, `sendfile on`), repeatedly, keep-alive, 4 connections, one wrk thread; MB/s = bytes wrk read / seconds.",
    output: "wrk-bytes",
    command: wrk(4, "/big"),
  },
  {
    id: "http-upload-cl",
    title: "HTTP uploads, Content-Length",
    short: "upload CL",
    service: "upload",
    unit: "MB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "`curl -T FILE` to `POST /upload` (bench/upstream.ts reads and counts the whole body, then answers), one upload after another for the run's seconds; p50/p99: one whole upload.",
    output: "json",
    command: upload("cl"),
  },
  {
    id: "http-upload-chunked",
    title: "HTTP uploads, piped and chunked",
    short: "upload chunked",
    service: "upload",
    unit: "MB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "`cat FILE | curl -T - -H 'Transfer-Encoding: chunked'` to `POST /upload`, one after another for the run's seconds; p50/p99: one whole upload.",
    output: "json",
    command: upload("chunked"),
  },
  {
    id: "tcp-http",
    title: "HTTP over a TCP route",
    short: "TCP: HTTP",
    service: "tcpHttp",
    unit: "req/s",
    cpuUnit: "µs/req",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "`GET` of a 100-byte body, keep-alive, 50 connections, one wrk thread, through the target's TCP route to the nginx upstream.",
    output: "wrk",
    command: wrk(50, "/small"),
  },
  {
    id: "redis-p1",
    title: "Redis through a TCP route, no pipelining",
    short: "Redis -P 1",
    service: "redis",
    unit: "ops/s",
    cpuUnit: "µs/op",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "`redis-benchmark -t get,set -P 1 -c 50` to redis-server through the target's TCP route; ops/s over both tests, p50/p99 the slower test's.",
    output: "redis",
    command: redis(1, 20_000),
  },
  {
    id: "redis-p16",
    title: "Redis through a TCP route, 16 pipelined",
    short: "Redis -P 16",
    service: "redis",
    unit: "ops/s",
    cpuUnit: "µs/op",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "`redis-benchmark -t get,set -P 16 -c 50` to redis-server through the target's TCP route; ops/s over both tests, p50/p99 the slower test's.",
    output: "redis",
    command: redis(16, 100_000),
  },
  {
    id: "tcp-bulk",
    title: "TCP bulk throughput",
    short: "TCP bulk",
    service: "sink",
    unit: "GB/s",
    cpuUnit: "s/GB",
    cpuScale: 1e9,
    headline: "throughput",
    load:
      "one connection pushes the bulk size in 256 KiB writes to the sink upstream and waits for its one-byte answer.",
    output: "json",
    command: tcpLoad("bulk", (s) => ["--bytes", String(s.bulkBytes)]),
  },
  {
    id: "tcp-connect",
    title: "TCP connection rate",
    short: "TCP conn/s",
    service: "echo",
    unit: "conn/s",
    cpuUnit: "µs/conn",
    cpuScale: 1e6,
    headline: "throughput",
    load:
      "32 concurrent loops of connect, 16-byte echo round trip, close (p50/p99: one whole connection).",
    output: "json",
    command: tcpLoad(
      "connect",
      (s) => ["--seconds", String(s.seconds), "--workers", "32"],
    ),
  },
  {
    id: "tcp-latency",
    title: "TCP latency, 200 connections",
    short: "TCP p99 latency",
    service: "echo",
    unit: "trips/s",
    cpuUnit: "µs/trip",
    cpuScale: 1e6,
    headline: "p99",
    load:
      "200 open connections, each doing 64-byte echo round trips back to back (p50/p99: one round trip).",
    output: "json",
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

/** Reads redis-benchmark's `--csv` report (one line per test). */
export function parseRedis(text: string, requests: number): LoadResult {
  const tests = text.split("\n").filter((l) => /^"[A-Z]/.test(l)).map((l) =>
    l.split(",").map((f) => f.replace(/"/g, ""))
  );
  if (tests.length !== 2) {
    throw new Error(`redis-benchmark did not report GET and SET:\n${text}`);
  }
  // columns: test, rps, avg, min, p50, p95, p99, max
  const seconds = tests.reduce((sum, t) => sum + requests / Number(t[1]), 0);
  const worst = (col: number) => Math.max(...tests.map((t) => Number(t[col])));
  return {
    throughput: 2 * requests / seconds,
    work: 2 * requests,
    seconds,
    errors: 0,
    p50Ms: worst(4),
    p99Ms: worst(6),
  };
}

/** Whether `target` serves what `scenario` loads (socat forwards TCP only). */
export function serves(scenario: Scenario, target: Target): boolean {
  return target.ports[scenario.service] !== undefined;
}

/** The port of `target` that `scenario` loads. */
export function portFor(scenario: Scenario, target: Target): number {
  const port = target.ports[scenario.service];
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
  rate?: number,
): Promise<LoadResult> {
  const [cmd, ...args] = scenario.command(portFor(scenario, target), s, rate);
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
  if (scenario.output === "redis") {
    return parseRedis(out.stdout, Number(args[args.indexOf("-n") + 1]));
  }
  return parseWrk(out.stdout, scenario.output === "wrk-bytes");
}

/** Checks that `target` forwards each service correctly; throws what is wrong. */
export async function smokeCheck(target: Target): Promise<void> {
  const what = (s: string) => `${target.name}: ${s}`;
  const { http, upload, tcpHttp } = target.ports;
  const gets = [
    ...(http === undefined
      ? []
      : [[http, "/small", 100], [http, "/big", BIG_BYTES]]),
    [tcpHttp, "/small", 100],
  ] as const;
  for (const [port, path, size] of gets) {
    const res = await fetch(`${URL_BASE}${port}${path}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = await res.arrayBuffer();
    if (res.status !== 200 || body.byteLength !== size) {
      throw new Error(
        what(`GET ${path} on ${port}: ${res.status}, ${body.byteLength} bytes`),
      );
    }
  }
  if (upload !== undefined) {
    const size = 3 * 1024 * 1024 + 17;
    const bytes = new Uint8Array(size).fill(0x75);
    for (const chunked of [false, true]) {
      const res = await fetch(`${URL_BASE}${upload}/upload`, {
        method: "POST",
        // a stream has no length: fetch sends it chunked
        body: chunked ? new Blob([bytes]).stream() : bytes,
        signal: AbortSignal.timeout(10_000),
      });
      const text = (await res.text()).trim();
      if (res.status !== 200 || text !== String(size)) {
        throw new Error(
          what(`POST /upload (chunked: ${chunked}): ${res.status} ${text}`),
        );
      }
    }
  }
  const redis = await within(redisPing(target.ports.redis), what("redis"));
  if (redis !== "+PONG") throw new Error(what(`redis PING: ${redis}`));
  const echo = await within(latency(target.ports.echo, 0.05, 2), what("echo"));
  if (echo.errors > 0 || echo.work === 0) {
    throw new Error(what(`TCP echo failed: ${JSON.stringify(echo)}`));
  }
  await within(bulk(target.ports.sink, 1024 * 1024), what("sink"));
}

/** Sends Redis `PING` to `port` and returns the first line of the answer. */
async function redisPing(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("PING\r\n"));
    let text = "";
    const buf = new Uint8Array(64);
    while (!text.includes("\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.split("\r\n")[0]!;
  } finally {
    conn.close();
  }
}

/** `promise`, or an error after 10 s. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out`)), 10_000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The benchmark report: medians and ranges over repetitions, legate's ratios
 * to nginx, HAProxy and the Deno floor, the performance targets, start-up and
 * memory, the machine description, BENCHMARKS.md (Markdown) and
 * bench/ratios.svg (a hand-written SVG bar chart, no chart library).
 * @module
 */
import { ROOT, TARGET_NAMES, type TargetName } from "./peers.ts";
import { median, run, type Usage } from "./procs.ts";
import type { Scenario, Settings } from "./scenarios.ts";
import { STARTING, type Starting, type StartupResult } from "./startup.ts";
import type { LoadResult } from "./tcp_load.ts";

/** One measured run: a scenario against a target, in one repetition. */
export interface RunRecord {
  /** Scenario id. */
  readonly scenario: string;
  /** Who forwarded the load. */
  readonly target: TargetName;
  /** Repetition, from 1. */
  readonly rep: number;
  /** What the load tool measured. */
  readonly result: LoadResult;
  /** Proxy CPU and memory; absent for `direct`. */
  readonly usage: Usage | undefined;
}

/** What the benchmark ran on. */
export interface Machine {
  /** When the run started (ISO 8601, UTC). */
  readonly date: string;
  /** CPUs available (`nproc`). */
  readonly nproc: string;
  /** CPU model from /proc/cpuinfo. */
  readonly cpu: string;
  /** Total RAM. */
  readonly memory: string;
  /** Kernel release. */
  readonly kernel: string;
  /** Version line of each tool, by the command that printed it. */
  readonly versions: Record<string, string>;
  /** legate's git commit. */
  readonly commit: string;
}

/** Everything BENCHMARKS.md and the chart are made from. */
export interface ReportInput {
  /** Whether this was a `--quick` run. */
  readonly quick: boolean;
  /** The commit the `baseline` target ran, with `--baseline`. */
  readonly baseline: string | undefined;
  /** Repetitions per scenario and target. */
  readonly reps: number;
  /** nginx workers and HAProxy threads. */
  readonly workers: number;
  /** Durations and sizes. */
  readonly settings: Settings;
  /** What it ran on. */
  readonly machine: Machine;
  /** The scenarios that ran. */
  readonly scenarios: readonly Scenario[];
  /** Every measured run. */
  readonly records: readonly RunRecord[];
  /** Proxy RSS after start-up and the forwarding checks, before any load, MB. */
  readonly idleMb: Partial<Record<TargetName, number>>;
  /** Start-up and idle memory, unless `--scenarios` left them out. */
  readonly startup: StartupResult | undefined;
  /** Size of the file the upload scenarios send. */
  readonly uploadBytes: number;
  /** How the start-up section starts what it times. */
  readonly startupCommands: readonly string[];
  /** How the upstream and proxies were started. */
  readonly startCommands: readonly string[];
  /** The harness's command-line arguments. */
  readonly argv: readonly string[];
  /** How long the whole benchmark took. */
  readonly elapsedSeconds: number;
}

/** Medians (and the throughput's range) of one target in one scenario. */
export interface Summary {
  /** Who forwarded the load. */
  readonly target: TargetName;
  /** Runs summarized. */
  readonly runs: number;
  /** Median throughput, in the scenario's unit. */
  readonly value: number;
  /** Lowest throughput of the runs. */
  readonly min: number;
  /** Highest throughput of the runs. */
  readonly max: number;
  /** Median p50 latency, ms. */
  readonly p50?: number;
  /** Median p99 latency, ms. */
  readonly p99?: number;
  /** Proxy CPU per work item, in the scenario's `cpuUnit`. */
  readonly cpu?: number;
  /** Proxy CPU time / wall time, in % of one core. */
  readonly cpuPct?: number;
  /** Median RSS under load, MB. */
  readonly steadyMb?: number;
  /** The largest peak over the repetitions. */
  readonly peakMb?: number;
  /** Lowest and highest over the repetitions, of each median above. */
  readonly range: Partial<Record<Ranged, readonly [number, number]>>;
  /** Errors over all runs. */
  readonly errors: number;
}

/** The per-repetition numbers whose range the report shows. */
type Ranged = "p50" | "p99" | "cpu" | "steadyMb" | "peakMb";

const LABEL: Record<TargetName, string> = {
  direct: "direct (no proxy)",
  nginx: "nginx",
  haproxy: "HAProxy",
  socat: "socat",
  floor: "Deno floor",
  legate: "legate",
  legate_log: "legate, access log on",
  baseline: "legate at the baseline commit",
};

function medianOf(values: (number | undefined)[]): number | undefined {
  const defined = values.filter((v): v is number =>
    v !== undefined && Number.isFinite(v)
  );
  return defined.length > 0 ? median(defined) : undefined;
}

/** Summaries of every target that ran `scenario`, in target order. */
export function summarize(
  scenario: Scenario,
  records: readonly RunRecord[],
): Summary[] {
  const out: Summary[] = [];
  for (const target of TARGET_NAMES) {
    const mine = records.filter((r) =>
      r.scenario === scenario.id && r.target === target
    );
    if (mine.length === 0) continue;
    const values = mine.map((r) => r.result.throughput);
    const perRep: Record<Ranged, (number | undefined)[]> = {
      p50: mine.map((r) => r.result.p50Ms),
      p99: mine.map((r) => r.result.p99Ms),
      cpu: mine.map((r) =>
        r.usage && r.result.work > 0
          ? r.usage.cpuSeconds / r.result.work * scenario.cpuScale
          : undefined
      ),
      steadyMb: mine.map((r) => r.usage?.steadyMb),
      peakMb: mine.map((r) => r.usage?.peakMb),
    };
    const range: Partial<Record<Ranged, readonly [number, number]>> = {};
    const medians: Partial<Record<Ranged, number>> = {};
    for (const key of Object.keys(perRep) as Ranged[]) {
      const defined = perRep[key].filter((v): v is number =>
        v !== undefined && Number.isFinite(v)
      );
      if (defined.length === 0) continue;
      medians[key] = median(defined);
      range[key] = [Math.min(...defined), Math.max(...defined)];
    }
    const cpuPct = medianOf(
      mine.map((r) =>
        r.usage ? 100 * r.usage.cpuSeconds / r.usage.wallSeconds : undefined
      ),
    );
    out.push({
      target,
      runs: mine.length,
      value: median(values),
      min: Math.min(...values),
      max: Math.max(...values),
      ...medians,
      ...(medians.peakMb === undefined ? {} : { peakMb: range.peakMb![1] }),
      ...(cpuPct === undefined ? {} : { cpuPct }),
      range,
      errors: mine.reduce((sum, r) => sum + r.result.errors, 0),
    });
  }
  return out;
}

/** legate's headline number divided by the peer's (throughput, or p99 latency). */
export function headlineRatio(
  scenario: Scenario,
  legate: Summary | undefined,
  peer: Summary | undefined,
): number | undefined {
  if (!legate || !peer) return undefined;
  const r = scenario.headline === "p99"
    ? (legate.p99 ?? NaN) / (peer.p99 ?? NaN)
    : legate.value / peer.value;
  return Number.isFinite(r) ? r : undefined;
}

/** legate's performance relative to a peer, higher = legate better (the chart's bars). */
function relative(
  scenario: Scenario,
  legate: Summary | undefined,
  peer: Summary | undefined,
): number | undefined {
  const r = headlineRatio(scenario, legate, peer);
  return r === undefined ? undefined : scenario.headline === "p99" ? 1 / r : r;
}

/** A number with about three significant digits; `—` when missing. */
export function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "—";
  const a = Math.abs(n);
  if (a >= 1000) return Math.round(n).toLocaleString("en-US");
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  if (a >= 1) return n.toFixed(2);
  return n.toPrecision(2);
}

const times = (r: number | undefined) => r === undefined ? "—" : `${fmt(r)}×`;

function ratioLine(
  scenario: Scenario,
  legate: Summary | undefined,
  peer: Summary | undefined,
  label: string,
): string {
  if (!legate || !peer) return `- ${label}: —`;
  const parts = [
    [legate.value, peer.value, scenario.unit],
    [legate.p99, peer.p99, "p99 latency"],
    [legate.cpu, peer.cpu, "CPU per unit"],
    [legate.peakMb, peer.peakMb, "peak RSS"],
  ] as const;
  const shown = parts.filter(([a, b]) =>
    a !== undefined && b !== undefined && b !== 0
  ).map(([a, b, what]) => `${times(a! / b!)} ${what}`);
  return `- ${label}: ${shown.join(", ")}`;
}

function table(scenario: Scenario, rows: Summary[], reps: number): string {
  const range = reps > 1 ? " median (min–max)" : "";
  const head = [
    "target",
    `${scenario.unit}${range}`,
    "p50 ms",
    "p99 ms",
    `proxy CPU ${scenario.cpuUnit}`,
    "proxy CPU % of a core",
    "proxy RSS under load MB",
    "proxy peak RSS MB",
    "errors",
  ];
  const lines = [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => " --- ").join("|")}|`,
  ];
  const ranged = (r: Summary, key: Ranged) => {
    const span = r.range[key];
    const value = key === "peakMb" ? span?.[1] : r[key];
    return reps > 1 && span && key !== "peakMb"
      ? `${fmt(value)} (${fmt(span[0])}–${fmt(span[1])})`
      : fmt(value);
  };
  for (const r of rows) {
    const value = reps > 1
      ? `${fmt(r.value)} (${fmt(r.min)}–${fmt(r.max)})`
      : fmt(r.value);
    lines.push(
      `| ${
        [
          LABEL[r.target],
          value,
          ranged(r, "p50"),
          ranged(r, "p99"),
          ranged(r, "cpu"),
          fmt(r.cpuPct),
          ranged(r, "steadyMb"),
          ranged(r, "peakMb"),
          String(r.errors),
        ].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** Median, lowest and highest of `values`, e.g. `31.2 ms (29.0–40.1)`. */
function spread(values: readonly number[], unit: string): string {
  if (values.length === 0) return "—";
  return `${fmt(median([...values]))} ${unit} (${fmt(Math.min(...values))}–${
    fmt(Math.max(...values))
  })`;
}

/** One performance target: what is compared, the measured value and the bound. */
interface Goal {
  readonly what: string;
  readonly measured: string;
  readonly met: boolean | undefined;
}

/** The performance targets, each checked against this run's medians. */
function goals(
  input: ReportInput,
  summaries: { sc: Scenario; rows: Summary[] }[],
): Goal[] {
  const get = (id: string, t: TargetName) =>
    summaries.find((x) => x.sc.id === id)?.rows.find((r) => r.target === t);
  const out: Goal[] = [];
  const ratio = (
    what: string,
    a: number | undefined,
    b: number | undefined,
    bound: number,
    atMost: boolean,
    detail: string,
  ) => {
    const r = a !== undefined && b ? a / b : undefined;
    out.push({
      what,
      measured: r === undefined ? "not measured" : `${fmt(r)}× (${detail})`,
      met: r === undefined ? undefined : atMost ? r <= bound : r >= bound,
    });
  };
  const small = [get("http-small", "legate"), get("http-small", "floor")];
  ratio(
    "legate's CPU per small request ≤ 1.1× the floor's",
    small[0]?.cpu,
    small[1]?.cpu,
    1.1,
    true,
    `${fmt(small[0]?.cpu)} vs ${fmt(small[1]?.cpu)} µs/req`,
  );
  const up = [
    get("http-upload-chunked", "legate"),
    get("http-upload-cl", "legate"),
  ];
  ratio(
    "legate's chunked upload ≥ 0.5× its Content-Length upload (MB/s)",
    up[0]?.value,
    up[1]?.value,
    0.5,
    false,
    `${fmt(up[0]?.value)} vs ${fmt(up[1]?.value)} MB/s`,
  );
  const big = [get("http-10mib", "legate"), get("http-10mib", "nginx")];
  ratio(
    "legate's 10 MiB downloads ≥ 0.9× nginx's (MB/s)",
    big[0]?.value,
    big[1]?.value,
    0.9,
    false,
    `${fmt(big[0]?.value)} vs ${fmt(big[1]?.value)} MB/s`,
  );
  for (const id of ["tcp-http", "redis-p1", "redis-p16"]) {
    const [l, f] = [get(id, "legate"), get(id, "floor")];
    const unit = summaries.find((x) => x.sc.id === id)?.sc.unit ?? "";
    ratio(
      `${id}: legate ≥ 0.95× the floor's throughput`,
      l?.value,
      f?.value,
      0.95,
      false,
      `${fmt(l?.value)} vs ${fmt(f?.value)} ${unit}`,
    );
  }
  const lat = ["legate", "nginx", "floor"].map((t) =>
    get("tcp-latency", t as TargetName)?.p99
  );
  out.push({
    what: "tcp-latency p99 ≤ 1.5× nginx's, or ≤ the floor's",
    measured: lat.every((v) => v !== undefined)
      ? `${fmt(lat[0]! / lat[1]!)}× nginx's, ${
        fmt(lat[0]! / lat[2]!)
      }× the floor's (${fmt(lat[0])} vs ${fmt(lat[1])} and ${fmt(lat[2])} ms)`
      : "not measured",
    met: lat.every((v) => v !== undefined)
      ? lat[0]! <= 1.5 * lat[1]! || lat[0]! <= lat[2]!
      : undefined,
  });
  const st = input.startup;
  const idle = st && median([...st.idleMb.legate]);
  const bare = st && median([...st.idleMb.hello]);
  out.push({
    what: "legate's idle RSS ≤ a bare `Deno.serve`'s + 15 MB",
    measured: idle !== undefined && bare !== undefined
      ? `${fmt(idle)} MB vs ${fmt(bare)} MB (+${fmt(idle - bare)} MB)`
      : "not measured",
    met: idle !== undefined && bare !== undefined
      ? idle <= bare + 15
      : undefined,
  });
  const loaded = get("tcp-latency", "legate")?.peakMb;
  out.push({
    what: "legate's RSS under the 200-connection load ≤ 100 MB (peak)",
    measured: loaded === undefined ? "not measured" : `${fmt(loaded)} MB`,
    met: loaded === undefined ? undefined : loaded <= 100,
  });
  const first = st && median([...st.firstOkMs.legate]);
  out.push({
    what: "legate's first proxied 200 ≤ 50 ms after spawn",
    measured: first === undefined ? "not measured" : `${fmt(first)} ms`,
    met: first === undefined ? undefined : first <= 50,
  });
  const health = st && median([...st.healthcheckMs]);
  out.push({
    what: "`legate healthcheck` ≤ 30 ms",
    measured: health === undefined ? "not measured" : `${fmt(health)} ms`,
    met: health === undefined ? undefined : health <= 30,
  });
  return out;
}

const STARTING_LABEL: Record<Starting, string> = {
  nginx: "nginx",
  floor: "Deno floor",
  legate: "legate",
  hello: "bare `Deno.serve` hello-world",
};

function startupSection(st: StartupResult): string[] {
  return [
    "## Start-up and memory",
    "",
    `Not interleaved with the load; ${st.emptyMs.length} rounds, median (min–max). *First 200*: ms from just before spawning the process (\`deno run\` with the flags of \`deno task start\` for legate, the floor and the hello-world; legate with all bench routes) to the first \`200\` for \`GET /small\` through it (from the hello-world, its own answer), polled with raw TCP connects and requests, 1 ms apart. *Idle RSS*: VmRSS one second after that first \`200\`.`,
    "",
    "| program | first 200 ms | idle RSS MB |",
    "| --- | --- | --- |",
    ...STARTING.map((name) =>
      `| ${STARTING_LABEL[name]} | ${spread(st.firstOkMs[name], "")} | ${
        spread(st.idleMb[name], "")
      } |`
    ),
    "",
    `- \`legate healthcheck\` against the running legate, spawn to exit: ${
      spread(st.healthcheckMs, "ms")
    }.`,
    `- \`deno run\` of an empty script, spawn to exit (the runtime's own start-up): ${
      spread(st.emptyMs, "ms")
    }.`,
  ];
}

/** Above this share of direct's throughput, the fastest proxy may be at the upstream's or load generator's limit. */
const NEAR_DIRECT = 0.8;

/** The fastest proxy's throughput over direct's, per throughput scenario, and what that says. */
function headroom(summaries: { sc: Scenario; rows: Summary[] }[]): string {
  const near: string[] = [];
  const each = summaries.filter(({ sc }) => sc.headline === "throughput").map(
    ({ sc, rows }) => {
      const direct = rows.find((r) => r.target === "direct");
      const best =
        rows.filter((r) => r.target !== "direct").sort((a, b) =>
          b.value - a.value
        )[0];
      if (!direct || !best) return `${sc.id} —`;
      const r = best.value / direct.value;
      if (r > NEAR_DIRECT) near.push(sc.id);
      return `${sc.id} ${fmt(r)}× (${LABEL[best.target]})`;
    },
  );
  return `${
    each.join(", ")
  }. Where this is at most ${NEAR_DIRECT}×, the upstream and the load generator are far from their limit and every target's number is its own${
    near.length === 0
      ? ""
      : `; in ${
        near.join(", ")
      } the fastest proxies come near what the upstream and load generator deliver on this machine at all (they share its cores), so there only targets well below direct are told apart by throughput, and CPU per unit is the comparison that holds`
  }`;
}

/** BENCHMARKS.md. */
export function renderMarkdown(input: ReportInput): string {
  const { machine: m, settings: s } = input;
  const find = (rows: Summary[], t: TargetName) =>
    rows.find((r) => r.target === t);
  const summaries = input.scenarios.map((sc) => ({
    sc,
    rows: summarize(sc, input.records),
  }));
  const mode = input.quick
    ? `**quick run** (\`--quick\`: ${input.reps} repetition, ${s.seconds} s per run, no warm-up): for development only, too short to compare proxies`
    : `${input.reps} repetitions, ${s.seconds} s per time-based run, each scenario warmed up once per target before its first repetition`;
  const shown = TARGET_NAMES.filter((t) =>
    t !== "baseline" || input.baseline !== undefined
  );
  const summaryHead = [
    "scenario",
    "headline",
    ...shown.map((t) => LABEL[t]),
    "legate ÷ nginx",
    "legate ÷ HAProxy",
    "legate ÷ floor",
    "CPU per unit, legate ÷ nginx",
    "CPU per unit, legate ÷ floor",
    "CPU per unit, access log on ÷ off",
    ...(input.baseline === undefined
      ? []
      : [`CPU per unit, legate ÷ at ${input.baseline}`]),
  ];
  const out: string[] = [];
  out.push(
    "# Benchmarks",
    "",
    `legate against nginx, HAProxy, socat (TCP only), the Deno floor (the smallest correct Deno proxy, bench/floor.ts) and no proxy at all ("direct"), on loopback. Generated by \`deno task bench${
      input.argv.length > 0 ? " " + input.argv.join(" ") : ""
    }\` on ${m.date} in ${
      Math.round(input.elapsedSeconds)
    } s; do not edit by hand.`,
    "",
    `Mode: ${mode}. Workers: ${input.workers} (nginx \`worker_processes ${input.workers}\`, HAProxy \`nbthread ${input.workers}\`; the floor and legate are always one process, socat forks one process per connection).`,
    "",
    "**Caveat:** the machine has " + m.nproc +
      " cores, and the load generator (wrk, curl, redis-benchmark or bench/tcp_load.ts), the upstream and the proxy all share them. Numbers measure the whole system on this box, not the proxy alone; proxy CPU per request, per operation and per GB are the fairer comparison.",
    "",
    "## Summary",
    "",
    "Medians. Ratios are legate ÷ peer for the headline number: above 1 means legate is faster for throughput, slower for p99 latency. CPU per unit: below 1 means legate spends less.",
    "",
    `| ${summaryHead.join(" | ")} |`,
    `|${summaryHead.map(() => " --- ").join("|")}|`,
  );
  for (const { sc, rows } of summaries) {
    const head = (t: TargetName) => {
      const r = find(rows, t);
      return fmt(sc.headline === "p99" ? r?.p99 : r?.value);
    };
    const legate = find(rows, "legate");
    const cpuRatio = (other: Summary | undefined, of = legate) =>
      times(
        of?.cpu !== undefined && other?.cpu ? of.cpu / other.cpu : undefined,
      );
    out.push(
      `| ${
        [
          sc.title,
          sc.headline === "p99" ? "p99 ms" : sc.unit,
          ...shown.map(head),
          times(headlineRatio(sc, legate, find(rows, "nginx"))),
          times(headlineRatio(sc, legate, find(rows, "haproxy"))),
          times(headlineRatio(sc, legate, find(rows, "floor"))),
          cpuRatio(find(rows, "nginx")),
          cpuRatio(find(rows, "floor")),
          cpuRatio(legate, find(rows, "legate_log")),
          ...(input.baseline === undefined
            ? []
            : [cpuRatio(find(rows, "baseline"))]),
        ].join(" | ")
      } |`,
    );
  }
  out.push(
    "",
    "![legate relative to nginx, HAProxy and the Deno floor](bench/ratios.svg)",
    "",
    "## Performance targets",
    "",
    "Each performance target, checked against this run's medians (a single run on a shared machine: see the ranges below).",
    "",
    "| target | measured | met |",
    "| --- | --- | --- |",
    ...goals(input, summaries).map((g) =>
      `| ${g.what} | ${g.measured} | ${
        g.met === undefined ? "—" : g.met ? "met" : "not met"
      } |`
    ),
    "",
    ...(input.startup ? [...startupSection(input.startup), ""] : []),
    "## Machine",
    "",
    `- ${m.nproc} CPUs (\`nproc\`), ${m.cpu}, ${m.memory} RAM`,
    `- Linux ${m.kernel}`,
    ...Object.entries(m.versions).map(([k, v]) => `- \`${k}\`: ${v}`),
    `- legate: commit ${m.commit} of this repository, plus any uncommitted changes in the working tree`,
    "",
    "## Method",
    "",
    "- **Upstreams**, so that the upstream is never what limits a target: nginx (one worker, no access log) serves the HTTP downloads, `/small` from `return 200` with a fixed 100-byte body and `/big` a static 10 MiB file with `sendfile on`; redis-server (`--save '' --appendonly no`) answers the Redis load. bench/upstream.ts (one Deno process) serves only what nginx cannot: `POST /upload`, which reads the whole body (Content-Length or chunked) and counts it before it answers — nginx's `return` answers before the body is read — and the TCP echo and sink (read/write loops, 64 KiB buffers).",
    `- **Headroom**: the fastest proxy's throughput over direct's, per scenario: ${
      headroom(summaries)
    }.${
      summaries.some(({ sc }) => sc.service === "upload")
        ? " For uploads, direct is curl sending straight to bench/upstream.ts."
        : ""
    }`,
    "- **Targets**: direct (the load goes straight to the upstream), nginx, HAProxy, socat (TCP scenarios only: it is L4), the Deno floor and legate, all started once by the harness and kept running for the whole benchmark. Configs: bench/peers/ (templates; ports and paths are filled in at run time). The floor and legate run from this checkout with the flags of `deno task start`.",
    "- **Deno floor** (bench/floor.ts): what Deno itself costs per request, byte and connection. HTTP: a `Deno.serve` forwarder over pooled keep-alive HTTP/1.1 upstream connections (`Deno.connect`, no delay, an idle stack) that writes the request head and streams the body (Content-Length or chunked), parses the status line and header fields and streams the response body by Content-Length or chunked framing; no forwarding headers, no hop-by-hop filtering, no timeouts. TCP: a relay per service, two read/write loops on 64 KiB buffers, no delay on both sides, half-close passed on. It is the floor of the cost per request and per connection; for bodies it is not: it writes each upload chunk before reading the next, where legate reads ahead while it writes, so legate can beat it per GB.",
    '- **Fair tuning**: upstream keep-alive (nginx `proxy_http_version 1.1`, `keepalive 64`, `Connection ""`; HAProxy `http-reuse always`; the floor and legate pool by default), no response or request buffering (nginx `proxy_buffering off`, `proxy_request_buffering off`, `client_max_body_size 0`; HAProxy streams bodies without `option http-buffer-request`), 64 KiB buffers (nginx `proxy_buffer_size`, HAProxy `tune.bufsize`, socat `-b`), no access logs, unlimited client keep-alive requests. nginx and HAProxy add `X-Forwarded-For/Proto/Host` and `Via` as legate does (the floor adds nothing). HAProxy splicing is off (default).',
    "- **TCP routes**: every TCP scenario goes through the target's TCP service for it (nginx `stream`, HAProxy `mode tcp`, socat, the floor's relay, legate `tcp://` routes): HTTP over TCP to the nginx upstream, Redis to redis-server, echo and sink to bench/upstream.ts.",
    `- **Uploads**: a ${
      fmt(input.uploadBytes / 1e6)
    } MB file made once in the temporary directory, sent by curl again and again for the run's seconds (at least once); each answer must be \`200\` with the upstream's byte count equal to the file's size. curl sends \`Expect: 100-continue\`, and the upstream answers \`100 Continue\` as any origin does.`,
    "- **Redis**: redis-benchmark `-t get,set -c 50`, `-n` sized from the target's previous run (the warm-up's) so that a run takes about the run's seconds; ops/s over both tests, p50/p99 the slower test's.",
    "- **Access log**: `legate, access log on` is legate with `--access-log json`, its standard output a pipe the harness reads, as a container runtime reads a container's log; it writes one JSON line per HTTP request and per TCP connection. Its CPU per unit over plain legate's is the log's cost.",
    ...(input.baseline === undefined ? [] : [
      `- **Baseline**: \`--baseline ${input.baseline}\` runs legate as commit ${input.baseline} had it (\`git archive\`, started with that commit's own \`deno task start\` flags and the same route files) as one more target, so a change's cost per request is measured beside the change, in the same run.`,
    ]),
    `- **Interleaving**: each scenario runs its targets in turn (direct, nginx, HAProxy, socat, the floor, legate, legate with its access log${
      input.baseline === undefined ? "" : ", legate at the baseline"
    }), and runs that round ${input.reps} time(s) in all, so slow drifts of the machine hit all targets alike.`,
    "- **Throughput and latency** come from the load tool: wrk `--latency` for HTTP (p50/p99 per request), bench/upload.ts (p50/p99 per upload), redis-benchmark, bench/tcp_load.ts for TCP.",
    "- **Proxy CPU**: utime+stime (and the cutime+cstime of reaped children) from /proc/PID/stat of the proxy process and all its descendants, read before and after each run, divided by the work done. `% of a core` is that CPU time over the run's wall time.",
    "- **Proxy RSS**: the sum of VmRSS over the proxy's processes, sampled every 200 ms; *under load* is the median of the samples in the second half of the run, *peak* the largest sample or summed VmHWM (reset through /proc/PID/clear_refs before each run), the largest over repetitions. For multi-process proxies (nginx master + workers, socat's per-connection children) the sum counts shared pages more than once.",
    "- **Ranges**: every column shows the median over repetitions and, in parentheses, the lowest and highest (peak RSS: the highest).",
    `- Bulk size: ${fmt(s.bulkBytes / 2 ** 20)} MiB per TCP bulk run.`,
    `- RSS after start-up and the forwarding checks (which include 10 MiB downloads and 3 MB uploads), before any load: ${
      TARGET_NAMES.filter((t) => input.idleMb[t] !== undefined)
        .map((t) => `${LABEL[t]} ${fmt(input.idleMb[t])} MB`).join(", ")
    }.`,
    "",
    "## Results",
  );
  for (const [i, { sc, rows }] of summaries.entries()) {
    out.push(
      "",
      `### ${i + 1}. ${sc.title}`,
      "",
      `Load: ${sc.load}`,
      "",
      table(sc, rows, input.reps),
      "",
      ratioLine(
        sc,
        find(rows, "legate"),
        find(rows, "nginx"),
        "legate / nginx",
      ),
      ratioLine(
        sc,
        find(rows, "legate"),
        find(rows, "haproxy"),
        "legate / HAProxy",
      ),
      ratioLine(
        sc,
        find(rows, "legate"),
        find(rows, "floor"),
        "legate / Deno floor",
      ),
      ratioLine(
        sc,
        find(rows, "legate_log"),
        find(rows, "legate"),
        "legate, access log on / off",
      ),
      ...(input.baseline === undefined ? [] : [
        ratioLine(
          sc,
          find(rows, "legate"),
          find(rows, "baseline"),
          `legate / legate at ${input.baseline}`,
        ),
      ]),
    );
  }
  out.push(
    "",
    "## Reproduce",
    "",
    "On Debian 12 with Deno 2.9:",
    "",
    "```sh",
    "apt-get install -y nginx-light libnginx-mod-stream haproxy socat wrk curl redis-server redis-tools",
    "deno task bench               # full run: 3 repetitions, 6 s per run",
    "deno task bench --workers 2   # nginx and HAProxy with 2 workers/threads",
    "deno task bench --quick       # 1 repetition, 1 s per run, 32 MB uploads",
    "deno task bench --scenarios http-small,startup   # some scenarios only",
    "```",
    "",
    "`--reps N`, `--seconds N` and `--scenarios id,id` override the defaults. What the harness starts (`$DIR` is a temporary directory, ports are free loopback ports):",
    "",
    "```sh",
    ...input.startCommands,
    "```",
    "",
    "The load, per scenario (`$PORT` is the target's port for that service; redis-benchmark's `-n` as sized for the run):",
    "",
    "```sh",
    ...input.scenarios.map((sc) => sc.command("$PORT", s).join(" ")),
    "```",
    "",
    "The start-up section also runs:",
    "",
    "```sh",
    ...input.startupCommands,
    "```",
    "",
  );
  return out.join("\n");
}

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(
    />/g,
    "&gt;",
  );
}

/** bench/ratios.svg: legate relative to nginx, HAProxy and the Deno floor, per scenario. */
export function renderSvg(input: ReportInput): string {
  const groups = input.scenarios.map((sc) => {
    const rows = summarize(sc, input.records);
    const get = (t: TargetName) => rows.find((r) => r.target === t);
    return {
      label: sc.short,
      bars: [
        relative(sc, get("legate"), get("nginx")),
        relative(sc, get("legate"), get("haproxy")),
        relative(sc, get("legate"), get("floor")),
      ],
    };
  });
  const colors = ["#2b6cb0", "#dd6b20", "#38a169"];
  const names = ["vs nginx", "vs HAProxy", "vs Deno floor"];
  const width = 1040, height = 440;
  const left = 60, right = 20, top = 78, bottom = 60;
  const plotW = width - left - right, plotH = height - top - bottom;
  const highest = Math.max(
    1.25,
    ...groups.flatMap((g) => g.bars.filter((b) => b !== undefined)),
  );
  const step = highest <= 2 ? 0.25 : highest <= 4 ? 0.5 : 1;
  const yMax = Math.ceil(highest * 1.1 / step) * step;
  const y = (v: number) => top + plotH - v / yMax * plotH;
  const svg: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="24" font-size="16" font-weight="bold">legate relative to nginx, HAProxy and the Deno floor (1.0 = parity, higher = legate better)</text>`,
    `<text x="${left}" y="44" font-size="11" fill="#555">${
      esc(
        `throughput: legate ÷ peer; TCP p99 latency: peer ÷ legate. Medians, ${input.reps} rep(s), ${input.workers} worker(s)${
          input.quick ? ", QUICK RUN" : ""
        }, ${input.machine.date.slice(0, 10)}`,
      )
    }</text>`,
  ];
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.push(
      `<line x1="${left}" x2="${width - right}" y1="${y(v)}" y2="${
        y(v)
      }" stroke="#e2e2e2"/>`,
      `<text x="${left - 8}" y="${y(v) + 4}" text-anchor="end" fill="#555">${
        v.toFixed(2)
      }</text>`,
    );
  }
  const groupW = plotW / groups.length, barW = groupW * 0.26;
  for (const [i, g] of groups.entries()) {
    const center = left + groupW * (i + 0.5);
    for (const [j, value] of g.bars.entries()) {
      const x = center + (j - 1.5) * (barW + 2);
      if (value === undefined) {
        svg.push(
          `<text x="${x + barW / 2}" y="${
            y(0) - 6
          }" text-anchor="middle" fill="#999">n/a</text>`,
        );
        continue;
      }
      svg.push(
        `<rect x="${x.toFixed(1)}" y="${y(value).toFixed(1)}" width="${
          barW.toFixed(1)
        }" height="${(y(0) - y(value)).toFixed(1)}" fill="${colors[j]}"/>`,
        `<text x="${(x + barW / 2).toFixed(1)}" y="${
          (y(value) - 5).toFixed(1)
        }" text-anchor="middle">${value.toFixed(2)}×</text>`,
      );
    }
    svg.push(
      `<text x="${center.toFixed(1)}" y="${
        height - bottom + 20
      }" text-anchor="middle">${esc(g.label)}</text>`,
    );
  }
  svg.push(
    `<line x1="${left}" x2="${width - right}" y1="${y(1)}" y2="${
      y(1)
    }" stroke="#c53030" stroke-dasharray="6 4"/>`,
    `<line x1="${left}" x2="${width - right}" y1="${y(0)}" y2="${
      y(0)
    }" stroke="#333"/>`,
  );
  for (const [j, name] of names.entries()) {
    const x = width - right - 340 + j * 110;
    svg.push(
      `<rect x="${x}" y="54" width="12" height="12" fill="${colors[j]}"/>`,
      `<text x="${x + 18}" y="64">${name}</text>`,
    );
  }
  svg.push("</svg>", "");
  return svg.join("\n");
}

async function firstLine(cmd: string, args: string[], match?: RegExp) {
  try {
    const out = await run(cmd, args, 10_000);
    const lines = (out.stdout + out.stderr).split("\n").map((l) => l.trim());
    return (match ? lines.find((l) => match.test(l)) : lines[0]) ?? "unknown";
  } catch {
    return "not found";
  }
}

/** Describes this machine and the tools' versions. */
export async function machineInfo(): Promise<Machine> {
  const read = async (path: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch {
      return "";
    }
  };
  const cpuinfo = await read("/proc/cpuinfo");
  const memKb = Number(
    (await read("/proc/meminfo")).match(/MemTotal:\s+(\d+)/)?.[1] ?? NaN,
  );
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    nproc: await firstLine("nproc", []),
    cpu: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown CPU",
    memory: `${fmt(memKb / 2 ** 20)} GiB`,
    kernel: (await read("/proc/sys/kernel/osrelease")).trim(),
    versions: {
      "deno --version": await firstLine(Deno.execPath(), ["--version"]),
      "nginx -v": await firstLine("nginx", ["-v"]),
      "haproxy -v": await firstLine("haproxy", ["-v"]),
      "socat -V": await firstLine("socat", ["-V"], /socat version/),
      "wrk -v": await firstLine("wrk", ["-v"], /^wrk /),
    },
    commit: await firstLine("git", [
      "-C",
      ROOT,
      "rev-parse",
      "--short",
      "HEAD",
    ]),
  };
}

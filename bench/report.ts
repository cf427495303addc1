/**
 * The benchmark report: medians over repetitions, legate's ratios to nginx
 * and HAProxy, the machine description, BENCHMARKS.md (Markdown) and
 * bench/ratios.svg (a hand-written SVG bar chart, no chart library).
 * @module
 */
import { ROOT, TARGET_NAMES, type TargetName } from "./peers.ts";
import { median, run, type Usage } from "./procs.ts";
import type { Scenario, Settings } from "./scenarios.ts";
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
  /** Proxy RSS after start-up, before any load, MB. */
  readonly idleMb: Partial<Record<TargetName, number>>;
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
  /** Errors over all runs. */
  readonly errors: number;
}

const LABEL: Record<TargetName, string> = {
  direct: "direct (no proxy)",
  nginx: "nginx",
  haproxy: "HAProxy",
  socat: "socat",
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
    const optional = (key: string, v: number | undefined) =>
      v === undefined ? {} : { [key]: v };
    const peaks = mine.map((r) => r.usage?.peakMb).filter((v) =>
      v !== undefined
    );
    out.push({
      target,
      runs: mine.length,
      value: median(values),
      min: Math.min(...values),
      max: Math.max(...values),
      ...optional("p50", medianOf(mine.map((r) => r.result.p50Ms))),
      ...optional("p99", medianOf(mine.map((r) => r.result.p99Ms))),
      ...optional(
        "cpu",
        medianOf(
          mine.map((r) =>
            r.usage && r.result.work > 0
              ? r.usage.cpuSeconds / r.result.work * scenario.cpuScale
              : undefined
          ),
        ),
      ),
      ...optional(
        "cpuPct",
        medianOf(
          mine.map((r) =>
            r.usage ? 100 * r.usage.cpuSeconds / r.usage.wallSeconds : undefined
          ),
        ),
      ),
      ...optional("steadyMb", medianOf(mine.map((r) => r.usage?.steadyMb))),
      ...optional("peakMb", peaks.length > 0 ? Math.max(...peaks) : undefined),
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
  for (const r of rows) {
    const value = reps > 1
      ? `${fmt(r.value)} (${fmt(r.min)}–${fmt(r.max)})`
      : fmt(r.value);
    lines.push(
      `| ${
        [
          LABEL[r.target],
          value,
          fmt(r.p50),
          fmt(r.p99),
          fmt(r.cpu),
          fmt(r.cpuPct),
          fmt(r.steadyMb),
          fmt(r.peakMb),
          String(r.errors),
        ].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
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
  const out: string[] = [];
  out.push(
    "# Benchmarks",
    "",
    `legate against nginx, HAProxy, socat (TCP only) and no proxy at all ("direct"), on loopback. Generated by \`deno task bench${
      input.argv.length > 0 ? " " + input.argv.join(" ") : ""
    }\` on ${m.date} in ${
      Math.round(input.elapsedSeconds)
    } s; do not edit by hand.`,
    "",
    `Mode: ${mode}. Workers: ${input.workers} (nginx \`worker_processes ${input.workers}\`, HAProxy \`nbthread ${input.workers}\`; legate is always one process, socat forks one process per connection).`,
    "",
    "**Caveat:** the machine has " + m.nproc +
      " cores, and the load generator (wrk or bench/tcp_load.ts), the upstream (Deno) and the proxy all share them. Numbers measure the whole system on this box, not the proxy alone; proxy CPU per request and per GB are the fairer comparison.",
    "",
    "## Summary",
    "",
    "Medians. Ratios are legate ÷ peer for the headline number: above 1 means legate is faster for throughput, slower for p99 latency.",
    "",
    input.baseline === undefined
      ? "| scenario | headline | direct | nginx | HAProxy | socat | legate | legate, access log on | legate/nginx | legate/HAProxy | CPU per unit, access log on ÷ off |"
      : `| scenario | headline | direct | nginx | HAProxy | socat | legate | legate, access log on | legate at ${input.baseline} | legate/nginx | legate/HAProxy | CPU per unit, access log on ÷ off | legate CPU per unit ÷ at ${input.baseline} |`,
    input.baseline === undefined
      ? "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
      : "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  const shown = TARGET_NAMES.filter((t) =>
    t !== "baseline" || input.baseline !== undefined
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
      `| ${sc.title} | ${sc.headline === "p99" ? "p99 ms" : sc.unit} | ${
        shown.map(head).join(" | ")
      } | ${times(headlineRatio(sc, legate, find(rows, "nginx")))} | ${
        times(headlineRatio(sc, legate, find(rows, "haproxy")))
      } | ${cpuRatio(legate, find(rows, "legate_log"))}${
        input.baseline === undefined
          ? ""
          : ` | ${cpuRatio(find(rows, "baseline"))}`
      } |`,
    );
  }
  out.push(
    "",
    "![legate relative to nginx and HAProxy](bench/ratios.svg)",
    "",
    "## Machine",
    "",
    `- ${m.nproc} CPUs (\`nproc\`), ${m.cpu}, ${m.memory} RAM`,
    `- Linux ${m.kernel}`,
    ...Object.entries(m.versions).map(([k, v]) => `- \`${k}\`: ${v}`),
    `- legate: commit ${m.commit} of this repository, plus any uncommitted changes in the working tree`,
    "",
    "## Method",
    "",
    "- **Upstreams** (bench/upstream.ts, one Deno process): an HTTP origin on `Deno.serve` answering fixed bodies (100 bytes, or 10 MiB for `/big`), a TCP echo server and a TCP sink (read/write loops, 64 KiB buffers).",
    "- **Targets**: direct (the load goes straight to the upstream), nginx, HAProxy, socat (TCP scenarios only: it is L4) and legate, all started once by the harness and kept running for the whole benchmark. Configs: bench/peers/ (templates; ports and paths are filled in at run time). legate runs from this checkout with the flags of `deno task start`.",
    '- **Fair tuning**: upstream keep-alive (nginx `proxy_http_version 1.1`, `keepalive 64`, `Connection ""`; HAProxy `http-reuse always`; legate pools by default), no response buffering (`proxy_buffering off`), 64 KiB buffers (nginx `proxy_buffer_size`, HAProxy `tune.bufsize`, socat `-b`), no access logs, unlimited client keep-alive requests. nginx and HAProxy add `X-Forwarded-For/Proto/Host` and `Via` as legate does. HAProxy splicing is off (default).',
    "- **Access log**: `legate, access log on` is legate with `--access-log json`, its standard output a pipe the harness reads, as a container runtime reads a container's log; it writes one JSON line per HTTP request and per TCP connection. Its CPU per unit over plain legate's is the log's cost.",
    ...(input.baseline === undefined ? [] : [
      `- **Baseline**: \`--baseline ${input.baseline}\` runs legate as commit ${input.baseline} had it (\`git archive\`, started with that commit's own \`deno task start\` flags and the same route files) as one more target, so a change's cost per request is measured beside the change, in the same run.`,
    ]),
    `- **Interleaving**: each scenario runs its targets in turn (direct, nginx, HAProxy, socat, legate, legate with its access log${
      input.baseline === undefined ? "" : ", legate at the baseline"
    }), and runs that round ${input.reps} time(s) in all, so slow drifts of the machine hit all targets alike.`,
    "- **Throughput and latency** come from the load tool: wrk `--latency` for HTTP (p50/p99 per request), bench/tcp_load.ts for TCP.",
    "- **Proxy CPU**: utime+stime (and the cutime+cstime of reaped children) from /proc/PID/stat of the proxy process and all its descendants, read before and after each run, divided by the work done. `% of a core` is that CPU time over the run's wall time.",
    "- **Proxy RSS**: the sum of VmRSS over the proxy's processes, sampled every 200 ms; *under load* is the median of the samples in the second half of the run, *peak* the largest sample or summed VmHWM (reset through /proc/PID/clear_refs before each run), the largest over repetitions. For multi-process proxies (nginx master + workers, socat's per-connection children) the sum counts shared pages more than once.",
    `- Bulk size: ${fmt(s.bulkBytes / 2 ** 20)} MiB per TCP bulk run.`,
    `- RSS after start-up, before any load: ${
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
    "apt-get install -y nginx-light libnginx-mod-stream haproxy socat wrk",
    "deno task bench               # full run: 3 repetitions, 6 s per run, about 7 minutes",
    "deno task bench --workers 2   # nginx and HAProxy with 2 workers/threads",
    "deno task bench --quick       # 1 repetition, 1 s per run, under a minute",
    "```",
    "",
    "`--reps N`, `--seconds N` and `--scenarios id,id` override the defaults. What the harness starts (`$DIR` is a temporary directory, ports are free loopback ports):",
    "",
    "```sh",
    ...input.startCommands,
    "```",
    "",
    "The load, per scenario (`$PORT` is the target's port for that service):",
    "",
    "```sh",
    ...input.scenarios.map((sc) => sc.command("$PORT", s).join(" ")),
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

/** bench/ratios.svg: legate relative to nginx and HAProxy, per scenario. */
export function renderSvg(input: ReportInput): string {
  const groups = input.scenarios.map((sc) => {
    const rows = summarize(sc, input.records);
    const get = (t: TargetName) => rows.find((r) => r.target === t);
    return {
      label: sc.short,
      bars: [
        relative(sc, get("legate"), get("nginx")),
        relative(sc, get("legate"), get("haproxy")),
      ],
    };
  });
  const colors = ["#2b6cb0", "#dd6b20"];
  const names = ["vs nginx", "vs HAProxy"];
  const width = 760, height = 420;
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
    `<text x="${left}" y="24" font-size="16" font-weight="bold">legate relative to nginx and HAProxy (1.0 = parity, higher = legate better)</text>`,
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
  const groupW = plotW / groups.length, barW = groupW * 0.3;
  for (const [i, g] of groups.entries()) {
    const center = left + groupW * (i + 0.5);
    for (const [j, value] of g.bars.entries()) {
      const x = center + (j === 0 ? -barW - 2 : 2);
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
    const x = width - right - 220 + j * 110;
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

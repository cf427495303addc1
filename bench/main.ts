/**
 * `deno task bench`: benchmarks legate against nginx, HAProxy, socat, the
 * Deno floor (bench/floor.ts) and no proxy on loopback, and writes
 * BENCHMARKS.md and bench/ratios.svg.
 *
 * It starts the upstreams (nginx, redis-server, bench/upstream.ts) and every
 * proxy as child processes, checks that each forwards correctly, measures
 * start-up and idle memory (5 rounds, apart from the load), runs every
 * scenario against the targets interleaved (direct, nginx, HAProxy, socat,
 * floor, legate, legate with its access log, then again), measuring the
 * proxy's CPU and memory through /proc, and stops every child at the end, on
 * failure and on SIGINT/SIGTERM too. `--scenarios` also takes `startup`.
 *
 * ```sh
 * deno task bench [--quick] [--workers N] [--reps N] [--seconds N] [--scenarios id,id] [--baseline REV]
 * ```
 *
 * The task runs with `--allow-all`: Deno grants reads of /proc (CPU time and
 * memory of the proxies) to no narrower permission, and `--allow-run` of
 * nginx, HAProxy and socat is as strong anyway.
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  BENCH_DIR,
  ROOT,
  startCommands,
  startTargets,
  startUpstreams,
  type TargetName,
} from "./peers.ts";
import {
  initClockTicks,
  measure,
  memoryMb,
  type Proc,
  run,
  stop,
} from "./procs.ts";
import {
  fmt,
  machineInfo,
  renderMarkdown,
  renderSvg,
  type RunRecord,
} from "./report.ts";
import {
  runScenario,
  SCENARIOS,
  serves,
  type Settings,
  smokeCheck,
} from "./scenarios.ts";
import {
  measureStartup,
  startupCommands,
  type StartupResult,
} from "./startup.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    workers: { type: "string", default: "1" },
    reps: { type: "string" },
    seconds: { type: "string" },
    scenarios: { type: "string" },
    baseline: { type: "string" },
  },
});

function intFlag(name: string, text: string, min: number, max: number) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`--${name} must be a whole number from ${min} to ${max}`);
    Deno.exit(2);
  }
  return n;
}

const quick = values.quick;
const workers = intFlag("workers", values.workers, 1, 16);
const reps = intFlag("reps", values.reps ?? (quick ? "1" : "3"), 1, 20);
const dir = await Deno.makeTempDir({ prefix: "legate-bench-" });
const uploadBytes = (quick ? 32 : 200) * 1e6;
const settings: Settings = {
  seconds: intFlag("seconds", values.seconds ?? (quick ? "1" : "6"), 1, 120),
  bulkBytes: (quick ? 256 : 2048) * 2 ** 20,
  uploadFile: join(dir, "upload.bin"),
};
const warmup: Settings | undefined = quick
  ? undefined
  : { ...settings, seconds: 2, bulkBytes: 256 * 2 ** 20 };
const STARTUP = "startup";
/** Start-up rounds. */
const STARTUP_REPS = 5;
const wanted = values.scenarios?.split(",");
const known = [...SCENARIOS.map((s) => s.id), STARTUP];
const unknown = wanted?.filter((id) => !known.includes(id));
if (unknown && unknown.length > 0) {
  console.error(
    `--scenarios: unknown ${unknown.join(", ")}; known: ${known.join(", ")}`,
  );
  Deno.exit(2);
}
const scenarios = SCENARIOS.filter((s) => !wanted || wanted.includes(s.id));
const withStartup = !wanted || wanted.includes(STARTUP);

/**
 * Exports commit `rev` of this repository to `dir` (git archive), for the
 * `--baseline` target: legate as it was, measured beside legate as it is.
 */
async function checkout(rev: string, dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const archive = join(dir, "..", "baseline.tar");
  for (
    const [cmd, args] of [
      ["git", ["archive", "--output", archive, rev]],
      ["tar", ["-x", "-f", archive, "-C", dir]],
    ] as const
  ) {
    const result = await run(cmd, [...args], 60_000, ROOT);
    if (result.code !== 0) {
      throw new Error(`--baseline ${rev}: ${cmd} failed: ${result.stderr}`);
    }
  }
  return dir;
}

const t0 = performance.now();
const log = (text: string) =>
  console.error(`[${((performance.now() - t0) / 1000).toFixed(1)}s] ${text}`);

await initClockTicks();
const machine = await machineInfo();
const procs: Proc[] = [];
const records: RunRecord[] = [];
const idleMb: Partial<Record<TargetName, number>> = {};
let startup: StartupResult | undefined;

let cleaning: Promise<void> | undefined;
const cleanup = () =>
  cleaning ??= (async () => {
    for (const proc of [...procs].reverse()) {
      await stop(proc).catch((e) => log(`stopping ${proc.name}: ${e}`));
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  })();
const onSignal = () => {
  log("interrupted: stopping child processes");
  cleanup().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

try {
  if (scenarios.some((s) => s.service === "upload")) {
    // written once, in 1 MB pieces of one byte value
    const file = await Deno.open(settings.uploadFile, {
      write: true,
      create: true,
    });
    const piece = new Uint8Array(1e6).fill(0x75);
    for (let i = 0; i < uploadBytes / 1e6; i++) {
      for (let off = 0; off < piece.length;) {
        off += await file.write(piece.subarray(off));
      }
    }
    file.close();
  }
  const upstream = await startUpstreams(dir, procs);
  const baselineDir = values.baseline === undefined
    ? undefined
    : await checkout(values.baseline, join(dir, "baseline-src"));
  const targets = await startTargets(
    upstream,
    dir,
    workers,
    procs,
    baselineDir,
  );
  for (const target of targets) {
    try {
      await smokeCheck(target);
    } catch (error) {
      const dead = procs.filter((p) => p.exited());
      throw new Error(
        `${target.name} failed its check: ${(error as Error).message}${
          dead.map((p) => `\n${p.name} had exited:\n${p.output()}`).join("")
        }`,
        { cause: error },
      );
    }
    if (target.pids.length > 0) {
      idleMb[target.name] = await memoryMb(target.pids);
    }
  }
  log(`started and checked: ${targets.map((t) => t.name).join(", ")}`);
  const alive = () => {
    const dead = procs.find((p) => p.exited());
    if (dead) throw new Error(`${dead.name} exited:\n${dead.output()}`);
  };
  if (withStartup) {
    startup = await measureStartup(
      upstream,
      dir,
      workers,
      STARTUP_REPS,
      targets.find((t) => t.name === "legate")!,
      log,
    );
  }
  for (const scenario of scenarios) {
    const mine = targets.filter((t) => serves(scenario, t));
    // each target's last rate, for loads sized by count (redis-benchmark -n)
    const rates = new Map<TargetName, number>();
    if (warmup) {
      for (const target of mine) {
        const result = await runScenario(scenario, target, warmup);
        rates.set(target.name, result.throughput);
      }
    }
    for (let rep = 1; rep <= reps; rep++) {
      for (const target of mine) {
        alive();
        const { result, usage } = await measure(
          target.pids,
          () => runScenario(scenario, target, settings, rates.get(target.name)),
        );
        rates.set(target.name, result.throughput);
        records.push({
          scenario: scenario.id,
          target: target.name,
          rep,
          result,
          usage,
        });
        log(
          `${scenario.id} ${rep}/${reps} ${target.name}: ${
            fmt(result.throughput)
          } ${scenario.unit}, p99 ${fmt(result.p99Ms)} ms, CPU ${
            fmt(usage?.cpuSeconds)
          } s, peak ${fmt(usage?.peakMb)} MB, errors ${result.errors}`,
        );
      }
    }
  }
} finally {
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  await cleanup();
}

const input = {
  quick,
  baseline: values.baseline,
  reps,
  workers,
  settings,
  machine,
  scenarios,
  records,
  idleMb,
  startup,
  uploadBytes,
  startCommands: startCommands(),
  startupCommands: startupCommands(),
  argv: Deno.args,
  elapsedSeconds: (performance.now() - t0) / 1000,
};
const markdown = join(ROOT, "BENCHMARKS.md");
const svg = join(BENCH_DIR, "ratios.svg");
await Deno.writeTextFile(markdown, renderMarkdown(input));
await Deno.writeTextFile(svg, renderSvg(input));
// the repository's `deno fmt --check` covers both files
await run(Deno.execPath(), ["fmt", "--quiet", markdown, svg], 30_000, ROOT);
const text = await Deno.readTextFile(markdown);
console.log(text.slice(text.indexOf("## Summary"), text.indexOf("![")).trim());
log(`wrote ${markdown} and ${svg}`);

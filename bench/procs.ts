/**
 * Child processes and /proc measurements for the benchmark: starting and
 * stopping long-running processes (upstreams, proxies), running a load tool to
 * completion under a time limit, waiting on conditions with a deadline, and
 * reading CPU time (utime+stime) and resident memory (VmRSS/VmHWM) of a
 * process and all its descendants.
 * @module
 */
import { freePort } from "../scripts/free_port.ts";
import { waitFor } from "../scripts/wait_for.ts";

const TAIL_BYTES = 16 * 1024;

/** A long-running child process whose output is kept (the last 16 KiB). */
export interface Proc {
  /** A label for messages. */
  readonly name: string;
  /** The process id. */
  readonly pid: number;
  /** The running process. */
  readonly child: Deno.ChildProcess;
  /** stdout and stderr seen so far (the tail only). */
  output(): string;
  /** Whether the process has exited. */
  exited(): boolean;
}

/** Starts `cmd args` in the background; stdin stays open only if `stdin` is set. */
export function spawn(
  name: string,
  cmd: string,
  args: string[],
  options: { stdin?: boolean; cwd?: string } = {},
): Proc {
  const child = new Deno.Command(cmd, {
    args,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd ? { cwd: options.cwd } : {}),
  }).spawn();
  let tail = "";
  const keep = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        tail = (tail + decoder.decode(chunk, { stream: true })).slice(
          -TAIL_BYTES,
        );
      }
    } catch {
      // the process went away; what was read is kept
    }
  };
  keep(child.stdout);
  keep(child.stderr);
  let exited = false;
  child.status.then(() => exited = true);
  return {
    name,
    pid: child.pid,
    child,
    output: () => tail,
    exited: () => exited,
  };
}

/** Stops `proc` and every process below it: SIGTERM, then SIGKILL after `graceMs`. */
export async function stop(proc: Proc, graceMs = 3_000): Promise<void> {
  const below = (await tree([proc.pid]).catch(() => []))
    .map((p) => p.pid).filter((pid) => pid !== proc.pid);
  const signal = (pid: number, sig: Deno.Signal) => {
    try {
      Deno.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  try {
    (proc.child.stdin as WritableStream | null)?.close().catch(() => {});
  } catch {
    // stdin was not piped or is already closed
  }
  signal(proc.pid, "SIGTERM");
  for (const pid of below) signal(pid, "SIGTERM");
  const exited = await Promise.race([
    proc.child.status.then(() => true),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), graceMs)),
  ]);
  if (!exited) signal(proc.pid, "SIGKILL");
  for (const pid of below) signal(pid, "SIGKILL");
  await proc.child.status;
}

/** What a command printed and how it ended. */
export interface RunResult {
  /** Exit code. */
  readonly code: number;
  /** Everything written to stdout. */
  readonly stdout: string;
  /** Everything written to stderr. */
  readonly stderr: string;
}

/** Runs `cmd args` (in `cwd`) to completion; it is killed after `timeoutMs`. */
export async function run(
  cmd: string,
  args: string[],
  timeoutMs = 60_000,
  cwd?: string,
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args,
    ...(cwd ? { cwd } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export async function accepts(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** One process of a tree, with its CPU time in clock ticks. */
interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime + cutime + cstime: its own time and that of reaped children. */
  readonly ticks: number;
}

async function readStat(pid: number): Promise<ProcStat | undefined> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/stat`);
    // fields after the command name, which may contain spaces: state is field 3
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
    const at = (field: number) => f[field - 3] ?? 0;
    return { pid, ppid: at(4), ticks: at(14) + at(15) + at(16) + at(17) };
  } catch {
    return undefined; // exited meanwhile
  }
}

/** `roots` and all their live descendants (found by scanning /proc for parent ids). */
async function tree(roots: number[]): Promise<ProcStat[]> {
  if (roots.length === 0) return [];
  const all: ProcStat[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = await readStat(Number(entry.name));
    if (stat) all.push(stat);
  }
  const found = new Set(roots);
  // parents may have higher pids than children after wrap-around: repeat to a fixed point
  for (let pass = 0; pass < 8; pass++) {
    const before = found.size;
    for (const p of all) if (found.has(p.ppid)) found.add(p.pid);
    if (found.size === before) break;
  }
  return all.filter((p) => found.has(p.pid));
}

let clockTicks = 100;

/** Reads the kernel clock tick rate once (`getconf CLK_TCK`); 100 if unknown. */
export async function initClockTicks(): Promise<void> {
  try {
    const out = await run("getconf", ["CLK_TCK"], 5_000);
    const n = Number(out.stdout.trim());
    if (n > 0) clockTicks = n;
  } catch {
    // keep 100
  }
}

/** CPU seconds used so far by `roots` and their descendants, live and reaped. */
export async function cpuSeconds(roots: number[]): Promise<number> {
  const procs = await tree(roots);
  return procs.reduce((sum, p) => sum + p.ticks, 0) / clockTicks;
}

async function statusKb(pid: number, key: string): Promise<number> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/status`);
    const m = text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resident memory in MB (10^6 bytes) of the tree: the sum of VmRSS, or of VmHWM (peak). */
export async function memoryMb(
  roots: number[],
  key: "VmRSS" | "VmHWM" = "VmRSS",
): Promise<number> {
  let kb = 0;
  for (const p of await tree(roots)) kb += await statusKb(p.pid, key);
  return kb * 1024 / 1e6;
}

/** Resets the peak RSS (VmHWM) of every process in the tree (`5` to /proc/PID/clear_refs). */
export async function resetPeak(roots: number[]): Promise<void> {
  for (const p of await tree(roots)) {
    try {
      await Deno.writeTextFile(`/proc/${p.pid}/clear_refs`, "5");
    } catch {
      // not permitted or exited: VmHWM then covers the process's whole life
    }
  }
}

/** CPU and memory of the proxy processes over one measured run. */
export interface Usage {
  /** Wall time of the measured window, seconds. */
  readonly wallSeconds: number;
  /** CPU seconds (user + system) of the proxy tree during the window. */
  readonly cpuSeconds: number;
  /** Median of the RSS samples taken in the second half of the window, MB. */
  readonly steadyMb: number;
  /** Largest of: the RSS samples, and the summed VmHWM after the run (reset before it), MB. */
  readonly peakMb: number;
}

/** Runs `work` while measuring the process trees under `roots` (undefined usage if none). */
export async function measure<T>(
  roots: number[],
  work: () => Promise<T>,
  sampleMs = 200,
): Promise<{ result: T; usage: Usage | undefined }> {
  if (roots.length === 0) return { result: await work(), usage: undefined };
  await resetPeak(roots);
  const samples: { at: number; mb: number }[] = [];
  let sampling = true;
  const sampler = (async () => {
    // bounded: stops when the run ends, and after 10 000 samples at most
    for (let i = 0; sampling && i < 10_000; i++) {
      samples.push({ at: performance.now(), mb: await memoryMb(roots) });
      await new Promise((resolve) => setTimeout(resolve, sampleMs));
    }
  })();
  const cpu0 = await cpuSeconds(roots);
  const t0 = performance.now();
  let result: T;
  try {
    result = await work();
  } finally {
    sampling = false;
  }
  const t1 = performance.now();
  const cpu1 = await cpuSeconds(roots);
  await sampler;
  const hwm = await memoryMb(roots, "VmHWM");
  const late = samples.filter((s) => s.at >= (t0 + t1) / 2 && s.at <= t1)
    .map((s) => s.mb);
  const all = samples.map((s) => s.mb);
  return {
    result,
    usage: {
      wallSeconds: (t1 - t0) / 1000,
      cpuSeconds: cpu1 - cpu0,
      steadyMb: median(late.length > 0 ? late : all),
      peakMb: Math.max(hwm, ...all),
    },
  };
}

/** The median of `values` (NaN when empty). */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export { freePort, waitFor };

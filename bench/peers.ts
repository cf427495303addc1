/**
 * Starts what the benchmark measures: the Deno upstreams (bench/upstream.ts)
 * and the five targets — direct (no proxy), nginx, HAProxy, socat (TCP only)
 * and legate — from the templates in bench/peers/, with free loopback ports
 * and temporary paths filled in. legate runs from this checkout with exactly
 * the `deno run` flags of `deno task start`.
 * @module
 */
import { startFlags } from "../scripts/compile.ts";
import { join } from "node:path";
import { accepts, freePort, type Proc, spawn, stop, waitFor } from "./procs.ts";

/** The bench/ directory. */
export const BENCH_DIR: string = new URL(".", import.meta.url).pathname;
/** The repository root. */
export const ROOT: string = new URL("../", import.meta.url).pathname;

/**
 * Who forwards the load: nobody (`direct`), a peer proxy, legate, legate
 * writing its access log (`legate_log`), or legate as another commit has it
 * (`baseline`, with `--baseline REV`).
 */
export type TargetName =
  | "direct"
  | "nginx"
  | "haproxy"
  | "socat"
  | "legate"
  | "legate_log"
  | "baseline";

/** The targets in the order every repetition runs them. */
export const TARGET_NAMES: readonly TargetName[] = [
  "direct",
  "nginx",
  "haproxy",
  "socat",
  "legate",
  "legate_log",
  "baseline",
];

/** Ports of the three services: HTTP origin, TCP echo and TCP sink. */
export interface Ports {
  /** Absent for socat, which forwards TCP only. */
  readonly http?: number;
  /** TCP echo service. */
  readonly echo: number;
  /** TCP sink service. */
  readonly sink: number;
}

/** One target: where the load goes, and which processes to measure. */
export interface Target {
  /** Which target this is. */
  readonly name: TargetName;
  /** Where its services listen. */
  readonly ports: Ports;
  /** Root processes of the proxy (their descendants are measured too); none for direct. */
  readonly pids: number[];
}

/** Replaces every `{{NAME}}` in `text`; a name without a value is an error. */
export function fill(
  text: string,
  values: Record<string, string | number>,
): string {
  return text.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`no value for {{${name}}}`);
    return String(value);
  });
}

function template(name: string): string {
  return Deno.readTextFileSync(join(BENCH_DIR, "peers", name));
}

/** Fails with the process's output if it exited, else waits for `condition`. */
async function ready(
  proc: Proc,
  condition: () => Promise<boolean>,
): Promise<void> {
  await waitFor(async () => {
    if (proc.exited()) {
      throw new Error(`${proc.name} exited early:\n${proc.output()}`);
    }
    return await condition();
  }, `${proc.name} to accept connections`);
}

const allAccept = (ports: number[]) => async () =>
  (await Promise.all(ports.map(accepts))).every(Boolean);

/** Starts the upstreams; `procs` receives the process so the caller can stop it. */
export async function startUpstream(procs: Proc[]): Promise<Required<Ports>> {
  const proc = spawn("upstream", Deno.execPath(), [
    "run",
    "--allow-net",
    join(BENCH_DIR, "upstream.ts"),
  ], { stdin: true });
  procs.push(proc);
  let ports: Required<Ports> | undefined;
  await ready(proc, () => {
    const line = proc.output().split("\n").find((l) => l.startsWith("{"));
    if (line) ports = JSON.parse(line);
    return Promise.resolve(ports !== undefined);
  });
  return ports!;
}

/** How each proxy is started: its processes, and a check that it is ready. */
type Starter = (
  p: Required<Ports>,
  dir: string,
  vars: Record<string, string | number>,
  start: (name: string, cmd: string, args: string[], cwd?: string) => Proc,
) => Promise<Proc[]>;

const STARTERS: Record<Exclude<TargetName, "direct">, Starter> = {
  async nginx(p, dir, vars, start) {
    const conf = join(dir, "nginx.conf");
    await Deno.writeTextFile(
      conf,
      fill(template("nginx.conf"), vars),
    );
    const nginx = start("nginx", "nginx", [
      "-p",
      dir + "/",
      "-e",
      join(dir, "error.log"),
      "-c",
      conf,
      "-g",
      "daemon off;",
    ]);
    await ready(nginx, allAccept([p.http, p.echo, p.sink]));
    return [nginx];
  },
  async haproxy(p, dir, vars, start) {
    const conf = join(dir, "haproxy.cfg");
    await Deno.writeTextFile(
      conf,
      fill(template("haproxy.cfg"), vars),
    );
    const haproxy = start("haproxy", "haproxy", ["-db", "-f", conf]);
    await ready(haproxy, allAccept([p.http, p.echo, p.sink]));
    return [haproxy];
  },
  async socat(p, _dir, vars, start) {
    const socat = socatLines().map((line, i) =>
      start(`socat ${i + 1}`, "socat", fill(line, vars).split(/\s+/))
    );
    for (const proc of socat) await ready(proc, allAccept([p.echo, p.sink]));
    return socat;
  },
  legate: (_p, dir, vars, start) =>
    startLegate("legate", ROOT, dir, vars, start),
  // stdout is a pipe the harness reads, as a container runtime's log is.
  legate_log: (_p, dir, vars, start) =>
    startLegate("legate_log", ROOT, dir, vars, start, ACCESS_LOG),
  baseline: (_p, dir, vars, start) =>
    startLegate("baseline", String(vars.BASELINE), dir, vars, start),
};

/** The flags of the `legate_log` target. */
const ACCESS_LOG = ["--access-log", "json"];

/** legate from the checkout `root`, with that checkout's start flags. */
async function startLegate(
  name: string,
  root: string,
  dir: string,
  vars: Record<string, string | number>,
  start: (name: string, cmd: string, args: string[], cwd?: string) => Proc,
  flags: string[] = [],
): Promise<Proc[]> {
  const docs = fill(template("legate.yaml"), vars).split(/^---$/m);
  for (const [i, doc] of docs.entries()) {
    await Deno.writeTextFile(join(dir, `bench-${i + 1}.yaml`), doc);
  }
  const admin = freePort();
  const legate = start(name, Deno.execPath(), [
    "run",
    ...startFlags(root),
    join(root, "main.ts"),
    "serve",
    "--routes",
    dir,
    "--admin",
    `127.0.0.1:${admin}`,
    ...flags,
  ], root);
  await ready(legate, async () => {
    try {
      const res = await fetch(`http://127.0.0.1:${admin}/readyz`);
      await res.body?.cancel();
      return res.status === 200;
    } catch {
      return false;
    }
  });
  return [legate];
}

function socatLines(): string[] {
  return template("socat.args").split("\n").map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/**
 * Starts nginx, HAProxy, socat, legate and legate with its access log in
 * front of `up`, one after the
 * other (config files and routes go below `dir`), waits until each is ready,
 * and returns all six targets, seven with legate from the `baseline`
 * checkout. nginx and HAProxy get `workers` worker
 * processes or threads; socat forks per connection and legate is one process
 * either way. Ports come from binding port 0; as another process may take
 * such a port before the proxy binds it, a proxy that finds its address in
 * use is started again on new ports (three attempts).
 */
export async function startTargets(
  up: Required<Ports>,
  dir: string,
  workers: number,
  procs: Proc[],
  baseline: string | undefined,
): Promise<Target[]> {
  const targets: Target[] = [{ name: "direct", ports: up, pids: [] }];
  for (const name of TARGET_NAMES) {
    if (name === "direct" || (name === "baseline" && !baseline)) continue;
    for (let attempt = 1;; attempt++) {
      const ports = { http: freePort(), echo: freePort(), sink: freePort() };
      const sub = join(dir, `${name}-${attempt}`);
      await Deno.mkdir(sub);
      const mine: Proc[] = [];
      const start = (n: string, cmd: string, args: string[], cwd?: string) => {
        const proc = spawn(n, cmd, args, cwd ? { cwd } : {});
        procs.push(proc);
        mine.push(proc);
        return proc;
      };
      try {
        const vars = {
          HTTP: ports.http,
          ECHO: ports.echo,
          SINK: ports.sink,
          UP_HTTP: up.http,
          UP_ECHO: up.echo,
          UP_SINK: up.sink,
          WORKERS: workers,
          DIR: sub,
          ...(baseline ? { BASELINE: baseline } : {}),
        };
        const started = await STARTERS[name](ports, sub, vars, start);
        const { http, ...tcp } = ports;
        targets.push({
          name,
          ports: name === "socat" ? tcp : { http, ...tcp },
          pids: started.map((p) => p.pid),
        });
        break;
      } catch (e) {
        for (const proc of mine) await stop(proc);
        if (attempt >= 3 || !/address already in use/i.test(String(e))) {
          throw e;
        }
      }
    }
  }
  return targets;
}

/** The command lines the targets were started with, for BENCHMARKS.md. */
export function startCommands(): string[] {
  const symbolic = Object.fromEntries(
    ["HTTP", "ECHO", "SINK", "UP_HTTP", "UP_ECHO", "UP_SINK"].map((k) => [
      k,
      `$${k}_PORT`,
    ]),
  );
  return [
    "deno run --allow-net bench/upstream.ts",
    "nginx -p $DIR/ -e $DIR/error.log -c $DIR/nginx.conf -g 'daemon off;'",
    "haproxy -db -f $DIR/haproxy.cfg",
    ...socatLines().map((line) => `socat ${fill(line, symbolic)}`),
    `deno run ${
      startFlags().join(" ")
    } main.ts serve --routes $DIR --admin 127.0.0.1:$ADMIN_PORT`,
    `deno run ${
      startFlags().join(" ")
    } main.ts serve --routes $DIR --admin 127.0.0.1:$ADMIN_PORT ${
      ACCESS_LOG.join(" ")
    } | cat > /dev/null`,
  ];
}

/**
 * Starts what the benchmark measures: the upstreams (nginx for HTTP
 * downloads, redis-server, bench/upstream.ts for uploads and the TCP echo and
 * sink) and the targets — direct (no proxy), nginx, HAProxy, socat (TCP
 * only), the Deno floor (bench/floor.ts) and legate — from the templates in
 * bench/peers/, with free loopback ports and temporary paths filled in.
 * legate and the floor run with exactly the `deno run` flags of
 * `deno task start`.
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
 * Who forwards the load: nobody (`direct`), a peer proxy, the Deno floor
 * (bench/floor.ts), legate, legate
 * writing its access log (`legate_log`), or legate as another commit has it
 * (`baseline`, with `--baseline REV`).
 */
export type TargetName =
  | "direct"
  | "nginx"
  | "haproxy"
  | "socat"
  | "floor"
  | "legate"
  | "legate_log"
  | "baseline";

/** The targets in the order every repetition runs them. */
export const TARGET_NAMES: readonly TargetName[] = [
  "direct",
  "nginx",
  "haproxy",
  "socat",
  "floor",
  "legate",
  "legate_log",
  "baseline",
];

/** Ports of the services every target forwards. */
export interface Ports {
  /** HTTP downloads from nginx; absent for socat, which forwards TCP only. */
  readonly http?: number;
  /** HTTP uploads to bench/upstream.ts; absent for socat. */
  readonly upload?: number;
  /** TCP echo service. */
  readonly echo: number;
  /** TCP sink service. */
  readonly sink: number;
  /** TCP carrying HTTP to the nginx upstream. */
  readonly tcpHttp: number;
  /** TCP to redis-server. */
  readonly redis: number;
}

/** Which service of a target a scenario loads. */
export type Service = keyof Ports;

/** One target: where the load goes, and which processes to measure. */
export interface Target {
  /** Which target this is. */
  readonly name: TargetName;
  /** Where its services listen. */
  readonly ports: Ports;
  /** Root processes of the proxy (their descendants are measured too); none for direct. */
  readonly pids: number[];
  /** legate's admin port (for `legate healthcheck`). */
  readonly admin?: number;
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

/** The size of `/big`. */
export const BIG_BYTES = 10 * 1024 * 1024;

/**
 * Starts the upstreams below `dir`: nginx (HTTP), redis-server and
 * bench/upstream.ts (uploads, TCP echo and sink); `procs` receives the
 * processes so the caller can stop them.
 */
export async function startUpstreams(
  dir: string,
  procs: Proc[],
): Promise<Required<Ports>> {
  const deno = spawn("upstream", Deno.execPath(), [
    "run",
    "--allow-net",
    join(BENCH_DIR, "upstream.ts"),
  ], { stdin: true });
  procs.push(deno);
  let own: { upload: number; echo: number; sink: number } | undefined;
  await ready(deno, () => {
    const line = deno.output().split("\n").find((l) => l.startsWith("{"));
    if (line) own = JSON.parse(line);
    return Promise.resolve(own !== undefined);
  });
  const origin = join(dir, "origin");
  await Deno.mkdir(join(origin, "www"), { recursive: true });
  await Deno.writeFile(
    join(origin, "www", "big"),
    new Uint8Array(BIG_BYTES).fill(0x62),
  );
  // nginx's worker may run as another user than the harness: let it read /big
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(origin, 0o755);
  await Deno.chmod(join(origin, "www"), 0o755);
  await Deno.chmod(join(origin, "www", "big"), 0o644);
  const http = await retryPort(procs, (port) => {
    const conf = join(origin, "origin.conf");
    Deno.writeTextFileSync(
      conf,
      fill(template("origin.conf"), { DIR: origin, PORT: port }),
    );
    return spawn("upstream nginx", "nginx", [
      "-p",
      origin + "/",
      "-e",
      join(origin, "error.log"),
      "-c",
      conf,
      "-g",
      "daemon off;",
    ]);
  });
  const redis = await retryPort(
    procs,
    (port) =>
      spawn("redis-server", "redis-server", [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
      ]),
  );
  return { ...own!, http, tcpHttp: http, redis };
}

/**
 * Starts a process on a free port and waits until it accepts there; again on
 * another port (three attempts) if that one was taken meanwhile.
 */
async function retryPort(
  procs: Proc[],
  start: (port: number) => Proc,
): Promise<number> {
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    const proc = start(port);
    procs.push(proc);
    try {
      await ready(proc, allAccept([port]));
      return port;
    } catch (e) {
      await stop(proc);
      procs.splice(procs.indexOf(proc), 1);
      if (attempt >= 3 || !/address already in use/i.test(String(e))) throw e;
    }
  }
}

/** Starts one process of a target (and records it). */
export type Start = (
  name: string,
  cmd: string,
  args: string[],
  cwd?: string,
) => Proc;

/**
 * How each proxy is started: its config files are written, its processes
 * spawned through `start`, and, if `wait`, its readiness awaited.
 */
type Starter = (
  p: Required<Ports>,
  dir: string,
  vars: Record<string, string | number>,
  start: Start,
  wait: boolean,
) => Promise<Proc[]>;

/** Every port of `p` that the target listens on. */
const listening = (p: Required<Ports>, tcpOnly = false) =>
  tcpOnly
    ? [p.echo, p.sink, p.tcpHttp, p.redis]
    : [p.http, p.upload, p.echo, p.sink, p.tcpHttp, p.redis];

const STARTERS: Record<Exclude<TargetName, "direct">, Starter> = {
  async nginx(p, dir, vars, start, wait) {
    const conf = join(dir, "nginx.conf");
    await Deno.writeTextFile(conf, fill(template("nginx.conf"), vars));
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
    if (wait) await ready(nginx, allAccept(listening(p)));
    return [nginx];
  },
  async haproxy(p, dir, vars, start, wait) {
    const conf = join(dir, "haproxy.cfg");
    await Deno.writeTextFile(conf, fill(template("haproxy.cfg"), vars));
    const haproxy = start("haproxy", "haproxy", ["-db", "-f", conf]);
    if (wait) await ready(haproxy, allAccept(listening(p)));
    return [haproxy];
  },
  async socat(p, _dir, vars, start, wait) {
    const socat = socatLines().map((line, i) =>
      start(`socat ${i + 1}`, "socat", fill(line, vars).split(/\s+/))
    );
    if (wait) {
      for (const proc of socat) {
        await ready(proc, allAccept(listening(p, true)));
      }
    }
    return socat;
  },
  async floor(p, _dir, vars, start, wait) {
    const floor = start("floor", Deno.execPath(), [
      "run",
      ...startFlags(ROOT),
      join(BENCH_DIR, "floor.ts"),
      ...fill(FLOOR_ARGS, vars).split(" "),
    ], ROOT);
    if (wait) await ready(floor, allAccept(listening(p)));
    return [floor];
  },
  legate: (_p, dir, vars, start, wait) =>
    startLegate("legate", ROOT, dir, vars, start, wait),
  // stdout is a pipe the harness reads, as a container runtime's log is.
  legate_log: (_p, dir, vars, start, wait) =>
    startLegate("legate_log", ROOT, dir, vars, start, wait, ACCESS_LOG),
  baseline: (_p, dir, vars, start, wait) =>
    startLegate("baseline", String(vars.BASELINE), dir, vars, start, wait),
};

/** The services of the floor target, as bench/floor.ts takes them. */
const FLOOR_ARGS = [
  "http:{{HTTP}}:{{UP_HTTP}}",
  "http:{{UPLOAD}}:{{UP_UPLOAD}}",
  "tcp:{{ECHO}}:{{UP_ECHO}}",
  "tcp:{{SINK}}:{{UP_SINK}}",
  "tcp:{{TCP_HTTP}}:{{UP_HTTP}}",
  "tcp:{{REDIS}}:{{UP_REDIS}}",
].join(" ");

/** The flags of the `legate_log` target. */
const ACCESS_LOG = ["--access-log", "json"];

/** legate from the checkout `root`, with that checkout's start flags. */
async function startLegate(
  name: string,
  root: string,
  dir: string,
  vars: Record<string, string | number>,
  start: Start,
  wait: boolean,
  flags: string[] = [],
): Promise<Proc[]> {
  const docs = fill(template("legate.yaml"), vars).split(/^---$/m);
  for (const [i, doc] of docs.entries()) {
    await Deno.writeTextFile(join(dir, `bench-${i + 1}.yaml`), doc);
  }
  const legate = start(name, Deno.execPath(), [
    "run",
    ...startFlags(root),
    join(root, "main.ts"),
    "serve",
    "--routes",
    dir,
    "--admin",
    `127.0.0.1:${vars.ADMIN}`,
    ...flags,
  ], root);
  if (!wait) return [legate];
  await ready(legate, async () => {
    try {
      const res = await fetch(`http://127.0.0.1:${vars.ADMIN}/readyz`);
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

/** A target started in its own directory below `dir`, on new free ports. */
export interface Started {
  /** The target. */
  readonly target: Target;
  /** Its processes. */
  readonly procs: Proc[];
}

/**
 * Starts target `name` in front of `up`, with its files below `dir` and
 * `workers` nginx workers or HAProxy threads. `start` spawns each process.
 * With `wait`, it returns once the target is ready, and a proxy that finds
 * its address in use (another process took the free port meanwhile) is
 * started again on new ports (three attempts); without, right after
 * spawning.
 */
export async function startTarget(
  name: Exclude<TargetName, "direct">,
  up: Required<Ports>,
  dir: string,
  workers: number,
  start: Start,
  wait: boolean,
  baseline?: string,
): Promise<Started> {
  for (let attempt = 1;; attempt++) {
    const ports = {
      http: freePort(),
      upload: freePort(),
      echo: freePort(),
      sink: freePort(),
      tcpHttp: freePort(),
      redis: freePort(),
    };
    const admin = freePort();
    const sub = await Deno.makeTempDir({ dir, prefix: `${name}-` });
    const mine: Proc[] = [];
    const record: Start = (...args) => {
      const proc = start(...args);
      mine.push(proc);
      return proc;
    };
    try {
      const vars = {
        HTTP: ports.http,
        UPLOAD: ports.upload,
        ECHO: ports.echo,
        SINK: ports.sink,
        TCP_HTTP: ports.tcpHttp,
        REDIS: ports.redis,
        UP_HTTP: up.http,
        UP_UPLOAD: up.upload,
        UP_ECHO: up.echo,
        UP_SINK: up.sink,
        UP_REDIS: up.redis,
        ADMIN: admin,
        WORKERS: workers,
        DIR: sub,
        ...(baseline ? { BASELINE: baseline } : {}),
      };
      const started = await STARTERS[name](ports, sub, vars, record, wait);
      const { http, upload, ...tcp } = ports;
      return {
        target: {
          name,
          ports: name === "socat" ? tcp : { http, upload, ...tcp },
          pids: started.map((p) => p.pid),
          ...(name.startsWith("legate") || name === "baseline"
            ? { admin }
            : {}),
        },
        procs: mine,
      };
    } catch (e) {
      for (const proc of mine) await stop(proc);
      if (!wait || attempt >= 3 || !/address already in use/i.test(String(e))) {
        throw e;
      }
    }
  }
}

/**
 * Starts every target in front of `up`, one after the other (config files
 * and routes go below `dir`), waits until each is ready, and returns them
 * all with `direct` first, legate from the `baseline` checkout too if given.
 * nginx and HAProxy get `workers` worker processes or threads; socat forks
 * per connection, the floor and legate are one process either way.
 */
export async function startTargets(
  up: Required<Ports>,
  dir: string,
  workers: number,
  procs: Proc[],
  baseline: string | undefined,
): Promise<Target[]> {
  const targets: Target[] = [{ name: "direct", ports: up, pids: [] }];
  const start: Start = (name, cmd, args, cwd) => {
    const proc = spawn(name, cmd, args, cwd ? { cwd } : {});
    procs.push(proc);
    return proc;
  };
  for (const name of TARGET_NAMES) {
    if (name === "direct" || (name === "baseline" && !baseline)) continue;
    const { target, procs: mine } = await startTarget(
      name,
      up,
      dir,
      workers,
      start,
      true,
      baseline,
    );
    targets.push(target);
    // a failed attempt's processes are gone: keep only the live ones
    for (let i = procs.length - 1; i >= 0; i--) {
      if (procs[i]!.exited() && !mine.includes(procs[i]!)) procs.splice(i, 1);
    }
  }
  return targets;
}

/** The command lines the targets were started with, for BENCHMARKS.md. */
export function startCommands(): string[] {
  const symbolic = Object.fromEntries(
    [
      "HTTP",
      "UPLOAD",
      "ECHO",
      "SINK",
      "TCP_HTTP",
      "REDIS",
      "UP_HTTP",
      "UP_UPLOAD",
      "UP_ECHO",
      "UP_SINK",
      "UP_REDIS",
    ].map((k) => [k, `$${k}_PORT`]),
  );
  const flags = startFlags().join(" ");
  return [
    "nginx -p $DIR/origin/ -e $DIR/origin/error.log -c $DIR/origin/origin.conf -g 'daemon off;'",
    "redis-server --port $UP_REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir $DIR",
    "deno run --allow-net bench/upstream.ts",
    "nginx -p $DIR/ -e $DIR/error.log -c $DIR/nginx.conf -g 'daemon off;'",
    "haproxy -db -f $DIR/haproxy.cfg",
    ...socatLines().map((line) => `socat ${fill(line, symbolic)}`),
    `deno run ${flags} bench/floor.ts ${fill(FLOOR_ARGS, symbolic)}`,
    `deno run ${flags} main.ts serve --routes $DIR --admin 127.0.0.1:$ADMIN_PORT`,
    `deno run ${flags} main.ts serve --routes $DIR --admin 127.0.0.1:$ADMIN_PORT ${
      ACCESS_LOG.join(" ")
    } | cat > /dev/null`,
  ];
}

/**
 * The start-up and memory measurements of `deno task bench`, run apart from
 * the load: milliseconds from spawning legate, the floor and nginx to their
 * first proxied `200`; how long `legate healthcheck` and `deno run` of an
 * empty script take; and the RSS of each, and of a bare `Deno.serve`
 * hello-world, one second after its first `200`.
 * @module
 */
import { join } from "node:path";
import { startFlags } from "../scripts/compile.ts";
import {
  type Ports,
  ROOT,
  type Start,
  startTarget,
  type Target,
} from "./peers.ts";
import { freePort, memoryMb, type Proc, run, spawn, stop } from "./procs.ts";

/** What starts and is timed to its first `200`. */
export type Starting = "nginx" | "floor" | "legate" | "hello";

/** The programs timed to their first `200`, in the order each round runs them. */
export const STARTING: readonly Starting[] = [
  "nginx",
  "floor",
  "legate",
  "hello",
];

/** Every repetition's numbers. */
export interface StartupResult {
  /** ms from spawning to the first `200` through the program. */
  readonly firstOkMs: Record<Starting, number[]>;
  /** RSS one second after that first `200`, MB. */
  readonly idleMb: Record<Starting, number[]>;
  /** ms of `legate healthcheck` against the running legate target, spawn to exit. */
  readonly healthcheckMs: number[];
  /** ms of `deno run` of an empty script, spawn to exit. */
  readonly emptyMs: number[];
}

const IDLE_MS = 1_000;
const DEADLINE_MS = 10_000;
const REQUEST = new TextEncoder().encode(
  "GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
);
const OK = "HTTP/1.1 200";

/** One attempt at `GET /small` on `port`: whether it answered 200. */
async function answers200(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(REQUEST);
    const buf = new Uint8Array(64);
    let got = 0;
    while (got < OK.length) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) return false;
      got += n;
    }
    return new TextDecoder().decode(buf.subarray(0, OK.length)) === OK;
  } catch {
    return false; // not listening yet, or reset
  } finally {
    conn?.close();
  }
}

/**
 * Polls `port` with raw connects and requests, a 1 ms pause between failed
 * attempts, until it answers 200; returns when (performance.now()) it did.
 */
async function firstOk(port: number, procs: Proc[]): Promise<number> {
  const deadline = performance.now() + DEADLINE_MS;
  while (performance.now() < deadline) {
    if (await answers200(port)) return performance.now();
    const dead = procs.find((p) => p.exited());
    if (dead) throw new Error(`${dead.name} exited:\n${dead.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error(`no 200 on port ${port} within ${DEADLINE_MS} ms`);
}

/** A bare `Deno.serve` hello-world; the port is its first argument. */
const HELLO = `Deno.serve(
  { hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen() {} },
  () => new Response("hello"),
);
`;

/** The command lines of the start-up section, for BENCHMARKS.md. */
export function startupCommands(): string[] {
  const flags = startFlags().join(" ");
  return [
    `deno run ${flags} hello.ts $PORT   # hello.ts: ${
      HELLO.replace(/\s+/g, " ").trim()
    }`,
    `deno run ${flags} main.ts healthcheck --admin 127.0.0.1:$ADMIN_PORT`,
    "deno run empty.ts   # an empty file",
  ];
}

/** Spawns `cmd args` and returns ms until it exited with code 0. */
async function timed(cmd: string, args: string[], cwd: string) {
  const t0 = performance.now();
  const out = await run(cmd, args, 30_000, cwd);
  const ms = performance.now() - t0;
  if (out.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${out.code}\n${out.stderr}`,
    );
  }
  return ms;
}

/**
 * Runs `reps` rounds: each starts nginx, the floor, legate (with all bench
 * routes, in front of `up`) and the hello-world afresh, times each to its
 * first `200`, reads its RSS a second later and stops it; then times
 * `legate healthcheck` against `legate` (running) and `deno run` of an empty
 * script. Files go below `dir`.
 */
export async function measureStartup(
  up: Required<Ports>,
  dir: string,
  workers: number,
  reps: number,
  legate: Target,
  log: (text: string) => void,
): Promise<StartupResult> {
  const result: StartupResult = {
    firstOkMs: { nginx: [], floor: [], legate: [], hello: [] },
    idleMb: { nginx: [], floor: [], legate: [], hello: [] },
    healthcheckMs: [],
    emptyMs: [],
  };
  const hello = join(dir, "hello.ts");
  const empty = join(dir, "empty.ts");
  await Deno.writeTextFile(hello, HELLO);
  await Deno.writeTextFile(empty, "");
  for (let rep = 1; rep <= reps; rep++) {
    for (const name of STARTING) {
      const procs: Proc[] = [];
      let t0 = NaN;
      const start: Start = (n, cmd, args, cwd) => {
        if (procs.length === 0) t0 = performance.now();
        const proc = spawn(n, cmd, args, cwd ? { cwd } : {});
        procs.push(proc);
        return proc;
      };
      try {
        let port: number;
        if (name === "hello") {
          port = freePort();
          start("hello", Deno.execPath(), [
            "run",
            ...startFlags(ROOT),
            hello,
            String(port),
          ]);
        } else {
          const { target } = await startTarget(
            name,
            up,
            dir,
            workers,
            start,
            false,
          );
          port = target.ports.http!;
        }
        const ms = await firstOk(port, procs) - t0;
        await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
        const mb = await memoryMb(procs.map((p) => p.pid));
        result.firstOkMs[name].push(ms);
        result.idleMb[name].push(mb);
        log(
          `start-up ${rep}/${reps} ${name}: first 200 after ${
            ms.toFixed(1)
          } ms, ${mb.toFixed(1)} MB`,
        );
      } finally {
        for (const proc of procs) await stop(proc);
      }
    }
    result.healthcheckMs.push(
      await timed(Deno.execPath(), [
        "run",
        ...startFlags(ROOT),
        join(ROOT, "main.ts"),
        "healthcheck",
        "--admin",
        `127.0.0.1:${legate.admin}`,
      ], ROOT),
    );
    result.emptyMs.push(await timed(Deno.execPath(), ["run", empty], dir));
    log(
      `start-up ${rep}/${reps}: healthcheck ${
        result.healthcheckMs.at(-1)!.toFixed(1)
      } ms, empty deno run ${result.emptyMs.at(-1)!.toFixed(1)} ms`,
    );
  }
  return result;
}

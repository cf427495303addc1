/**
 * legate as a child process under a low limit of open files, for tests that
 * must run it out of file descriptors: `prlimit` (util-linux) sets
 * RLIMIT_NOFILE and then executes `deno run` with the flags of
 * `deno task start`, so the child's pid is legate's own.
 * @module
 */
import { join } from "node:path";
import {
  freePort,
  ROOT,
  START_FLAGS,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

/** legate running under a descriptor limit, as {@linkcode spawnWithFdLimit} returns it. */
export interface LimitedLegate {
  /** The process: legate itself, `prlimit` having executed it. */
  readonly child: Deno.ChildProcess;
  /** `host:port` of the admin listener. */
  readonly admin: string;
  /** JSON log events so far (other lines as `{ msg: "stderr", line }`). */
  readonly events: Record<string, unknown>[];
  /** Whether the process has exited. */
  readonly exited: boolean;
  /** The exit code, once it exited. */
  readonly code: number | undefined;
  /** Waits for the exit code and removes the routes directory. */
  exit(): Promise<number>;
}

/**
 * Starts legate with at most `limit` open files on route files written to a
 * temporary directory, with JSON logs, and waits until `/readyz` answers 200.
 *
 * @throws {Error} When legate exits before it is ready.
 */
export async function spawnWithFdLimit(
  limit: number,
  routes: Record<string, string>,
  flags: string[] = [],
): Promise<LimitedLegate> {
  const dir = await writeRoutes(routes);
  // The admin port is picked here: if something took it meanwhile, pick again.
  for (let attempt = 1;; attempt++) {
    const admin = `127.0.0.1:${freePort()}`;
    const { legate, output } = await startChild(limit, dir, admin, flags);
    if (!legate.exited) return legate;
    await output;
    const failure = JSON.stringify(legate.events);
    if (attempt < 3 && failure.includes(`Cannot listen on ${admin}`)) continue;
    await Deno.remove(dir, { recursive: true });
    throw new Error(`legate exited before it was ready: ${failure}`);
  }
}

/** Starts legate; `output` settles once its stderr has been read to the end. */
async function startChild(
  limit: number,
  dir: string,
  admin: string,
  flags: string[],
): Promise<{ legate: LimitedLegate; output: Promise<void> }> {
  const child = new Deno.Command("prlimit", {
    args: [
      `--nofile=${limit}:${limit}`,
      Deno.execPath(),
      "run",
      ...START_FLAGS,
      join(ROOT, "main.ts"),
      "serve",
      "--routes",
      dir,
      "--admin",
      admin,
      ...flags,
    ],
    cwd: Deno.makeTempDirSync({ prefix: "legate-cwd-" }),
    env: {
      NO_COLOR: "1",
      LEGATE_LOG_FORMAT: "json",
      // `deno run` checks for a newer Deno in the background, and warns on
      // stderr when that fails for want of a descriptor. A compiled legate
      // has no such check.
      DENO_NO_UPDATE_CHECK: "1",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  let code: number | undefined;
  child.status.then((status) => {
    exited = true;
    code = status.code;
  });
  const events: Record<string, unknown>[] = [];
  const reading = (async () => {
    let pending = "";
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        events.push(
          line.startsWith("{") ? JSON.parse(line) : { msg: "stderr", line },
        );
      }
    }
  })();
  await waitFor(async () => {
    if (exited) return true;
    try {
      const response = await fetch(`http://${admin}/readyz`);
      await response.body?.cancel();
      return response.status === 200;
    } catch {
      return false;
    }
  }, "legate to be ready");
  let removed = false;
  const legate: LimitedLegate = {
    child,
    admin,
    events,
    get exited() {
      return exited;
    },
    get code() {
      return code;
    },
    async exit() {
      const { code } = await child.status;
      await reading;
      if (!removed) await Deno.remove(dir, { recursive: true });
      removed = true;
      return code;
    },
  };
  return { legate, output: reading };
}

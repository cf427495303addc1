/**
 * Shared test fixtures: temporary route directories, legate in-process or as
 * a child process with the exact flags of `deno task start`, and waiting on
 * conditions with a deadline instead of sleeping.
 * @module
 */
import { freePort } from "../scripts/free_port.ts";
import { waitFor } from "../scripts/wait_for.ts";
import { join } from "node:path";
import { Legate, Logger } from "../mod.ts";
import { startFlags } from "../scripts/compile.ts";

/** The repository root. */
export const ROOT = new URL("../", import.meta.url).pathname;

/** The `deno run` flags of `deno task start`, read from deno.json. */
export const START_FLAGS: string[] = startFlags();

/** Writes `files` (name → text) into a new temporary directory. */
export async function writeRoutes(
  files: Record<string, string>,
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "legate-routes-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(join(dir, name), text);
  }
  return dir;
}

/** A logger that keeps its lines for assertions. */
export function memoryLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    log: new Logger({
      level: "debug",
      format: "json",
      write: (l) => lines.push(l),
    }),
    lines,
  };
}

/** Legate started in-process on `files`, with its log lines. */
export interface TestLegate extends AsyncDisposable {
  readonly legate: Legate;
  readonly lines: string[];
  /** `host:port` of the listener of service `name`. */
  address(name: string): string;
}

/** Starts legate in-process on route files; the admin listener takes a free port. */
export async function startLegate(
  files: Record<string, string>,
): Promise<TestLegate> {
  const routesDir = await writeRoutes(files);
  const { log, lines } = memoryLogger();
  const legate = await Legate.start({ routesDir, admin: "127.0.0.1:0", log });
  return {
    legate,
    lines,
    address(name) {
      const open = legate.listeners.find((o) =>
        o.plan.services.some((s) => s.name === name)
      );
      if (!open) throw new Error(`no listener for service "${name}"`);
      const addr = open.listener.addr as Deno.NetAddr;
      return `${addr.hostname}:${addr.port}`;
    },
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
      await Deno.remove(routesDir, { recursive: true });
    },
  };
}

/** An HTTP server on a free loopback port. */
export interface TestServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
}

/** Starts `handler` on 127.0.0.1 with a free port. */
export function startServer(handler: Deno.ServeHandler): TestServer {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    handler,
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** A raw TCP server on a free loopback port, for upstreams that misbehave on purpose. */
export interface TestTcpServer extends AsyncDisposable {
  readonly port: number;
  /** `tcp://127.0.0.1:PORT`. */
  readonly tcpUrl: string;
  /** `http://127.0.0.1:PORT`. */
  readonly httpUrl: string;
}

/**
 * Accepts connections on 127.0.0.1 and runs `onConnection` for each, closing
 * it afterwards; disposing stops accepting and closes what is still open.
 */
export function startTcpServer(
  onConnection: (conn: Deno.Conn) => Promise<void>,
): TestTcpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      onConnection(conn).catch(() => {}).finally(() => {
        open.delete(conn);
        try {
          conn.close();
        } catch {
          // The handler closed it already.
        }
      });
    }
  })().catch(() => {});
  const { port } = listener.addr as Deno.NetAddr;
  return {
    port,
    tcpUrl: `tcp://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // A handler's pipe closed it already; its finally has yet to run.
        }
      }
      await serving;
    },
  };
}

/** A {@linkcode startTcpServer} handler that echoes every byte until the client half-closes. */
export async function echoBytes(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    let written = 0;
    while (written < n) {
      written += await conn.write(buffer.subarray(written, n));
    }
  }
  await conn.closeWrite();
}

/** A stream of `total` bytes in `chunk`-sized pieces, made as it is read. */
export function generatedStream(
  total: number,
  chunk = 64 * 1024,
): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) {
        controller.close();
        return;
      }
      const size = Math.min(chunk, total - sent);
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (sent + i) & 0xff;
      sent += size;
      controller.enqueue(bytes);
    },
  });
}

/** Reads a stream to its end, returning the byte count and whether the bytes match `generatedStream`. */
export async function drainGenerated(
  stream: ReadableStream<Uint8Array>,
): Promise<{ bytes: number; intact: boolean }> {
  let bytes = 0;
  let intact = true;
  for await (const chunk of stream) {
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] !== ((bytes + i) & 0xff)) intact = false;
    }
    bytes += chunk.length;
  }
  return { bytes, intact };
}

/**
 * Sends `bytes` zero bytes to `address`, half-closes, and returns how many
 * came back before the far end closed (an echo through a TCP route).
 */
export async function echoedThrough(
  address: string,
  bytes: number,
): Promise<number> {
  const conn = await connectTo(address);
  try {
    await conn.write(new Uint8Array(bytes));
    await conn.closeWrite();
    let echoed = 0;
    const buffer = new Uint8Array(4096);
    for (
      let n = await conn.read(buffer);
      n !== null;
      n = await conn.read(buffer)
    ) {
      echoed += n;
    }
    return echoed;
  } finally {
    conn.close();
  }
}

/** Runs the legate CLI with the flags of `deno task start`, from a temporary working directory. */
export function legateCommand(
  args: string[],
  env: Record<string, string> = {},
  options: SpawnOptions = {},
): Deno.Command {
  const run = [
    Deno.execPath(),
    "run",
    ...START_FLAGS,
    join(ROOT, "main.ts"),
    ...args,
  ];
  // prlimit (util-linux) sets the limit, then executes deno: the child's pid is legate's.
  const command = options.fdLimit === undefined
    ? run
    : ["prlimit", `--nofile=${options.fdLimit}:${options.fdLimit}`, ...run];
  return new Deno.Command(command[0]!, {
    args: command.slice(1),
    cwd: emptyDirectory(),
    // `deno run` checks for a newer Deno in the background (and warns on
    // stderr when that fails); a compiled legate has no such check.
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

let workingDirectory: string | undefined;

/**
 * An empty directory for legate to run in, so that nothing it does depends on
 * the checkout; one per test module, removed when the module's tests end.
 */
function emptyDirectory(): string {
  if (workingDirectory === undefined) {
    const dir = Deno.makeTempDirSync({ prefix: "legate-cwd-" });
    workingDirectory = dir;
    globalThis.addEventListener("unload", () => Deno.removeSync(dir));
  }
  return workingDirectory;
}

/** How {@linkcode legateCommand} and {@linkcode spawnLegate} run legate. */
export interface SpawnOptions {
  /** At most this many open files (RLIMIT_NOFILE), to run legate out of descriptors. */
  readonly fdLimit?: number;
}

/** A raw TCP connection to `host:port`, as `TestLegate.address` gives it. */
export async function connectTo(address: string): Promise<Deno.TcpConn> {
  const [hostname, port] = address.split(":");
  return await Deno.connect({ hostname: hostname!, port: Number(port) });
}

/** Waits until a process the test started accepts connections on `port`. */
export async function untilAccepting(
  port: number,
  what: string,
): Promise<void> {
  await waitFor(async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  }, what);
}

/** A raw HTTP/1.1 exchange over one TCP connection, for what fetch would hide. */
export async function rawHttp(
  address: string,
  request: string,
): Promise<string> {
  const conn = await connectTo(address);
  await conn.write(new TextEncoder().encode(request));
  let text = "";
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  conn.close();
  return text;
}

export { freePort, waitFor };

/** legate running as a child process, as `spawnLegate` returns it. */
export interface SpawnedLegate {
  readonly child: Deno.ChildProcess;
  /** The routes directory. */
  readonly dir: string;
  /** `host:port` of the admin listener. */
  readonly admin: string;
  /** JSON log events so far (lines that are not JSON as `{ msg: "stderr", line }`). */
  readonly events: Record<string, unknown>[];
  /** Lines on standard output so far: the access log. */
  readonly output: string[];
  /** The status `/readyz` answers now, 0 when nothing answers. */
  readyz(): Promise<number>;
  /** The first event with message `msg`. */
  logged(msg: string): Record<string, unknown> | undefined;
  /** Whether the process has exited. */
  readonly exited: boolean;
  /** The exit code, once it exited. */
  readonly code: number | undefined;
  /** Waits for the exit code; removes a routes directory written for it. */
  exit(): Promise<number>;
}

/**
 * Starts legate as a child process with the flags of `deno task start` and
 * JSON logs, on route files (written to a temporary directory) or on an
 * existing routes directory, and waits until `/readyz` answers 200.
 */
export async function spawnLegate(
  routes: Record<string, string> | string,
  flags: string[] = [],
  env: Record<string, string> = {},
  options: SpawnOptions = {},
): Promise<SpawnedLegate> {
  const dir = typeof routes === "string" ? routes : await writeRoutes(routes);
  // The admin port is picked here: if something took it meanwhile, pick again.
  for (let attempt = 1;; attempt++) {
    const admin = `127.0.0.1:${freePort()}`;
    const started = await startChild(
      dir,
      admin,
      flags,
      env,
      options,
      typeof routes !== "string",
    );
    if (started.ready) return started;
    const failure = JSON.stringify(started.events);
    if (attempt < 3 && failure.includes(`Cannot listen on ${admin}`)) continue;
    throw new Error(`legate exited before it was ready: ${failure}`);
  }
}

async function startChild(
  dir: string,
  admin: string,
  flags: string[],
  env: Record<string, string>,
  options: SpawnOptions,
  ownsDir: boolean,
): Promise<SpawnedLegate & { ready: boolean }> {
  const child = legateCommand([
    "serve",
    "--routes",
    dir,
    "--admin",
    admin,
    ...flags,
  ], {
    LEGATE_LOG_FORMAT: "json",
    ...env,
  }, options).spawn();
  let exited = false;
  let code: number | undefined;
  child.status.then((status) => {
    exited = true;
    code = status.code;
  });
  const events: Record<string, unknown>[] = [];
  const output: string[] = [];
  const reading = Promise.all([
    readLines(child.stderr, (line) =>
      events.push(
        line.startsWith("{") ? JSON.parse(line) : { msg: "stderr", line },
      )),
    readLines(child.stdout, (line) => output.push(line)),
  ]);
  const readyz = async () => {
    try {
      const response = await fetch(`http://${admin}/readyz`);
      await response.body?.cancel();
      return response.status;
    } catch {
      return 0;
    }
  };
  await waitFor(
    async () => exited || await readyz() === 200,
    "legate to be ready",
  );
  if (exited) await reading;
  return {
    ready: !exited,
    child,
    dir,
    admin,
    events,
    output,
    readyz,
    logged: (msg: string) => events.find((e) => e.msg === msg),
    get exited() {
      return exited;
    },
    get code() {
      return code;
    },
    async exit(): Promise<number> {
      const { code } = await child.status;
      await reading;
      if (ownsDir) await Deno.remove(dir, { recursive: true });
      return code;
    },
  };
}

/** Calls `onLine` for each complete line of `stream`. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) onLine(line);
  }
}

/** Fails with promtool's complaint unless `promtool check metrics` accepts `text`. */
export async function assertPromtoolAccepts(text: string): Promise<void> {
  const promtool = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = promtool.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await promtool.output();
  const decoder = new TextDecoder();
  if (code !== 0) {
    throw new Error(
      `promtool check metrics: ${decoder.decode(stdout)}${
        decoder.decode(stderr)
      }`,
    );
  }
}

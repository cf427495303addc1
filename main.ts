/**
 * The legate command line: `legate [serve]`, `legate check`, `--version`,
 * `--help`. The only module that reads `Deno.args` or calls `Deno.exit`.
 * @module
 */
// Only what every command needs is loaded up front: `legate healthcheck`
// runs every few seconds as an exec probe, and serve and check load the
// rest (the YAML parser and the schema most of all) when they start.
import {
  formatListenAddress,
  isLoopback,
  parseListenAddress,
} from "./src/address.ts";
import { parseDuration } from "./src/config/duration.ts";
import {
  LOG_LEVELS,
  type LogFormat,
  Logger,
  type LogLevel,
} from "./src/log.ts";
import { VERSION } from "./src/version.ts";
import type { AccessLogFormat } from "./mod.ts";

/** Exit codes, documented in the README. */
const EXIT = {
  ok: 0,
  invalidRoutes: 1,
  usage: 2,
  routesDirectory: 3,
  listen: 4,
  unhealthy: 5,
} as const;

const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;

/** How much of the admin listener's answer `legate healthcheck` reads. */
const HEALTHCHECK_ANSWER_BYTES = 64 * 1024;

/** How long `legate healthcheck` waits for the admin listener. */
const HEALTHCHECK_TIMEOUT_MS = 3_000;

const HELP =
  `legate ${VERSION}: an ambassador proxy. Local clients talk to legate; legate
forwards to where each service really lives, as the route files say.

Usage:
  legate [serve] [options]        run the proxy (default)
  legate check   [--routes DIR]   validate route files and exit
  legate healthcheck [--admin HOST:PORT] [--ready]
                                  exit 0 when a running legate's /healthz
                                  (or /readyz) answers 200, else 5
  legate --version | --help

Options:
  --routes DIR              directory of route files, one *.yaml per service
                            (env LEGATE_ROUTES, default ./routes)
  --admin HOST:PORT         admin listener: /healthz /readyz /metrics /routes
                            /config/errors, POST /reload
                            (env LEGATE_ADMIN, default 127.0.0.1:9901)
  --admin-allow-remote      let the admin listener bind a non-loopback address
  --no-watch                reload only on SIGHUP and POST /reload, not when
                            files change
  --drain-timeout DURATION  how long in-flight work may finish on shutdown and
                            when a listener is removed (env LEGATE_DRAIN_TIMEOUT,
                            default 30s)
  --shutdown-delay DURATION keep serving this long after SIGTERM with /readyz
                            at 503 (env LEGATE_SHUTDOWN_DELAY, default 0s)
  --header-timeout DURATION how long an HTTP client connection may take to send
                            a request head, after it opens and after each
                            response (env LEGATE_HEADER_TIMEOUT, default 30s)
  --max-idle-connections N  idle HTTP client connections kept per listener;
                            past it the longest idle one is closed
                            (env LEGATE_MAX_IDLE_CONNECTIONS, default 1024)
  --resolver IP:PORT        the DNS server for upstream host and SRV names
                            (env LEGATE_RESOLVER, default: /etc/resolv.conf's)
  --access-log FORMAT       off | text | json: one line per HTTP request and per
                            TCP connection to standard output
                            (env LEGATE_ACCESS_LOG, default off)

Environment:
  LEGATE_LOG          debug | info | warn | error (default info)
  LEGATE_LOG_FORMAT   text | json (default text)

Route files are reloaded when they change, on SIGHUP and on POST /reload; an
invalid change is logged and the last good routes keep serving.
SIGTERM or SIGINT: /readyz answers 503, the shutdown delay passes, listeners
stop accepting, in-flight work drains, exit 0. A second signal exits at once
with 1.

Exit codes: 0 ok, 1 invalid route files, 2 bad command line,
3 routes directory missing or without route files, 4 cannot listen,
5 healthcheck failed.`;

/** The command line's options: those marked true are flags, the rest take a value. */
const OPTIONS = {
  routes: false,
  admin: false,
  "admin-allow-remote": true,
  "no-watch": true,
  ready: true,
  "drain-timeout": false,
  "shutdown-delay": false,
  "header-timeout": false,
  "max-idle-connections": false,
  resolver: false,
  "access-log": false,
  help: true,
  version: true,
} as const;
const SHORT_OPTIONS: Record<string, keyof typeof OPTIONS> = {
  h: "help",
  V: "version",
};

type Option = keyof typeof OPTIONS;
type OptionValues = {
  -readonly [K in Option]?: (typeof OPTIONS)[K] extends true ? true : string;
};

/**
 * Splits the command line into options and positional arguments:
 * `--name value`, `--name=value`, flags, `-h`, `-V`, and `--` before
 * arguments that start with a dash. (node:util's parseArgs would do, but
 * loading Node's compatibility layer costs a probe 8 ms of its start-up.)
 *
 * @throws {Error} An unknown option, a flag given a value, or an option without one.
 */
function parseCommandLine(
  args: readonly string[],
): { values: OptionValues; positionals: string[] } {
  const values: Record<string, string | true> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const long = arg.startsWith("--");
    const equals = long ? arg.indexOf("=") : -1;
    const name = long
      ? arg.slice(2, equals === -1 ? undefined : equals)
      : SHORT_OPTIONS[arg.slice(1)];
    if (name === undefined || !Object.hasOwn(OPTIONS, name)) {
      throw new Error(`unknown option "${long ? `--${name}` : arg}"`);
    }
    if (OPTIONS[name as Option]) {
      if (equals !== -1) throw new Error(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    const value = equals !== -1 ? arg.slice(equals + 1) : args[++i];
    if (value === undefined || (equals === -1 && value.startsWith("-"))) {
      throw new Error(`--${name} needs a value`);
    }
    values[name] = value;
  }
  return { values: values as OptionValues, positionals };
}

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine(args);
  } catch (error) {
    return usage((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    return EXIT.ok;
  }
  if (values.version) {
    console.log(`legate ${VERSION}`);
    return EXIT.ok;
  }
  const [command = "serve", ...extra] = positionals;
  if (extra.length > 0) return usage(`unexpected argument "${extra[0]}"`);
  const routesDir = values.routes ?? Deno.env.get("LEGATE_ROUTES") ?? "routes";
  const level = Deno.env.get("LEGATE_LOG") ?? "info";
  const format = Deno.env.get("LEGATE_LOG_FORMAT") ?? "text";
  if (!LOG_LEVELS.includes(level as LogLevel)) {
    return usage(
      `LEGATE_LOG is "${level}": use one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  if (format !== "text" && format !== "json") {
    return usage(`LEGATE_LOG_FORMAT is "${format}": use text or json`);
  }
  const log = new Logger({
    level: level as LogLevel,
    format: format as LogFormat,
  });
  if (command === "healthcheck") {
    return await healthcheck(
      values.admin ?? Deno.env.get("LEGATE_ADMIN") ?? "127.0.0.1:9901",
      values.ready ?? false,
    );
  }
  if (values.ready !== undefined) {
    return usage("--ready belongs to healthcheck");
  }
  if (command === "check") {
    const serveOnly = [
      "admin",
      "admin-allow-remote",
      "no-watch",
      "drain-timeout",
      "shutdown-delay",
      "header-timeout",
      "max-idle-connections",
      "resolver",
      "access-log",
    ]
      .find((name) => values[name as keyof typeof values] !== undefined);
    if (serveOnly) return usage(`check takes no --${serveOnly}`);
    return await check(routesDir);
  }
  if (command !== "serve") return usage(`unknown command "${command}"`);

  const admin = values.admin ?? Deno.env.get("LEGATE_ADMIN") ??
    "127.0.0.1:9901";
  let adminAddress;
  try {
    adminAddress = parseListenAddress(admin);
  } catch (error) {
    return usage(`--admin: ${(error as Error).message}`);
  }
  if (!isLoopback(adminAddress) && !values["admin-allow-remote"]) {
    return usage(
      `--admin "${admin}" is reachable from other hosts: use a loopback address, or add --admin-allow-remote`,
    );
  }
  const durations: Record<string, number> = {};
  for (
    const [flag, env, fallback] of [
      ["drain-timeout", "LEGATE_DRAIN_TIMEOUT", "30s"],
      ["shutdown-delay", "LEGATE_SHUTDOWN_DELAY", "0s"],
      ["header-timeout", "LEGATE_HEADER_TIMEOUT", "30s"],
    ] as const
  ) {
    const text = values[flag] ?? Deno.env.get(env) ?? fallback;
    try {
      durations[flag] = parseDuration(text);
    } catch (error) {
      return usage(`--${flag}: ${(error as Error).message}`);
    }
  }
  if (durations["header-timeout"]! <= 0) {
    return usage("--header-timeout: must be longer than 0s");
  }
  const maxIdle = values["max-idle-connections"] ??
    Deno.env.get("LEGATE_MAX_IDLE_CONNECTIONS") ?? "1024";
  if (!/^[1-9]\d{0,8}$/.test(maxIdle)) {
    return usage(
      `--max-idle-connections: "${maxIdle}" is not a whole number from 1`,
    );
  }
  const resolverText = values.resolver ?? Deno.env.get("LEGATE_RESOLVER");
  let resolver: { hostname: string; port: number } | undefined;
  if (resolverText !== undefined) {
    try {
      const address = parseListenAddress(resolverText);
      // Deno's resolver takes an address, not a name.
      const { isIP } = await import("node:net");
      if (address.transport !== "tcp" || isIP(address.hostname) === 0) {
        throw new RangeError("it must be an IP address and port");
      }
      resolver = { hostname: address.hostname, port: address.port };
    } catch (error) {
      return usage(
        `--resolver: "${resolverText}" is not a DNS server (use IP:PORT, e.g. 10.96.0.10:53 or [fd00::a]:53): ${
          (error as Error).message
        }`,
      );
    }
  }
  const accessLog = values["access-log"] ??
    Deno.env.get("LEGATE_ACCESS_LOG") ?? "off";
  if (accessLog !== "off" && accessLog !== "text" && accessLog !== "json") {
    return usage(`--access-log: "${accessLog}": use off, text or json`);
  }
  return await serve({
    routesDir,
    accessLog: accessLog === "off" ? undefined : accessLog,
    admin,
    resolver,
    drainTimeout: durations["drain-timeout"]!,
    shutdownDelay: durations["shutdown-delay"]!,
    headerTimeout: durations["header-timeout"]!,
    maxIdleConnections: Number(maxIdle),
    watch: !values["no-watch"],
  }, log);
}

function usage(problem: string): number {
  console.error(`legate: ${problem}\nRun "legate --help" for usage.`);
  return EXIT.usage;
}

/**
 * Asks a running legate's admin listener whether it is alive (or ready), for
 * container health checks in images that have no curl. It speaks HTTP/1.0
 * over a plain socket: Kubernetes runs it every few seconds, and `fetch`
 * alone would add a third to its start-up.
 */
async function healthcheck(admin: string, ready: boolean): Promise<number> {
  let address;
  try {
    address = parseListenAddress(admin);
  } catch (error) {
    return usage(`--admin: ${(error as Error).message}`);
  }
  const path = ready ? "/readyz" : "/healthz";
  const host = address.transport === "unix"
    ? "localhost"
    : formatListenAddress(address).replace(/^0\.0\.0\.0:/, "127.0.0.1:");
  let conn: Deno.Conn | undefined;
  try {
    const answer = (async () => {
      conn = address.transport === "unix"
        ? await Deno.connect({ transport: "unix", path: address.path })
        : await Deno.connect({
          hostname: address.hostname === "0.0.0.0"
            ? "127.0.0.1"
            : address.hostname,
          port: address.port,
        });
      await conn.write(
        new TextEncoder().encode(
          `GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n`,
        ),
      );
      // Read to the end by hand: a Response over conn.readable would set up
      // the streams machinery, 6 ms of a probe.
      const answer = new Uint8Array(HEALTHCHECK_ANSWER_BYTES);
      let length = 0;
      while (length < answer.length) {
        const n = await conn.read(answer.subarray(length));
        if (n === null) break;
        length += n;
      }
      return new TextDecoder().decode(answer.subarray(0, length));
    })();
    // Not setTimeout: Deno's first setTimeout loads its Node timers, about
    // 10 ms of a probe that otherwise takes 25.
    const deadline = AbortSignal.timeout(HEALTHCHECK_TIMEOUT_MS);
    const timeout = new Promise<never>((_, reject) => {
      deadline.addEventListener(
        "abort",
        () => reject(new Error(`no answer within ${HEALTHCHECK_TIMEOUT_MS}ms`)),
        { once: true },
      );
    });
    const text = await Promise.race([answer, timeout]);
    const status = /^HTTP\/1\.[01] (\d{3})[ \r]/.exec(text)?.[1];
    const headEnd = text.indexOf("\r\n\r\n");
    if (status === undefined || headEnd === -1) {
      throw new Error("the answer is not HTTP");
    }
    console.log(`${path}: ${status} ${text.slice(headEnd + 4).trim()}`);
    return status === "200" ? EXIT.ok : EXIT.unhealthy;
  } catch (error) {
    console.error(
      `legate: ${path} on ${admin} did not answer: ${(error as Error).message}`,
    );
    return EXIT.unhealthy;
  } finally {
    try {
      conn?.close();
    } catch {
      // closed by the answer's end
    }
  }
}

async function check(routesDir: string): Promise<number> {
  const { loadConfig, RoutesDirectoryError } = await import("./mod.ts");
  try {
    const result = await loadConfig(routesDir);
    if (result.errors) {
      for (const error of result.errors) console.error(error.message);
      console.error(`${result.errors.length} error(s) in ${routesDir}`);
      return EXIT.invalidRoutes;
    }
    const { services, plan } = result.config;
    console.log(
      `${routesDir}: ${services.length} service(s) on ${plan.listeners.length} listener(s), all valid`,
    );
    return EXIT.ok;
  } catch (error) {
    if (error instanceof RoutesDirectoryError) {
      console.error(`legate: ${error.message}`);
      return EXIT.routesDirectory;
    }
    throw error;
  }
}

/** Options of the serve command. */
interface ServeOptions {
  routesDir: string;
  admin: string;
  drainTimeout: number;
  shutdownDelay: number;
  headerTimeout: number;
  maxIdleConnections: number;
  resolver: { hostname: string; port: number } | undefined;
  accessLog: AccessLogFormat | undefined;
  watch: boolean;
}

async function serve(options: ServeOptions, log: Logger): Promise<number> {
  const {
    InvalidConfigError,
    Legate,
    ListenError,
    processReferences,
    RoutesDirectoryError,
  } = await import("./mod.ts");
  // A proxy must outlive its own bugs: whatever escaped is logged, and the
  // listeners keep serving. The tests run every module in-process, where
  // such an escape still fails them.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.error("unexpected error (a bug in legate; please report it)", {
      reason: String(event.reason?.stack ?? event.reason),
    });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.error("unexpected error (a bug in legate; please report it)", {
      reason: String(event.error?.stack ?? event.message),
    });
  });
  let legate;
  try {
    legate = await Legate.start({
      routesDir: options.routesDir,
      admin: options.admin,
      drainTimeout: options.drainTimeout,
      headerTimeout: options.headerTimeout,
      maxIdleConnections: options.maxIdleConnections,
      ...(options.resolver ? { resolver: options.resolver } : {}),
      ...(options.accessLog ? { accessLog: options.accessLog } : {}),
      version: VERSION,
      watch: options.watch,
      // Route files that reach the admin listener say ${LEGATE_ADMIN}: it
      // means the address legate really uses, --admin included.
      references: {
        ...processReferences,
        env: (name) =>
          name === "LEGATE_ADMIN" ? options.admin : Deno.env.get(name),
      },
      log,
    });
  } catch (error) {
    if (error instanceof InvalidConfigError) {
      for (const e of error.errors) log.error(e.message);
      log.error(
        `not started: ${error.errors.length} error(s) in ${options.routesDir}`,
      );
      return EXIT.invalidRoutes;
    }
    if (error instanceof RoutesDirectoryError) {
      log.error(error.message);
      return EXIT.routesDirectory;
    }
    if (error instanceof ListenError) {
      log.error(error.message);
      return EXIT.listen;
    }
    throw error;
  }
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGHUP", () => legate.reload("SIGHUP"));
  }
  const signal = await new Promise<Deno.Signal>((resolve) => {
    for (const name of STOP_SIGNALS) {
      Deno.addSignalListener(name, () => resolve(name));
    }
  });
  legate.stopBeingReady();
  log.info("shutting down", {
    signal,
    shutdown_delay_ms: options.shutdownDelay,
    drain_timeout_ms: options.drainTimeout,
  });
  for (const name of STOP_SIGNALS) {
    Deno.addSignalListener(name, () => {
      log.warn("second signal: exiting now", { cut: legate.active });
      Deno.exit(1);
    });
  }
  if (options.shutdownDelay > 0) {
    // Keep serving while the platform stops sending traffic here.
    await new Promise((resolve) => setTimeout(resolve, options.shutdownDelay));
  }
  log.info("draining: stopped accepting", { in_flight: legate.active });
  const cut = await legate.shutdown(options.drainTimeout);
  if (cut > 0) {
    log.warn("drain timeout passed: cut what was left", { cut });
  }
  log.info("stopped", { cut });
  return EXIT.ok;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

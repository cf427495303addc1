/**
 * The legate command line: `legate [serve]`, `legate check`, `--version`,
 * `--help`. The only module that reads `Deno.args` or calls `Deno.exit`.
 * @module
 */
import { parseArgs } from "node:util";
import {
  InvalidConfigError,
  Legate,
  ListenError,
  loadConfig,
  LOG_LEVELS,
  type LogFormat,
  Logger,
  type LogLevel,
  RoutesDirectoryError,
  VERSION,
} from "./mod.ts";

/** Exit codes, documented in the README. */
const EXIT = {
  ok: 0,
  invalidRoutes: 1,
  usage: 2,
  routesDirectory: 3,
  listen: 4,
} as const;

/** How long in-flight requests and connections get to finish on SIGTERM/SIGINT. */
const DRAIN_DEADLINE_MS = 10_000;

const HELP =
  `legate ${VERSION}: an ambassador proxy. Local clients talk to legate; legate
forwards to where each service really lives, as the route files say.

Usage:
  legate [serve] [--routes DIR] [--admin HOST:PORT]   run the proxy (default)
  legate check   [--routes DIR]                       validate route files and exit
  legate --version | --help

Options:
  --routes DIR        directory of route files, one *.yaml per service
                      (env LEGATE_ROUTES, default ./routes)
  --admin HOST:PORT   admin listener for /healthz and /readyz
                      (env LEGATE_ADMIN, default 127.0.0.1:9901)

Environment:
  LEGATE_LOG          debug | info | warn | error (default info)
  LEGATE_LOG_FORMAT   text | json (default text)

Exit codes: 0 ok, 1 invalid route files, 2 bad command line,
3 routes directory missing or without route files, 4 cannot listen.
SIGTERM or SIGINT drains in-flight work (up to 10s) and exits 0; a second
signal exits at once with 1.`;

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        routes: { type: "string" },
        admin: { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
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
  switch (command) {
    case "serve":
      return await serve(
        routesDir,
        values.admin ?? Deno.env.get("LEGATE_ADMIN") ?? "127.0.0.1:9901",
        log,
      );
    case "check":
      if (values.admin !== undefined) return usage("check takes no --admin");
      return await check(routesDir);
    default:
      return usage(`unknown command "${command}"`);
  }
}

function usage(problem: string): number {
  console.error(`legate: ${problem}\nRun "legate --help" for usage.`);
  return EXIT.usage;
}

async function check(routesDir: string): Promise<number> {
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

async function serve(
  routesDir: string,
  admin: string,
  log: Logger,
): Promise<number> {
  let legate: Legate;
  try {
    legate = await Legate.start({ routesDir, admin, log });
  } catch (error) {
    if (error instanceof InvalidConfigError) {
      for (const e of error.errors) log.error(e.message);
      log.error(`not started: ${error.errors.length} error(s) in ${routesDir}`);
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
  const signal = await new Promise<Deno.Signal>((resolve) => {
    for (const name of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(name, () => resolve(name));
    }
  });
  log.info("shutting down: draining in-flight work", {
    signal,
    deadline_ms: DRAIN_DEADLINE_MS,
  });
  for (const name of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(name, () => {
      const open = legate.listeners.reduce(
        (sum, o) => sum + o.listener.active(),
        0,
      );
      log.warn("second signal: exiting now", { cut: open });
      Deno.exit(1);
    });
  }
  const cut = await legate.shutdown(DRAIN_DEADLINE_MS);
  if (cut > 0) log.warn("drain deadline passed: cut what was left", { cut });
  log.info("stopped");
  return EXIT.ok;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

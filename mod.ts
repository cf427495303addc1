/**
 * legate: an ambassador proxy for Deno. Local clients talk to legate on
 * localhost; legate forwards HTTP and TCP to where each service really lives,
 * as a directory of per-service route files says.
 *
 * This module exposes the pieces `main.ts` wires together, so legate can be
 * embedded in a Deno program or tested in-process.
 *
 * @example Run legate on a routes directory
 * ```ts ignore
 * import { Legate, Logger } from "./mod.ts";
 * const legate = await Legate.start({
 *   routesDir: "routes",
 *   admin: "127.0.0.1:9901",
 *   log: new Logger({ level: "info", format: "text" }),
 * });
 * await legate.shutdown(10_000);
 * ```
 *
 * @example Validate route files
 * ```ts ignore
 * import { loadConfig } from "./mod.ts";
 * const result = await loadConfig("routes");
 * for (const error of result.errors ?? []) console.error(error.message);
 * ```
 * @module
 */
import denoJson from "./deno.json" with { type: "json" };

/** legate's version. */
export const VERSION: string = denoJson.version;

export {
  type ConfigSnapshot,
  loadConfig,
  type LoadResult,
} from "./src/config/config.ts";
export {
  ConfigError,
  RoutesDirectoryError,
  type SourcePosition,
} from "./src/config/errors.ts";
export {
  formatListenAddress,
  type ListenAddress,
  parseListenAddress,
} from "./src/config/address.ts";
export { formatDuration, parseDuration } from "./src/config/duration.ts";
export type { ReferenceSource } from "./src/config/interpolate.ts";
export type { ListenerPlan, Plan } from "./src/config/plan.ts";
export type {
  ServiceConfig,
  TimeoutsConfig,
  UpstreamConfig,
} from "./src/config/service.ts";
export { routeFileJsonSchema } from "./src/config/schema.ts";
export {
  InvalidConfigError,
  isLoopback,
  Legate,
  type LegateOptions,
  type OpenListener,
  type ReloadResult,
  type ReportedError,
} from "./src/lifecycle/legate.ts";
export { ListenError, type RunningListener } from "./src/server/listeners.ts";
export {
  LOG_LEVELS,
  type LogFields,
  type LogFormat,
  Logger,
  type LogLevel,
} from "./src/log.ts";
export {
  type ErrorSource,
  ProxyError,
  type ProxyErrorKind,
  statusForError,
} from "./src/transport/errors.ts";

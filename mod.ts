/**
 * legate: an ambassador proxy for Deno. Local clients talk to legate on
 * localhost; legate forwards HTTP and TCP to where each service really lives,
 * as a directory of per-service route files says.
 *
 * This module exposes the pieces `main.ts` wires together, so legate can be
 * embedded in a Deno program or tested in-process.
 *
 * @example Run legate on a routes directory
 * ```ts
 * import assert from "node:assert/strict";
 * import { Legate, Logger } from "./mod.ts";
 * // A service, and a routes directory with one file that routes to it.
 * await using users = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   () => new Response("hello from users"),
 * );
 * const routesDir = await Deno.makeTempDir();
 * await Deno.writeTextFile(
 *   `${routesDir}/users.yaml`,
 *   `listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:${users.addr.port}]\n`,
 * );
 * const lines: string[] = [];
 * const legate = await Legate.start({
 *   routesDir,
 *   admin: "127.0.0.1:0", // a free port here; 127.0.0.1:9901 by default
 *   log: new Logger({
 *     level: "info",
 *     format: "text",
 *     write: (line) => lines.push(line),
 *   }),
 * });
 * try {
 *   const admin = legate.admin.addr as Deno.NetAddr;
 *   const readyz = await fetch(`http://127.0.0.1:${admin.port}/readyz`);
 *   assert.equal(await readyz.text(), "ready\n");
 *   // The application talks to legate; legate forwards to the service.
 *   const { port } = legate.listeners[0]!.listener.addr as Deno.NetAddr;
 *   const response = await fetch(`http://127.0.0.1:${port}/`);
 *   assert.equal(await response.text(), "hello from users");
 * } finally {
 *   // Drains for up to 10 s; nothing was in flight, so nothing was cut.
 *   assert.equal(await legate.shutdown(10_000), 0);
 *   await Deno.remove(routesDir, { recursive: true });
 * }
 * ```
 *
 * @example Validate route files
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, loadConfig } from "./mod.ts";
 * const routesDir = await Deno.makeTempDir();
 * try {
 *   await Deno.writeTextFile(
 *     `${routesDir}/users.yaml`,
 *     "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\ntimeouts: { connect: soon }\n",
 *   );
 *   const result = await loadConfig(routesDir);
 *   // Every error names its file, line and column, and the key.
 *   assert.equal(result.errors?.length, 1);
 *   const [error] = result.errors;
 *   assert.ok(error instanceof ConfigError);
 *   assert.deepEqual(
 *     [error.position.line, error.position.column, error.keyPath],
 *     [3, 22, "timeouts.connect"],
 *   );
 *   assert.ok(error.message.startsWith(`${error.position.file}:3:22: `));
 * } finally {
 *   await Deno.remove(routesDir, { recursive: true });
 * }
 * ```
 * @module
 */
export { VERSION } from "./src/version.ts";

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
  isLoopback,
  type ListenAddress,
  parseListenAddress,
} from "./src/address.ts";
export { formatDuration, parseDuration } from "./src/config/duration.ts";
export {
  processReferences,
  type ReferenceSource,
  type TemplatePart,
} from "./src/config/interpolate.ts";
export type { ListenerPlan, Plan } from "./src/config/plan.ts";
export type {
  BalancePolicy,
  CertificateFiles,
  HashOnConfig,
  HeaderRulesConfig,
  HealthCheckConfig,
  LimitsConfig,
  OutlierConfig,
  RetriesConfig,
  RetryOn,
  ServiceConfig,
  TimeoutsConfig,
  UpstreamConfig,
  UpstreamTlsConfig,
  WebSocketConfig,
} from "./src/config/service.ts";
export { routeFileJsonSchema } from "./src/config/schema.ts";
export {
  InvalidConfigError,
  Legate,
  type LegateOptions,
  type OpenListener,
  type ReloadResult,
  type ReportedError,
} from "./src/lifecycle/legate.ts";
export type { AccessLogFormat } from "./src/server/access_log.ts";
export { ListenError, type RunningListener } from "./src/server/listeners.ts";
export type { TlsMaterial } from "./src/server/tls_termination.ts";
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

/**
 * Builds one immutable config snapshot from a routes directory: read, validate
 * every file, plan. All errors of all files are returned at once.
 * @module
 */
import { type ConfigError, RoutesDirectoryError } from "./errors.ts";
import { processReferences, type ReferenceSource } from "./interpolate.ts";
import { readRouteSources } from "./load.ts";
import { type Plan, planListeners } from "./plan.ts";
import type { ServiceConfig } from "./service.ts";
import { validateRouteFile } from "./validate.ts";

/** A valid configuration: every service and the listeners they need. */
export interface ConfigSnapshot {
  /** The routes directory it was read from. */
  readonly routesDir: string;
  /** Every service, sorted by file name. */
  readonly services: readonly ServiceConfig[];
  /** The desired listeners. */
  readonly plan: Plan;
}

/** The outcome of loading a routes directory. */
export type LoadResult = { config: ConfigSnapshot; errors?: undefined } | {
  config?: undefined;
  errors: ConfigError[];
};

/**
 * Loads and validates every route file in `routesDir`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { loadConfig } from "./config.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(join(dir, "users.yaml"), "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\n");
 * const result = await loadConfig(dir);
 * assert.deepEqual(result.config?.services.map((s) => s.name), ["users"]);
 *
 * await Deno.writeTextFile(join(dir, "users.yaml"), "listen: 127.0.0.1:15001\n");
 * const broken = await loadConfig(dir);
 * assert.deepEqual(broken.errors?.map((e) => e.message), [
 *   `${join(dir, "users.yaml")}:1:1: missing required key "upstreams"`,
 * ]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 * @throws {RoutesDirectoryError} When the directory is missing, unreadable or has no route files.
 */
export async function loadConfig(
  routesDir: string,
  references: ReferenceSource = processReferences,
): Promise<LoadResult> {
  const { sources, errors } = await readRouteSources(routesDir);
  if (sources.length === 0 && errors.length === 0) {
    throw new RoutesDirectoryError(
      `Routes directory "${routesDir}" has no route files: add one *.yaml file per service (see the README's "Route files")`,
    );
  }
  const services: ServiceConfig[] = [];
  for (const source of sources) {
    const result = validateRouteFile(source, references);
    if (result.errors) errors.push(...result.errors);
    else services.push(result.service);
  }
  const { plan, errors: conflicts } = planListeners(services);
  errors.push(...conflicts);
  errors.sort((a, b) =>
    a.position.file.localeCompare(b.position.file) ||
    a.position.line - b.position.line ||
    a.position.column - b.position.column
  );
  return errors.length > 0
    ? { errors }
    : { config: { routesDir, services, plan } };
}

/**
 * Reads the route files of one directory: every `*.yaml`/`*.yml` directly in
 * it, hidden entries skipped, symlinks followed (Kubernetes mounts ConfigMap
 * keys as symlinks into a hidden `..data` directory, so each file is read once).
 * @module
 */
import { join } from "node:path";
import { RoutesDirectoryError } from "./errors.ts";

/** The text of one route file. */
export interface RouteSource {
  /** The path as the user would name it: the directory joined with the file name. */
  readonly file: string;
  /** The file's text. */
  readonly text: string;
}

const ROUTE_FILE = /\.ya?ml$/;

/**
 * Reads every route file in `dir`, sorted by name.
 *
 * @example Usage
 * ```ts ignore
 * import { readRouteSources } from "./load.ts";
 * const sources = await readRouteSources("routes");
 * ```
 * @throws {RoutesDirectoryError} When `dir` is missing, not a directory or unreadable.
 */
export async function readRouteSources(dir: string): Promise<RouteSource[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith(".") && ROUTE_FILE.test(entry.name)) {
        names.push(entry.name);
      }
    }
  } catch (cause) {
    throw new RoutesDirectoryError(describeDirectoryError(dir, cause), {
      cause,
    });
  }
  names.sort();
  const sources: RouteSource[] = [];
  for (const name of names) {
    const file = join(dir, name);
    try {
      // stat follows symlinks: a dangling link or a directory named *.yaml is skipped.
      if (!(await Deno.stat(file)).isFile) continue;
      sources.push({ file, text: await Deno.readTextFile(file) });
    } catch (cause) {
      if (cause instanceof Deno.errors.NotFound) continue; // removed while reading
      throw new RoutesDirectoryError(
        `Cannot read route file "${file}": ${(cause as Error).message}`,
        { cause },
      );
    }
  }
  return sources;
}

function describeDirectoryError(dir: string, cause: unknown): string {
  if (cause instanceof Deno.errors.NotFound) {
    return `Routes directory "${dir}" does not exist: create it with one YAML file per service, or point --routes (LEGATE_ROUTES) at it`;
  }
  if (cause instanceof Deno.errors.NotADirectory) {
    return `Routes directory "${dir}" is not a directory: --routes (LEGATE_ROUTES) names a directory of route files`;
  }
  return `Cannot read routes directory "${dir}": ${(cause as Error).message}`;
}

/**
 * Reads the route files of one directory: every `*.yaml`/`*.yml` directly in
 * it, hidden entries skipped, symlinks followed (Kubernetes mounts ConfigMap
 * keys as symlinks into a hidden `..data` directory, so each file is read once).
 *
 * It opens regular files only, and reads at most {@linkcode MAX_ROUTE_FILE_BYTES}
 * of each: a FIFO would block the reader for ever, a huge file would hold the
 * event loop and the memory.
 * @module
 */
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { ConfigError, RoutesDirectoryError } from "./errors.ts";

/** The text of one route file. */
export interface RouteSource {
  /** The path as the user would name it: the directory joined with the file name. */
  readonly file: string;
  /** The file's text. */
  readonly text: string;
}

/** What {@linkcode readRouteSources} found. */
export interface RouteSources {
  /** The route files that could be read, sorted by name. */
  readonly sources: RouteSource[];
  /** Route files refused as a whole (too large), one error each. */
  readonly errors: ConfigError[];
}

/**
 * The largest route file legate reads, in bytes: 1 MiB, what a Kubernetes
 * ConfigMap holds in all. One service's routes are a few hundred bytes.
 */
export const MAX_ROUTE_FILE_BYTES = 1024 * 1024;

const ROUTE_FILE = /\.ya?ml$/;

/**
 * Whether a directory entry named `name` is a route file candidate: a visible
 * `*.yaml` or `*.yml`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { isRouteFileName } from "./load.ts";
 * assert.equal(isRouteFileName("users.yaml"), true);
 * assert.equal(isRouteFileName(".users.yaml.swp"), false);
 * assert.equal(isRouteFileName("..data"), false);
 * ```
 */
export function isRouteFileName(name: string): boolean {
  return !name.startsWith(".") && ROUTE_FILE.test(name);
}

/**
 * Reads every route file in `dir`, sorted by name. Entries that are not
 * regular files after following symlinks (directories, FIFOs, sockets,
 * devices, dangling links) are skipped; files over
 * {@linkcode MAX_ROUTE_FILE_BYTES} are refused with a {@linkcode ConfigError}.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { readRouteSources } from "./load.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(join(dir, "users.yaml"), "listen: :15001\n");
 * await Deno.writeTextFile(join(dir, "notes.txt"), "not a route file\n");
 * const { sources, errors } = await readRouteSources(dir);
 * assert.deepEqual(sources, [{ file: join(dir, "users.yaml"), text: "listen: :15001\n" }]);
 * assert.deepEqual(errors, []);
 * await Deno.remove(dir, { recursive: true });
 * ```
 * @throws {RoutesDirectoryError} When `dir` is missing, not a directory or
 * unreadable, or a route file in it cannot be read.
 */
export async function readRouteSources(dir: string): Promise<RouteSources> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (isRouteFileName(entry.name)) names.push(entry.name);
    }
  } catch (cause) {
    throw new RoutesDirectoryError(describeDirectoryError(dir, cause), {
      cause,
    });
  }
  names.sort();
  const sources: RouteSource[] = [];
  const errors: ConfigError[] = [];
  for (const name of names) {
    const file = join(dir, name);
    let read: RegularFileRead;
    try {
      read = readRegularFile(file, MAX_ROUTE_FILE_BYTES);
    } catch (cause) {
      // Removed meanwhile, or a dangling link: not a route file (yet).
      if (errorCode(cause) === "ENOENT") continue;
      throw new RoutesDirectoryError(
        `Cannot read route file "${file}": ${(cause as Error).message}`,
        { cause },
      );
    }
    if (read.kind === "text") sources.push({ file, text: read.text });
    else if (read.kind === "too large") {
      errors.push(
        new ConfigError(
          { file, line: 1, column: 1 },
          "",
          `file is ${
            read.grew ? "more than " : ""
          }${read.size} bytes, over the limit of ${MAX_ROUTE_FILE_BYTES} bytes (1 MiB, all a Kubernetes ConfigMap holds) for a route file: keep one service per file`,
        ),
      );
    }
  }
  return { sources, errors };
}

/** The outcome of {@linkcode readRegularFile}. */
export type RegularFileRead =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "not a regular file" }
  | {
    readonly kind: "too large";
    /** The size fstat gave, or the bytes read when the file grew meanwhile. */
    readonly size: number;
    /** Whether the file grew past the limit while being read. */
    readonly grew: boolean;
  };

/**
 * Reads the file at `path` (following symlinks) as UTF-8 when it is a regular
 * file of at most `limit` bytes, reading at most `limit + 1` bytes. Anything
 * else is not opened; and what is opened is opened non-blocking and checked
 * again through its descriptor, so a path swapped for a FIFO meanwhile
 * cannot block.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { readRegularFile } from "./load.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(join(dir, "token"), "s3cret\n");
 * assert.deepEqual(readRegularFile(join(dir, "token"), 64), { kind: "text", text: "s3cret\n" });
 * assert.deepEqual(readRegularFile(join(dir, "token"), 4), { kind: "too large", size: 7, grew: false });
 * assert.deepEqual(readRegularFile(dir, 64), { kind: "not a regular file" });
 * await Deno.remove(dir, { recursive: true });
 * ```
 * @throws {Error} The `node:fs` error (with its `code`, such as `ENOENT` or
 * `EACCES`) when the path cannot be opened or read.
 */
export function readRegularFile(path: string, limit: number): RegularFileRead {
  if (!statSync(path).isFile()) return { kind: "not a regular file" };
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO without a writer would wait for one. O_NOCTTY:
    // a terminal must not become legate's. Windows has neither, nor FIFOs.
    fd = openSync(
      path,
      constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) |
        (constants.O_NOCTTY ?? 0),
    );
  } catch (error) {
    // A Unix socket cannot be opened at all.
    if (errorCode(error) === "ENXIO") return { kind: "not a regular file" };
    throw error;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) return { kind: "not a regular file" };
    if (info.size > limit) {
      return { kind: "too large", size: info.size, grew: false };
    }
    // Sized by fstat, grown should the file grow while read, up to limit + 1.
    let bytes = new Uint8Array(info.size + 1);
    let length = 0;
    while (true) {
      if (length === bytes.length) {
        if (length > limit) break;
        const grown = new Uint8Array(Math.min(length * 2, limit + 1));
        grown.set(bytes);
        bytes = grown;
      }
      const n = readSync(fd, bytes, length, bytes.length - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > limit) return { kind: "too large", size: length, grew: true };
    return {
      kind: "text",
      text: new TextDecoder().decode(bytes.subarray(0, length)),
    };
  } finally {
    closeSync(fd);
  }
}

/**
 * The `code` of a `node:fs` error, such as `ENOENT`; undefined for others.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { statSync } from "node:fs";
 * import { errorCode } from "./load.ts";
 * assert.throws(() => statSync("/nonexistent"), (error) => errorCode(error) === "ENOENT");
 * assert.equal(errorCode(new Error("plain")), undefined);
 * ```
 */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Why a file could not be read, in the words config errors use: "no such
 * file", "permission denied", or the error's own message.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFailure } from "./load.ts";
 * assert.equal(readFailure(new Deno.errors.NotFound("x")), "no such file");
 * assert.equal(readFailure(new Error("disk on fire")), "disk on fire");
 * ```
 */
export function readFailure(cause: unknown): string {
  const code = errorCode(cause);
  return cause instanceof Deno.errors.NotFound || code === "ENOENT"
    ? "no such file"
    : cause instanceof Deno.errors.PermissionDenied || code === "EACCES"
    ? "permission denied"
    : String((cause as Error).message ?? cause);
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

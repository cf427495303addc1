/**
 * Notices changes to the route files by polling: every 250 ms it compares a
 * signature of the routes directory made from `stat`, `lstat` and `readDir`
 * alone. It never opens a file: `Deno.watchFs` opens every path it reports
 * an event for, and a FIFO in the directory blocks it for ever (reloads stop,
 * and the process cannot exit).
 *
 * The signature covers what loading reads: the directory's identity and, for
 * each route file, its name and, through symlinks, the identity, size and
 * times of what it points to. So in-place edits, editors' write-then-rename,
 * added and removed files, symlink targets outside the directory, the atomic
 * `..data` swap of a Kubernetes ConfigMap, and the directory itself removed
 * and created again are all seen.
 *
 * It only says "something changed"; loading and comparing is the caller's job.
 * @module
 */
import { join } from "node:path";
import { isRouteFileName } from "./load.ts";

/** A running watch; `close()` stops it. */
export interface RoutesWatch {
  /**
   * Stops polling; resolves once a poll in progress has finished, so nothing
   * of the watch runs afterwards.
   */
  close(): Promise<void>;
}

/** Options of {@linkcode watchRoutes}. */
export interface WatchRoutesOptions {
  /**
   * Milliseconds between two looks at the directory. A change is reported
   * after it has stayed the same for one more look, so after one to two
   * intervals.
   *
   * @default {250}
   */
  readonly intervalMs?: number;
  /**
   * Called with what happened when the routes directory is removed, replaced
   * by another directory, made unreadable, or comes back; `onChange` follows.
   */
  readonly onDirectoryChange?: (event: string) => void;
}

/**
 * Polls `dir` and calls `onChange` once for each change to its route files,
 * when the change has stayed the same for one more poll (so a file written in
 * several writes is not loaded half-written). Keeps polling through the
 * directory being removed and created again.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { watchRoutes } from "./watch.ts";
 * const dir = await Deno.makeTempDir();
 * let changes = 0;
 * const changed = Promise.withResolvers<void>();
 * const watch = await watchRoutes(dir, () => {
 *   changes++;
 *   changed.resolve();
 * }, { intervalMs: 20 });
 * await Deno.writeTextFile(join(dir, "users.yaml"), "listen: :15001\n");
 * await changed.promise;
 * await watch.close();
 * assert.equal(changes, 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function watchRoutes(
  dir: string,
  onChange: () => void,
  options: WatchRoutesOptions = {},
): Promise<RoutesWatch> {
  const { intervalMs = 250, onDirectoryChange = () => {} } = options;
  // Null until the directory could be looked at: the routes were just loaded.
  let reported = await signature(dir);
  let seen = reported;
  return pollEvery(intervalMs, async (closed) => {
    const now = await signature(dir);
    if (closed() || now === null) return;
    if (reported === null || seen === null) {
      reported = seen = now;
      return;
    }
    if (now.key !== reported.key && now.key === seen.key) {
      const before = reported;
      reported = now;
      if (now.directory !== before.directory) {
        onDirectoryChange(directoryEvent(before.directory, now.directory));
      }
      onChange();
    }
    seen = now;
  });
}

/**
 * Runs `poll` every `intervalMs`, never two at once, until the watch is
 * closed; `closed()` tells a poll that finishes after `close()` to report
 * nothing. A failed poll is skipped.
 */
function pollEvery(
  intervalMs: number,
  poll: (closed: () => boolean) => Promise<void>,
): RoutesWatch {
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let polling: Promise<void> = Promise.resolve();
  const isClosed = () => closed;
  const schedule = () => {
    timer = setTimeout(() => {
      polling = poll(isClosed).catch(() => {}).finally(() => {
        if (!closed) schedule();
      });
    }, intervalMs);
  };
  schedule();
  return {
    async close() {
      closed = true;
      clearTimeout(timer);
      await polling;
    },
  };
}

/** What a poll compares; `directory` says what the directory itself is. */
interface Signature {
  /** `present:<dev>:<ino>`, `missing`, `not a directory` or `unreadable`. */
  readonly directory: string;
  /** The whole signature; equal keys mean nothing loading reads has changed. */
  readonly key: string;
}

/** The signature of `dir`, from stat, lstat and readDir: nothing is opened. */
async function signature(dir: string): Promise<Signature | null> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (error) {
    if (!saysSomething(error)) return null;
    const directory = error instanceof Deno.errors.PermissionDenied
      ? "unreadable"
      : "missing";
    return { directory, key: directory };
  }
  if (!info.isDirectory) {
    return { directory: "not a directory", key: "not a directory" };
  }
  const directory = `present:${info.dev}:${info.ino}`;
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (isRouteFileName(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    // Removed or made unreadable between the stat and the listing.
    if (!saysSomething(error)) return null;
    return { directory: "unreadable", key: "unreadable" };
  }
  names.sort();
  const entries = await Promise.all(names.map(async (name) => {
    const path = join(dir, name);
    // stat follows symlinks to what loading reads; a dangling link is
    // described by the link itself, so pointing it elsewhere is seen.
    const target = await Deno.stat(path).catch(() => null);
    const file = target ?? await Deno.lstat(path).catch(() => null);
    return [
      name,
      target ? "" : "link",
      file?.dev,
      file?.ino,
      file?.size,
      file?.mtime?.getTime(),
      file?.ctime?.getTime(),
    ];
  }));
  return { directory, key: JSON.stringify([directory, entries]) };
}

function directoryEvent(before: string, now: string): string {
  if (now === "missing") return "the routes directory was removed";
  if (now === "not a directory") {
    return "the routes directory was replaced by something that is not a directory";
  }
  if (now === "unreadable") return "the routes directory cannot be read";
  return before.startsWith("present:")
    ? "the routes directory was replaced"
    : "the routes directory is back";
}

/**
 * Whether a failure to look at the directory tells something about it (it is
 * gone, not a directory, or not readable), rather than about legate (out of
 * file descriptors, say), which is no change: that poll is skipped.
 */
function saysSomething(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound ||
    error instanceof Deno.errors.NotADirectory ||
    error instanceof Deno.errors.PermissionDenied;
}

/**
 * Polls the files `paths()` names (read anew on every poll, so the list can
 * follow reloads) and calls `onChange` once for each change that has stayed
 * the same for one more poll. Like {@linkcode watchRoutes} it only stats:
 * a path through symlinks (a Kubernetes Secret's `..data` swap), replaced by
 * rename, rewritten in place, removed or made again is a change.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { watchFiles } from "./watch.ts";
 * const dir = await Deno.makeTempDir();
 * const cert = join(dir, "tls.crt");
 * await Deno.writeTextFile(cert, "one");
 * const changed = Promise.withResolvers<void>();
 * const watch = await watchFiles(() => [cert], () => changed.resolve(), { intervalMs: 20 });
 * await Deno.writeTextFile(cert, "renewed");
 * await changed.promise;
 * await watch.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function watchFiles(
  paths: () => readonly string[],
  onChange: () => void,
  options: { readonly intervalMs?: number } = {},
): Promise<RoutesWatch> {
  const { intervalMs = 1_000 } = options;
  const look = async () => {
    const parts = await Promise.all(
      [...new Set(paths())].sort().map(async (path) => {
        try {
          const info = await Deno.stat(path);
          return `${path}:${info.dev}:${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
        } catch {
          return `${path}:missing`;
        }
      }),
    );
    return parts.join("\n");
  };
  let reported = await look();
  let seen = reported;
  return pollEvery(intervalMs, async (closed) => {
    const now = await look();
    if (closed()) return;
    if (now !== reported && now === seen) {
      reported = now;
      onChange();
    }
    seen = now;
  });
}

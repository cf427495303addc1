/**
 * Notices changes to the route files: watches the routes directory itself
 * (not each file, so files created, removed, renamed over by editors, and the
 * atomic `..data` swap of a Kubernetes ConfigMap are all seen) plus the
 * targets of symlinked route files that live elsewhere. Bursts of events are
 * debounced into one call. A directory that was removed or replaced is
 * polled from then on.
 *
 * It only says "something changed"; loading and comparing is the caller's job.
 * @module
 */
import { isAbsolute, join, relative } from "node:path";

/** A running watch; `close()` stops it. */
export interface RoutesWatch {
  /** Watches the current targets of symlinked route files too. */
  refreshTargets(): Promise<void>;
  /** Stops watching. */
  close(): void;
}

/** How often the directory is compared when it cannot be watched. */
const POLL_MS = 1_000;

/**
 * Calls `onChange` once per burst of file system events under `dir`, after
 * `debounceMs` of quiet. When the directory cannot be watched any more (it
 * was removed or replaced: Deno cannot watch a path again once its directory
 * went away), it is polled every second instead, and `onPolling` says why.
 *
 * @example Usage
 * ```ts ignore
 * import { watchRoutes } from "./watch.ts";
 * const watch = await watchRoutes("routes", () => console.log("changed"));
 * watch.close();
 * ```
 */
export async function watchRoutes(
  dir: string,
  onChange: () => void,
  onPolling: (reason: string) => void = () => {},
  debounceMs = 200,
): Promise<RoutesWatch> {
  let closed = false;
  // Watchers closed on purpose; any other end of a watcher is reported.
  const retired = new WeakSet<Deno.FsWatcher>();
  const retire = (watcher: Deno.FsWatcher | undefined) => {
    if (!watcher) return;
    retired.add(watcher);
    try {
      watcher.close();
    } catch {
      // It had ended already.
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      onChange();
      checkDirectory();
    }, debounceMs);
  };
  const consume = async (
    watcher: Deno.FsWatcher,
    onEnd: (error: Error) => void,
  ) => {
    let failure: Error = new Error("the file system watch ended");
    try {
      for await (const event of watcher) {
        if (event.kind !== "access") changed();
      }
    } catch (error) {
      failure = error as Error;
    }
    if (!retired.has(watcher)) onEnd(failure);
  };

  let polling = false;
  const poll = async (reason: string) => {
    if (polling || closed) return;
    polling = true;
    retire(directory);
    onPolling(reason);
    let last = await signature(dir);
    while (!closed) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const now = await signature(dir);
      if (now !== last) {
        last = now;
        onChange();
      }
    }
  };
  const inode = (await Deno.stat(dir)).ino;
  const directory = Deno.watchFs(dir, { recursive: false });
  consume(directory, (error) => poll(error.message));
  const checkDirectory = async () => {
    const now = await Deno.stat(dir).then((info) => info.ino, () => undefined);
    if (now !== inode) {
      poll(
        now === undefined
          ? "the routes directory was removed"
          : "the routes directory was replaced",
      );
    }
  };

  let targets: Deno.FsWatcher | undefined;
  let watchedTargets = "";
  const watch: RoutesWatch = {
    async refreshTargets() {
      const paths = await outsideTargets(dir).catch(() => []);
      const key = paths.join("\n");
      if (key === watchedTargets) return;
      watchedTargets = key;
      retire(targets);
      targets = undefined;
      if (paths.length === 0) return;
      try {
        targets = Deno.watchFs(paths, { recursive: false });
        // A target replaced by rename ends its watch: reload, which watches anew.
        consume(targets, () => {
          watchedTargets = "";
          changed();
        });
      } catch {
        // A target vanished between listing and watching; the directory watch
        // still sees the link change, and the next reload refreshes this list.
      }
    },
    close() {
      closed = true;
      clearTimeout(timer);
      retire(directory);
      retire(targets);
    },
  };
  await watch.refreshTargets();
  return watch;
}

/**
 * What polling compares: the directory's identity and, for each entry, its
 * name, modification time and size (through symlinks); "missing" when the
 * directory is gone.
 */
async function signature(dir: string): Promise<string> {
  try {
    const parts = [String((await Deno.stat(dir)).ino)];
    for await (const entry of Deno.readDir(dir)) {
      const info = await Deno.stat(join(dir, entry.name)).catch(() => null);
      parts.push(`${entry.name}:${info?.mtime?.getTime()}:${info?.size}`);
    }
    return parts.sort().join("\n");
  } catch {
    return "missing";
  }
}

/** Real paths of symlinked route files whose targets are outside `dir`. */
async function outsideTargets(dir: string): Promise<string[]> {
  const paths: string[] = [];
  const realDir = await Deno.realPath(dir);
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isSymlink || entry.name.startsWith(".")) continue;
    try {
      const target = await Deno.realPath(join(dir, entry.name));
      const inside = relative(realDir, target);
      if (inside === ".." || inside.startsWith("../") || isAbsolute(inside)) {
        paths.push(target);
      }
    } catch {
      // Dangling link: nothing to watch until it points somewhere.
    }
  }
  return paths.sort();
}

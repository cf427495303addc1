/**
 * Notices changes to the route files: watches the routes directory itself
 * (not each file, so files created, removed, renamed over by editors, and the
 * atomic `..data` swap of a Kubernetes ConfigMap are all seen) plus the
 * targets of symlinked route files that live elsewhere. Bursts of events are
 * debounced into one call.
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

/**
 * Calls `onChange` once per burst of file system events under `dir`, after
 * `debounceMs` of quiet.
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
  debounceMs = 200,
): Promise<RoutesWatch> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  const consume = async (watcher: Deno.FsWatcher) => {
    try {
      for await (const event of watcher) {
        if (event.kind !== "access") changed();
      }
    } catch {
      // The watcher was closed.
    }
  };
  const directory = Deno.watchFs(dir, { recursive: false });
  consume(directory);

  let targets: Deno.FsWatcher | undefined;
  let watchedTargets = "";
  const watch: RoutesWatch = {
    async refreshTargets() {
      const paths = await outsideTargets(dir);
      const key = paths.join("\n");
      if (key === watchedTargets) return;
      watchedTargets = key;
      targets?.close();
      targets = undefined;
      if (paths.length === 0) return;
      try {
        targets = Deno.watchFs(paths, { recursive: false });
        consume(targets);
      } catch {
        // A target vanished between listing and watching; the directory watch
        // still sees the link change, and the next reload refreshes this list.
      }
    },
    close() {
      clearTimeout(timer);
      directory.close();
      targets?.close();
    },
  };
  await watch.refreshTargets();
  return watch;
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

/**
 * The clusters of every service, by service name. A reload stages the
 * clusters its routes need (new services get new clusters; services that
 * stay keep theirs), opens what it must, then commits: services that stay
 * take their new settings, and those that are gone stop their discovery and
 * health checks. A reload that fails aborts, and nothing running changed.
 * @module
 */
import { Cluster, type ClusterDeps, type ClusterSettings } from "./cluster.ts";

/** Clusters prepared for a reload, to commit or abort. */
export interface StagedClusters {
  /** The cluster of service `name`, running or new. */
  cluster(name: string): Cluster;
  /** Makes the staged clusters the running ones. */
  commit(): Promise<void>;
  /** Closes the new clusters; the running ones are untouched. */
  abort(): void;
}

/** Every service's cluster. */
export class ClusterRegistry {
  readonly #deps: ClusterDeps;
  readonly #clusters = new Map<string, Cluster>();

  /** Makes an empty registry. */
  constructor(deps: ClusterDeps) {
    this.#deps = deps;
  }

  /** The running clusters, by service name. */
  get clusters(): readonly Cluster[] {
    return [...this.#clusters.values()];
  }

  /**
   * Prepares the clusters of `settings`: services not running yet get a new
   * cluster (its endpoints found once); running ones are reused as they are
   * until {@linkcode StagedClusters.commit}.
   */
  async stage(settings: readonly ClusterSettings[]): Promise<StagedClusters> {
    const created = new Map<string, Cluster>();
    try {
      await Promise.all(
        settings.filter((s) => !this.#clusters.has(s.name)).map(async (s) => {
          created.set(s.name, await Cluster.create(s, this.#deps));
        }),
      );
    } catch (error) {
      for (const cluster of created.values()) cluster.close();
      throw error;
    }
    const byName = new Map(settings.map((s) => [s.name, s]));
    return {
      cluster: (name) => {
        const cluster = created.get(name) ?? this.#clusters.get(name);
        if (!cluster) throw new RangeError(`No cluster staged for "${name}"`);
        return cluster;
      },
      commit: async () => {
        for (const [name, cluster] of this.#clusters) {
          const next = byName.get(name);
          if (next === undefined) {
            cluster.close();
            this.#clusters.delete(name);
          } else if (
            JSON.stringify(next) !== JSON.stringify(cluster.settings)
          ) {
            await cluster.update(next);
          }
        }
        for (const [name, cluster] of created) {
          this.#clusters.set(name, cluster);
        }
      },
      abort: () => {
        for (const cluster of created.values()) cluster.close();
      },
    };
  }

  /** Closes every cluster. */
  close(): void {
    for (const cluster of this.#clusters.values()) cluster.close();
    this.#clusters.clear();
  }
}

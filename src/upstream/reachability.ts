/**
 * Remembers which endpoints are failing so that an endpoint going down is
 * logged once, and coming back is logged once, however many requests or
 * connections fail in between. Keyed by endpoint URL.
 * @module
 */
import type { Logger } from "../log.ts";

/**
 * Logs transitions of endpoint reachability.
 *
 * @example Usage
 * ```ts
 * import { Reachability } from "./reachability.ts";
 * import { Logger } from "../log.ts";
 * const reachability = new Reachability(new Logger({ level: "info", format: "text" }));
 * reachability.failed("users", "http://10.0.0.1:80", "connection refused"); // logged
 * reachability.failed("users", "http://10.0.0.1:80", "connection refused"); // counted
 * reachability.succeeded("users", "http://10.0.0.1:80"); // logged with the count
 * ```
 */
export class Reachability {
  readonly #failing = new Map<string, number>();
  readonly #log: Logger;

  /** Logs through `log`. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /** Records a failure to reach `endpoint`; logs only the first of a run. */
  failed(service: string, endpoint: string, reason: string): void {
    const count = this.#failing.get(endpoint);
    this.#failing.set(endpoint, (count ?? 0) + 1);
    if (count === undefined) {
      this.#log.warn("upstream unreachable", { service, endpoint, reason });
    }
  }

  /** Records a success; logs when the endpoint was failing. */
  succeeded(service: string, endpoint: string): void {
    if (this.#failing.size === 0) return;
    const count = this.#failing.get(endpoint);
    if (count === undefined) return;
    this.#failing.delete(endpoint);
    this.#log.info("upstream reachable again", {
      service,
      endpoint,
      failures: count,
    });
  }
}

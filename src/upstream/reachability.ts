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
 * @example Once down, once back up, however many failures between
 * ```ts
 * import assert from "node:assert/strict";
 * import { Reachability } from "./reachability.ts";
 * import { Logger } from "../log.ts";
 * const events: Record<string, unknown>[] = [];
 * const reachability = new Reachability(
 *   new Logger({
 *     level: "info",
 *     format: "json",
 *     write: (line) => events.push(JSON.parse(line)),
 *   }),
 * );
 * const endpoint = "http://users-1.internal:8080";
 * reachability.failed("users", endpoint, "connection refused"); // logged
 * reachability.failed("users", endpoint, "connection refused"); // counted
 * reachability.succeeded("users", endpoint); // logged with the count
 * reachability.succeeded("users", endpoint); // nothing to say
 * assert.deepEqual(
 *   events.map(({ time: _, ...event }) => event),
 *   [
 *     {
 *       level: "warn",
 *       msg: "upstream unreachable",
 *       service: "users",
 *       endpoint,
 *       reason: "connection refused",
 *     },
 *     {
 *       level: "info",
 *       msg: "upstream reachable again",
 *       service: "users",
 *       endpoint,
 *       failures: 2,
 *     },
 *   ],
 * );
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

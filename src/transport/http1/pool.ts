/**
 * Keep-alive pools of idle upstream connections, one list per endpoint,
 * most recently used first.
 *
 * A connection enters the pool only after an exchange ended cleanly; while
 * pooled, an outstanding read retires it the moment the upstream closes it or
 * sends anything. A connection is also retired before the upstream's own
 * `Keep-Alive: timeout` would close it, so a request is never written into a
 * connection the upstream is closing.
 * @module
 */
import type { Http1Connection } from "./connection.ts";

/** Options of {@linkcode ConnectionPool}. */
export interface PoolOptions {
  /**
   * Idle connections kept per endpoint.
   * @default {64}
   */
  readonly maxIdlePerEndpoint?: number;
  /**
   * How long an idle connection is kept, in milliseconds.
   * @default {60000}
   */
  readonly idleTimeout?: number;
}

/**
 * How long before the upstream's announced keep-alive timeout legate stops
 * using a connection, in milliseconds: a request needs time to get there.
 */
const KEEP_ALIVE_MARGIN_MS = 1_000;

/** Idle connections by endpoint. */
export class ConnectionPool {
  readonly #idle = new Map<string, Http1Connection[]>();
  readonly #maxIdle: number;
  readonly #idleTimeout: number;
  readonly #sweeper: ReturnType<typeof setInterval>;

  /** Makes empty pools; a timer sweeps out expired connections. */
  constructor(options: PoolOptions = {}) {
    this.#maxIdle = options.maxIdlePerEndpoint ?? 64;
    this.#idleTimeout = options.idleTimeout ?? 60_000;
    this.#sweeper = setInterval(
      () => this.#sweep(),
      Math.min(this.#idleTimeout, 10_000),
    );
    Deno.unrefTimer(this.#sweeper);
  }

  /** The most recently pooled usable connection to `key`, taken out of the pool. */
  take(key: string): Http1Connection | undefined {
    const list = this.#idle.get(key);
    const now = Date.now();
    while (list && list.length > 0) {
      const connection = list.pop()!;
      if (this.#usable(connection, now)) {
        connection.leavePool();
        return connection;
      }
      connection.close();
    }
    return undefined;
  }

  /**
   * Puts a connection whose exchange ended cleanly into `key`'s pool, or
   * closes it when the pool is full. `keepAliveSeconds` is the upstream's
   * announced keep-alive timeout, when it sent one.
   */
  release(
    key: string,
    connection: Http1Connection,
    keepAliveSeconds: number | null,
  ): void {
    const list = this.#idle.get(key) ?? [];
    if (list.length >= this.#maxIdle) {
      connection.close();
      return;
    }
    connection.usableUntil = keepAliveSeconds === null
      ? Infinity
      : Date.now() + keepAliveSeconds * 1_000 - KEEP_ALIVE_MARGIN_MS;
    list.push(connection);
    this.#idle.set(key, list);
    connection.enterPool(() => {
      const index = list.indexOf(connection);
      if (index >= 0) list.splice(index, 1);
    });
  }

  /** Closes every idle connection and stops the sweeper. */
  close(): void {
    clearInterval(this.#sweeper);
    for (const list of this.#idle.values()) for (const c of list) c.close();
    this.#idle.clear();
  }

  #usable(connection: Http1Connection, now: number): boolean {
    return !connection.closed &&
      now - connection.idleSince < this.#idleTimeout &&
      now < connection.usableUntil;
  }

  #sweep(): void {
    const now = Date.now();
    for (const [key, list] of this.#idle) {
      // In place: each pooled connection's retire callback holds this list.
      let kept = 0;
      for (const connection of list) {
        if (this.#usable(connection, now)) list[kept++] = connection;
        else connection.close();
      }
      list.length = kept;
      if (kept === 0) this.#idle.delete(key);
    }
  }
}

/**
 * Active health checks: every endpoint of a service is probed on its own
 * schedule (the interval jittered by up to 10%, so checks of many endpoints
 * do not bunch up); `unhealthyThreshold` failures in a row make it
 * unhealthy, `healthyThreshold` passes in a row make it healthy again.
 * An endpoint starts healthy, as HAProxy's servers do: a sidecar that starts
 * must not refuse traffic until a first round of checks has passed.
 *
 * Probes open their own connections (never pooled ones): an HTTP GET of the
 * configured path, or for TCP a connect, optionally with bytes to send and
 * an expected answer.
 * @module
 */
import {
  closeQuietly,
  connectEndpoint,
  writeAll,
} from "../transport/connect.ts";
import { ProxyError } from "../transport/errors.ts";
import { Http1Transport } from "../transport/http1/client.ts";
import type { Endpoint } from "./endpoint.ts";

/** How a service's endpoints are checked. */
export interface HealthCheckSettings {
  /** HTTP: the path to GET; null for TCP services. */
  readonly path: string | null;
  /** TCP: bytes to send once connected, or null. */
  readonly send: string | null;
  /** TCP: what the answer must start with, or null. */
  readonly expect: string | null;
  /** Between two checks of one endpoint, in milliseconds. */
  readonly interval: number;
  /** For one check, in milliseconds. */
  readonly timeout: number;
  /** Passes in a row that make an endpoint healthy. */
  readonly healthyThreshold: number;
  /** Failures in a row that make an endpoint unhealthy. */
  readonly unhealthyThreshold: number;
  /** HTTP: inclusive status ranges that pass. */
  readonly expectStatus: readonly (readonly [number, number])[];
}

/** Checks one endpoint once: resolves with null when it passes, or why it failed. */
export type Probe = (
  endpoint: Endpoint,
  settings: HealthCheckSettings,
) => Promise<string | null>;

/** What a {@linkcode HealthChecker} reports. */
export interface HealthEvents {
  /** An endpoint became healthy or unhealthy; `reason` is the last failure. */
  changed(endpoint: Endpoint, healthy: boolean, reason: string | null): void;
}

/** One check loop per endpoint of a service. */
export class HealthChecker {
  readonly #settings: HealthCheckSettings;
  readonly #probe: Probe;
  readonly #events: HealthEvents;
  readonly #loops = new Map<Endpoint, { stop(): void }>();
  #stopped = false;

  /** Checks nothing until {@linkcode HealthChecker.watch} says what. */
  constructor(
    settings: HealthCheckSettings,
    probe: Probe,
    events: HealthEvents,
  ) {
    this.#settings = settings;
    this.#probe = probe;
    this.#events = events;
  }

  /** Checks exactly `endpoints`: new ones start, removed ones stop. */
  watch(endpoints: readonly Endpoint[]): void {
    if (this.#stopped) return;
    const wanted = new Set(endpoints);
    for (const [endpoint, loop] of this.#loops) {
      if (!wanted.has(endpoint)) {
        loop.stop();
        this.#loops.delete(endpoint);
      }
    }
    for (const endpoint of endpoints) {
      if (!this.#loops.has(endpoint)) {
        this.#loops.set(endpoint, this.#loop(endpoint));
      }
    }
  }

  /** Stops every check. */
  stop(): void {
    this.#stopped = true;
    for (const loop of this.#loops.values()) loop.stop();
    this.#loops.clear();
  }

  #loop(endpoint: Endpoint): { stop(): void } {
    const settings = this.#settings;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let passes = 0;
    let failures = 0;
    const next = (delay: number) => {
      if (stopped) return;
      timer = setTimeout(check, delay);
      Deno.unrefTimer(timer);
    };
    const check = async () => {
      const reason = await this.#probe(endpoint, settings).catch((error) =>
        String((error as Error).message ?? error)
      );
      if (stopped) return;
      if (reason === null) {
        failures = 0;
        passes++;
        if (!endpoint.healthy && passes >= settings.healthyThreshold) {
          endpoint.healthy = true;
          this.#events.changed(endpoint, true, null);
        }
      } else {
        passes = 0;
        failures++;
        if (endpoint.healthy && failures >= settings.unhealthyThreshold) {
          endpoint.healthy = false;
          this.#events.changed(endpoint, false, reason);
        }
      }
      next(jittered(settings.interval));
    };
    // The first check comes soon, spread over a tenth of the interval.
    next(Math.random() * settings.interval / 10);
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }
}

/** `ms` plus or minus up to 10%. */
function jittered(ms: number): number {
  return ms * (0.9 + Math.random() * 0.2);
}

/** Health checks open fresh connections and keep none. */
const checks = new Http1Transport({ maxIdlePerEndpoint: 0 });

/**
 * The probe legate uses: an HTTP GET of `path` (passing on an expected
 * status), or a TCP connect with optional bytes sent and expected back.
 *
 * @example An HTTP check passes on 200 and fails on 503
 * ```ts
 * import assert from "node:assert/strict";
 * import { Endpoint } from "./endpoint.ts";
 * import { probeEndpoint } from "./health.ts";
 * let status = 200;
 * await using server = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   () => new Response(null, { status }),
 * );
 * const { port } = server.addr;
 * const endpoint = new Endpoint({
 *   key: `127.0.0.1:${port}`,
 *   url: `http://127.0.0.1:${port}`,
 *   source: "static",
 *   address: { transport: "tcp", hostname: "127.0.0.1", port },
 *   tls: false,
 *   serverName: "127.0.0.1",
 *   authority: `127.0.0.1:${port}`,
 *   weight: 1,
 *   priority: 0,
 * });
 * const settings = {
 *   path: "/healthz",
 *   send: null,
 *   expect: null,
 *   interval: 5_000,
 *   timeout: 1_000,
 *   healthyThreshold: 2,
 *   unhealthyThreshold: 3,
 *   expectStatus: [[200, 399]] as const,
 * };
 * assert.equal(await probeEndpoint(endpoint, settings), null);
 * status = 503;
 * assert.equal(await probeEndpoint(endpoint, settings), "GET /healthz answered 503");
 * ```
 */
export async function probeEndpoint(
  endpoint: Endpoint,
  settings: HealthCheckSettings,
): Promise<string | null> {
  if (settings.path !== null) {
    const signal = AbortSignal.timeout(settings.timeout);
    const response = await checks.send(endpoint, {
      method: "GET",
      target: settings.path,
      headers: [
        ["host", endpoint.authority],
        ["user-agent", "legate-health-check"],
      ],
      body: null,
      bodyLength: null,
      signal,
    }, {
      connect: settings.timeout,
      request: settings.timeout,
      idle: settings.timeout,
    }).catch((error: unknown) => error as Error);
    if (response instanceof Error) {
      return signal.aborted
        ? `GET ${settings.path} took longer than ${settings.timeout}ms`
        : response.message;
    }
    if (response.body instanceof ReadableStream) {
      response.body.cancel().catch(() => {});
    }
    const passed = settings.expectStatus.some(([low, high]) =>
      response.status >= low && response.status <= high
    );
    return passed ? null : `GET ${settings.path} answered ${response.status}`;
  }
  const conn = await connectEndpoint(endpoint, settings.timeout);
  try {
    if (settings.send !== null) {
      await writeAll(conn, new TextEncoder().encode(settings.send));
    }
    if (settings.expect === null) return null;
    const expected = new TextEncoder().encode(settings.expect);
    const received = new Uint8Array(expected.length);
    let length = 0;
    const deadline = setTimeout(() => closeQuietly(conn), settings.timeout);
    try {
      while (length < expected.length) {
        const n = await conn.read(received.subarray(length)).catch(() => null);
        if (n === null) break;
        length += n;
      }
    } finally {
      clearTimeout(deadline);
    }
    return length === expected.length &&
        received.every((byte, i) => byte === expected[i])
      ? null
      : `the answer did not start with ${JSON.stringify(settings.expect)}`;
  } catch (error) {
    throw error instanceof ProxyError ? error : new ProxyError(
      "destination_unavailable",
      String((error as Error).message),
    );
  } finally {
    closeQuietly(conn);
  }
}

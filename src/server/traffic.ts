/**
 * Traffic counters for `/metrics`: requests by service and status, upstream
 * failures by service and kind, TCP connections and bytes by service. The
 * pipelines count; the admin listener renders.
 * @module
 */
import type { RequestOutcome } from "./http_proxy.ts";

/** One metric family, in the shape the admin listener renders. */
export interface MetricFamily {
  /** Metric name. */
  readonly name: string;
  /** What it measures. */
  readonly help: string;
  /** Prometheus type. */
  readonly type: "counter" | "gauge";
  /** Samples: labels → value. */
  readonly samples: { labels: Record<string, string>; value: number }[];
}

/** Counters keyed by label values joined with a separator no name contains. */
class LabeledCounter {
  readonly #values = new Map<string, number>();
  readonly #labels: readonly string[];

  constructor(labels: readonly string[]) {
    this.#labels = labels;
  }

  add(values: readonly string[], amount = 1): void {
    const key = values.join("\u0000");
    this.#values.set(key, (this.#values.get(key) ?? 0) + amount);
  }

  samples(): MetricFamily["samples"] {
    return [...this.#values].map(([key, value]) => {
      const parts = key.split("\u0000");
      return {
        labels: Object.fromEntries(this.#labels.map((l, i) => [l, parts[i]!])),
        value,
      };
    });
  }
}

/**
 * What legate forwarded, since start. Survives reloads: it is keyed by
 * service name, not by config snapshot.
 *
 * @example Counts by label values
 * ```ts
 * import assert from "node:assert/strict";
 * import { Traffic } from "./traffic.ts";
 * const traffic = new Traffic();
 * traffic.request("users", 200);
 * traffic.request("users", 200);
 * traffic.request("users", 502);
 * const requests = traffic.metrics()
 *   .find((m) => m.name === "legate_http_requests_total")!;
 * assert.deepEqual(requests.samples, [
 *   { labels: { service: "users", code: "200" }, value: 2 },
 *   { labels: { service: "users", code: "502" }, value: 1 },
 * ]);
 * ```
 *
 * @example Open TCP connections go up and down; bytes add up
 * ```ts
 * import assert from "node:assert/strict";
 * import { Traffic } from "./traffic.ts";
 * const traffic = new Traffic();
 * traffic.connectionOpened("redis");
 * traffic.connectionClosed("redis", 100, 2_000);
 * const value = (name: string, direction?: string) =>
 *   traffic.metrics().find((m) => m.name === name)!.samples
 *     .find((s) => s.labels.direction === direction)!.value;
 * assert.equal(value("legate_tcp_connections_total"), 1);
 * assert.equal(value("legate_tcp_connections_open"), 0);
 * assert.equal(value("legate_tcp_bytes_total", "upstream"), 100);
 * assert.equal(value("legate_tcp_bytes_total", "downstream"), 2_000);
 * ```
 */
export class Traffic {
  readonly #requests = new LabeledCounter(["service", "code"]);
  readonly #errors = new LabeledCounter(["service", "error"]);
  readonly #connections = new LabeledCounter(["service"]);
  readonly #bytes = new LabeledCounter(["service", "direction"]);
  readonly #open = new LabeledCounter(["service"]);

  /** Counts an HTTP response (legate's own error responses included). */
  request(service: string, status: number): void {
    this.#requests.add([service, String(status)]);
  }

  /**
   * Counts how an HTTP request ended, as the pipeline's log phase reports
   * it; a request no route matched counts under service `none`.
   */
  observe(outcome: RequestOutcome): void {
    const service = outcome.service ?? "none";
    this.request(service, outcome.status);
    if (outcome.error?.source === "upstream") {
      this.upstreamError(service, outcome.error.kind);
    }
  }

  /** Counts a failure to reach or read an upstream. */
  upstreamError(service: string, kind: string): void {
    this.#errors.add([service, kind]);
  }

  /** Counts a relayed TCP connection that started. */
  connectionOpened(service: string): void {
    this.#connections.add([service]);
    this.#open.add([service]);
  }

  /** Counts a relayed TCP connection that ended, with its bytes. */
  connectionClosed(service: string, sent: number, received: number): void {
    this.#open.add([service], -1);
    this.#bytes.add([service, "upstream"], sent);
    this.#bytes.add([service, "downstream"], received);
  }

  /** The counters as metric families. */
  metrics(): MetricFamily[] {
    return [
      {
        name: "legate_http_requests_total",
        help: "HTTP responses sent, by service and status code.",
        type: "counter",
        samples: this.#requests.samples(),
      },
      {
        name: "legate_upstream_errors_total",
        help:
          "Failures to reach or read an upstream, by service and RFC 9209 error type.",
        type: "counter",
        samples: this.#errors.samples(),
      },
      {
        name: "legate_tcp_connections_total",
        help: "TCP connections relayed to an upstream, by service.",
        type: "counter",
        samples: this.#connections.samples(),
      },
      {
        name: "legate_tcp_connections_open",
        help: "TCP connections being relayed now, by service.",
        type: "gauge",
        samples: this.#open.samples(),
      },
      {
        name: "legate_tcp_bytes_total",
        help:
          "Bytes relayed over TCP, by service and direction (upstream: from clients).",
        type: "counter",
        samples: this.#bytes.samples(),
      },
    ];
  }
}

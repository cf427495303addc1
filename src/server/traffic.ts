/**
 * What legate counts about the traffic it forwards, in the metrics
 * registry: requests by service and status, upstream failures by kind, TCP
 * connections and bytes, and latency histograms (requests, upstream
 * connects, time to the upstream's response head, TCP connections). The
 * pipelines report; the admin listener renders.
 * @module
 */
import type { Histogram, Metric, MetricsRegistry, Sample } from "../metrics.ts";
import type { RelayBytes } from "../transport/tcp.ts";
import type { AttemptMetrics, RequestOutcome } from "./http_proxy.ts";
import type { WebSocketMetrics } from "./websocket_proxy.ts";

/**
 * What legate forwarded, since start. Survives reloads: it is keyed by
 * service name, not by config snapshot.
 *
 * @example Requests by service and status, and their latency
 * ```ts
 * import assert from "node:assert/strict";
 * import { MetricsRegistry } from "../metrics.ts";
 * import { Traffic } from "./traffic.ts";
 * const metrics = new MetricsRegistry();
 * const traffic = new Traffic(metrics);
 * traffic.request("users", 200, 0.004);
 * traffic.request("users", 502, 0.002);
 * const families = metrics.collect();
 * const requests = families.find((m) => m.name === "legate_http_requests_total")!;
 * assert.deepEqual(requests.samples, [
 *   { labels: { service: "users", code: "200" }, value: 1 },
 *   { labels: { service: "users", code: "502" }, value: 1 },
 * ]);
 * const latency = families.find((m) => m.name === "legate_http_request_duration_seconds")!;
 * assert.equal(latency.type, "histogram");
 * ```
 *
 * @example Open TCP connections go up and down; bytes add up as they flow
 * ```ts
 * import assert from "node:assert/strict";
 * import { MetricsRegistry } from "../metrics.ts";
 * import { Traffic } from "./traffic.ts";
 * const metrics = new MetricsRegistry();
 * const traffic = new Traffic(metrics);
 * const value = (name: string, direction?: string) => {
 *   const family = metrics.collect().find((m) => m.name === name)!;
 *   if (family.type === "histogram") throw new Error("not a value");
 *   return family.samples.find((s) => s.labels.direction === direction)!.value;
 * };
 * // Bytes count while the connection is open, as the relay moves them.
 * const bytes = { sent: 100, received: 0 };
 * traffic.connectionOpened("redis", bytes);
 * assert.equal(value("legate_tcp_bytes_total", "upstream"), 100);
 * bytes.received = 2_000;
 * traffic.connectionClosed("redis", bytes, 1.5);
 * assert.equal(value("legate_tcp_connections_total"), 1);
 * assert.equal(value("legate_tcp_connections_open"), 0);
 * assert.equal(value("legate_tcp_bytes_total", "upstream"), 100);
 * assert.equal(value("legate_tcp_bytes_total", "downstream"), 2_000);
 * ```
 */
export class Traffic implements AttemptMetrics, WebSocketMetrics {
  readonly #requests: Metric;
  readonly #errors: Metric;
  readonly #connections: Metric;
  readonly #open: Metric;
  /** Bytes of connections that ended, by service and direction. */
  readonly #closedBytes = new Map<string, { sent: number; received: number }>();
  /** Connections being relayed, each with its service, counted at scrape time. */
  readonly #live = new Map<RelayBytes, string>();
  readonly #requestSeconds: Histogram;
  readonly #connectSeconds: Histogram;
  readonly #headSeconds: Histogram;
  readonly #tcpSeconds: Histogram;
  readonly #webSockets: Metric;
  readonly #webSocketsOpen: Metric;
  readonly #webSocketMessages: Metric;

  /** Registers the traffic metrics in `metrics`. */
  constructor(metrics: MetricsRegistry) {
    this.#requests = metrics.counter(
      "legate_http_requests_total",
      "HTTP responses sent, by service and status code (service none: no route matched).",
      ["service", "code"],
    );
    this.#errors = metrics.counter(
      "legate_upstream_errors_total",
      "Failures to reach or read an upstream, by service and RFC 9209 error type.",
      ["service", "error"],
    );
    this.#connections = metrics.counter(
      "legate_tcp_connections_total",
      "TCP connections relayed to an upstream, by service.",
      ["service"],
    );
    this.#open = metrics.gauge(
      "legate_tcp_connections_open",
      "TCP connections being relayed now, by service.",
      ["service"],
    );
    metrics.collector(() => [{
      name: "legate_tcp_bytes_total",
      help:
        "Bytes relayed over TCP, by service and direction (upstream: from clients), counted as they flow.",
      type: "counter",
      samples: this.#bytesSamples(),
    }]);
    this.#requestSeconds = metrics.histogram(
      "legate_http_request_duration_seconds",
      "HTTP requests from arrival to the end of the response, by service.",
      ["service"],
    );
    this.#connectSeconds = metrics.histogram(
      "legate_upstream_connect_duration_seconds",
      "Opening an upstream connection (TLS included), by service.",
      ["service"],
    );
    this.#headSeconds = metrics.histogram(
      "legate_upstream_response_header_duration_seconds",
      "From sending a request upstream to its response head, by service.",
      ["service"],
    );
    this.#webSockets = metrics.counter(
      "legate_websocket_connections_total",
      "WebSocket connections bridged to an upstream, by service.",
      ["service"],
    );
    this.#webSocketsOpen = metrics.gauge(
      "legate_websocket_connections_open",
      "WebSocket connections being bridged now, by service.",
      ["service"],
    );
    this.#webSocketMessages = metrics.counter(
      "legate_websocket_messages_total",
      "WebSocket messages passed, by service and direction (upstream: from clients).",
      ["service", "direction"],
    );
    this.#tcpSeconds = metrics.histogram(
      "legate_tcp_connection_duration_seconds",
      "TCP connections from accept to close, by service.",
      ["service"],
    );
  }

  /** Counts an HTTP response (legate's own answers included) and its duration in seconds. */
  request(service: string, status: number, seconds: number): void {
    this.#requests.labels(service, String(status)).add();
    this.#requestSeconds.labels(service).observe(seconds);
  }

  /**
   * Counts how an HTTP request ended, as the pipeline's log phase reports
   * it; a request no route matched counts under service `none`.
   */
  observe(outcome: RequestOutcome): void {
    const service = outcome.service ?? "none";
    this.request(service, outcome.status, outcome.durationMs / 1000);
    if (outcome.error?.source === "upstream") {
      this.upstreamError(service, outcome.error.kind);
    }
  }

  /** Counts a failure to reach or read an upstream. */
  upstreamError(service: string, kind: string): void {
    this.#errors.labels(service, kind).add();
  }

  /** Records the opening of an upstream connection. */
  connected(service: string, seconds: number): void {
    this.#connectSeconds.labels(service).observe(seconds);
  }

  /** Records an upstream's time to its response head. */
  answered(service: string, seconds: number): void {
    this.#headSeconds.labels(service).observe(seconds);
  }

  /**
   * Counts a relayed TCP connection that started; its `bytes` are read
   * whenever metrics are collected, until it closes.
   */
  connectionOpened(service: string, bytes: RelayBytes): void {
    this.#connections.labels(service).add();
    this.#open.labels(service).add(1);
    this.#live.set(bytes, service);
  }

  /** Counts a relayed TCP connection that ended, with its duration in seconds. */
  connectionClosed(service: string, bytes: RelayBytes, seconds: number): void {
    this.#open.labels(service).add(-1);
    this.#live.delete(bytes);
    this.#addBytes(this.#closedBytes, service, bytes);
    this.#tcpSeconds.labels(service).observe(seconds);
  }

  /** Counts a WebSocket that was bridged. */
  webSocketOpened(service: string): void {
    this.#webSockets.labels(service).add();
    this.#webSocketsOpen.labels(service).add(1);
  }

  /** Counts a bridged WebSocket that ended. */
  webSocketClosed(service: string): void {
    this.#webSocketsOpen.labels(service).add(-1);
  }

  /** Counts a WebSocket message passed in `direction`. */
  webSocketMessage(
    service: string,
    direction: "upstream" | "downstream",
  ): void {
    this.#webSocketMessages.labels(service, direction).add();
  }

  #bytesSamples(): Sample[] {
    const totals = new Map<string, { sent: number; received: number }>();
    for (const [service, bytes] of this.#closedBytes) {
      this.#addBytes(totals, service, bytes);
    }
    for (const [bytes, service] of this.#live) {
      this.#addBytes(totals, service, bytes);
    }
    return [...totals].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
      .flatMap(([service, { sent, received }]) => [
        { labels: { service, direction: "upstream" }, value: sent },
        { labels: { service, direction: "downstream" }, value: received },
      ]);
  }

  #addBytes(
    totals: Map<string, { sent: number; received: number }>,
    service: string,
    bytes: RelayBytes,
  ): void {
    const total = totals.get(service);
    if (total) {
      total.sent += bytes.sent;
      total.received += bytes.received;
    } else totals.set(service, { sent: bytes.sent, received: bytes.received });
  }
}

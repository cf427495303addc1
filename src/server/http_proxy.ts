/**
 * The HTTP request pipeline of one listener, in named phases:
 *
 * 1. **route**: check the request and find its service;
 * 2. **upstream request**: the headers and body the upstream gets;
 * 3. **select and send**: pick an endpoint, send, and retry as the service's
 *    retry policy allows;
 * 4. **upstream response**: the response the client gets;
 * 5. **log**: count and log how the request ended (each listener of this
 *    phase is a hook, as metrics and the debug log are).
 *
 * Failures become short plain-text responses with a `Proxy-Status` header
 * naming legate and the error. It reads no route files: routes arrive built,
 * each with its service's cluster.
 * @module
 */
import type { Logger } from "../log.ts";
import type { HttpRouter, RouteMatch } from "../router/router.ts";
import { stripPrefix } from "../router/router.ts";
import { ProxyError, statusForError } from "../transport/errors.ts";
import {
  connectionTokens,
  type HeaderPair,
  isHopByHop,
  withoutHopByHop,
} from "../transport/headers.ts";
import {
  type ExchangeStats,
  type ExchangeTimeouts,
  type ExchangeTracker,
  type HttpTransport,
  IDEMPOTENT,
  type UpstreamResponse,
} from "../transport/http1/client.ts";
import type { Cluster } from "../upstream/cluster.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import { hashKey } from "../upstream/hash.ts";
import { applyHeaderRules, type HeaderRules } from "./header_rules.ts";
import type { ClientConnection, HttpHandler } from "./http_listener.ts";
import { rewriteRedirects } from "./redirects.ts";
import { receivedTarget, requestTarget } from "./request_target.ts";
import {
  type IncomingTrace,
  type RequestTrace,
  startTrace,
} from "./trace_context.ts";
import {
  proxyWebSocket,
  type WebSocketMetrics,
  type WebSocketSettings,
} from "./websocket_proxy.ts";

/** What ring_hash and maglev hash to choose an endpoint. */
export type HashOn =
  | { readonly kind: "source_ip" }
  | { readonly kind: "header"; readonly name: string }
  | { readonly kind: "cookie"; readonly name: string }
  | { readonly kind: "path" };

/** One HTTP service as a listener routes to it. */
export interface HttpRoute {
  /** The service name. */
  readonly name: string;
  /** Which requests of the listener it takes. */
  readonly match: RouteMatch;
  /** Remove `match.pathPrefix` before forwarding. */
  readonly stripPrefix: boolean;
  /** Send the client's authority as Host, rather than the endpoint's. */
  readonly preserveHost: boolean;
  /** Timeouts of one try, in milliseconds. */
  readonly timeouts: ExchangeTimeouts;
  /** What a hash policy hashes; null when the policy hashes nothing. */
  readonly hashOn: HashOn | null;
  /** Rules for the request the upstream gets, or null. */
  readonly requestHeaders: HeaderRules | null;
  /** Rules for the response the client gets, or null. */
  readonly responseHeaders: HeaderRules | null;
  /** Rewrite Location and Content-Location that point at the upstream. */
  readonly rewriteRedirects: boolean;
  /** WebSocket settings when the service enables WebSocket, or null. */
  readonly webSocket: WebSocketSettings | null;
  /** The service's endpoints and policies. */
  readonly cluster: Cluster;
}

/**
 * How one request ended, as the log phase hears it: when its response has
 * been handed over whole (or cut), not when its head was.
 */
export interface RequestOutcome {
  /** When it arrived, in epoch milliseconds. */
  readonly startedAt: number;
  /** The service, or null when no route matched. */
  readonly service: string | null;
  /** The client's address (`unix` for a Unix socket). */
  readonly client: string;
  /** The request's method. */
  readonly method: string;
  /** The target as the client sent it. */
  readonly target: string;
  /** The status the client got. */
  readonly status: number;
  /** Request body bytes forwarded upstream. */
  readonly bytesIn: number;
  /** Response body bytes handed to the client. */
  readonly bytesOut: number;
  /** From arrival to the end of the response, in milliseconds. */
  readonly durationMs: number;
  /** The endpoint that answered, when one did. */
  readonly endpoint: Endpoint | null;
  /** Its time to the response head, in milliseconds, when one answered. */
  readonly upstreamMs: number | null;
  /** Tries made, retries included. */
  readonly attempts: number;
  /** The request's `X-Request-Id`, the client's or one legate made. */
  readonly requestId: string | null;
  /** The W3C trace id the request carried or was given, when tracing. */
  readonly traceId: string | null;
  /** Why legate answered itself, when it did. */
  readonly error: ProxyError | null;
}

/** Counts what single tries measure: per-attempt histograms. */
export interface AttemptMetrics {
  /** A new upstream connection of `service` opened in `seconds`. */
  connected(service: string, seconds: number): void;
  /** An upstream of `service` sent its response head after `seconds`. */
  answered(service: string, seconds: number): void;
}

/** What the pipeline needs besides the routes. */
export interface HttpProxyContext {
  /** Sends requests upstream. */
  readonly transport: HttpTransport;
  /** Logs failures. */
  readonly log: Logger;
  /** The log phase: each hears how every request ended. */
  readonly logPhase: readonly ((outcome: RequestOutcome) => void)[];
  /** Hears what each try measured. */
  readonly attempts: AttemptMetrics;
  /** Counts WebSocket connections and messages. */
  readonly webSockets: WebSocketMetrics;
}

const VIA: HeaderPair = ["via", "1.1 legate"];
const encoder = new TextEncoder();

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  499: "Client Closed Request",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** A request body up to this size may be held, so that it can be sent again. */
const HELD_BODY_BYTES = 64 * 1024;
/** Retry backoff: full jitter over 25 ms doubling per retry, at most 250 ms (as Envoy). */
const BACKOFF_MS = { base: 25, max: 250 } as const;

/**
 * Makes the handler of one HTTP listener. `router()` is read once per
 * request, so a reload that swaps it never changes a request in flight.
 * `scheme` is what the listener serves, as `X-Forwarded-Proto` tells it.
 */
export function createHttpHandler(
  router: () => HttpRouter<HttpRoute>,
  context: HttpProxyContext,
  scheme: "http" | "https" = "http",
): HttpHandler {
  return (request, client) =>
    proxyRequest(request, client, router(), context, scheme);
}

async function proxyRequest(
  request: Request,
  client: ClientConnection,
  router: HttpRouter<HttpRoute>,
  context: HttpProxyContext,
  scheme: "http" | "https",
): Promise<Response> {
  const started = performance.now();
  const startedAt = Date.now();
  const remote = client.remoteAddr;
  // Phase 1: route.
  const incoming = readRequestHeaders(request);
  const traced = startTrace(incoming.trace, request.method);
  const base = {
    traced,
    startedAt,
    started,
    service: null as string | null,
    client: remote.transport === "tcp" ? remote.hostname : remote.transport,
    method: request.method,
    target: request.url,
  };
  if (request.method === "CONNECT") {
    return answer(
      context,
      new ProxyError(
        "http_request_error",
        "legate does not tunnel CONNECT; use a TCP route for tunnels",
      ),
      base,
      0,
      501,
    );
  }
  if (incoming.upgrade !== null && !isWebSocket(incoming.upgrade)) {
    return answer(
      context,
      new ProxyError(
        "http_request_error",
        `legate does not upgrade HTTP to "${incoming.upgrade}"; use a TCP route for other protocols`,
      ),
      base,
      0,
      501,
    );
  }
  const parsed = requestTarget(request.url, request.method, incoming.host);
  if (typeof parsed === "string") {
    base.target = receivedTarget(request.url);
    return answer(
      context,
      new ProxyError("http_request_error", parsed),
      base,
      0,
    );
  }
  const { authority, path, target } = parsed;
  base.target = parsed.received;
  const route = router.route(authority, path === "*" ? "/" : path);
  if (!route) {
    const services = router.routes.map((r) =>
      `${r.name} (host ${r.match.host ?? "*"}, path ${r.match.pathPrefix})`
    ).join(", ");
    return answer(
      context,
      new ProxyError(
        "destination_not_found",
        `no service on this listener matches host "${authority}" and path "${path}"; services: ${services}`,
      ),
      base,
      0,
    );
  }
  base.service = route.name;
  traced.routed(route.name);
  const forwardedTarget = route.stripPrefix && path !== "*"
    ? stripPrefix(route.match.pathPrefix, path) + target.slice(path.length)
    : target;
  if (incoming.upgrade !== null && route.webSocket === null) {
    return answer(
      context,
      new ProxyError(
        "http_request_error",
        `service "${route.name}" does not forward WebSocket; add "websocket: {}" to its route file to enable it`,
      ),
      base,
      0,
      501,
    );
  }
  const { cluster } = route;
  if (!cluster.admit()) {
    return answer(
      context,
      new ProxyError(
        "connection_limit_reached",
        `service "${route.name}" is at limits.max_requests (${cluster.settings.limits.maxRequests})`,
      ),
      base,
      0,
    );
  }

  // Phase 2: upstream request.
  const headers = withForwardingHeaders(incoming, client, authority, scheme);
  const requestRules = route.requestHeaders;
  // Index 0 is the Host placeholder, which each try fills in.
  if (requestRules !== null) applyHeaderRules(headers, requestRules, 1);
  // Each attempt's trace headers go here, replacing the previous attempt's.
  const traceAt = headers.length;
  if (route.webSocket !== null && incoming.upgrade !== null) {
    return upgrade(request, client, route, route.webSocket, context, base, {
      hash: route.hashOn === null
        ? undefined
        : requestHash(route.hashOn, request, client, path),
      headers,
      traceAt,
      target: forwardedTarget,
      authority,
    });
  }
  const retries = cluster.settings.retries;
  const replayable = retries.attempts > 1 &&
    (IDEMPOTENT.has(request.method) || retries.retryNonIdempotent);
  // A request without Content-Length or Transfer-Encoding has no body (RFC
  // 9112 6.3); not touching request.body then saves creating its stream. A
  // small body that may be retried is held until it has been sent.
  let body: ReadableStream<Uint8Array> | Uint8Array | null = null;
  if (incoming.framed) {
    body = replayable && incoming.bodyLength !== null &&
        incoming.bodyLength <= HELD_BODY_BYTES &&
        retries.on.some((on) => on !== "connect_failure")
      ? new Uint8Array(await request.arrayBuffer())
      : request.body;
  }
  const hash = route.hashOn === null
    ? undefined
    : requestHash(route.hashOn, request, client, path);

  // Phase 3: select and send.
  const tried = new Set<Endpoint>();
  let attempts = 0;
  let failure: ProxyError;
  // The reason of the retry under way, whose budget share it holds.
  let retrying: string | null = null;
  while (true) {
    let endpoint: Endpoint;
    try {
      // Waiting (and its promise) only when no endpoint has room now.
      endpoint = cluster.pick(hash, tried) ??
        await cluster.acquire(hash, tried, true);
    } catch (error) {
      if (retrying !== null) cluster.retryEnded(retrying);
      failure = error as ProxyError;
      break;
    }
    tried.add(endpoint);
    attempts++;
    headers[0] = [
      "host",
      requestRules !== null && requestRules.host !== null
        ? requestRules.host.value
        : route.preserveHost
        ? authority
        : endpoint.authority,
    ];
    const attemptTrace = traced.attempt(endpoint, forwardedTarget);
    headers.length = traceAt;
    for (const pair of attemptTrace.headers) headers.push(pair);
    const attempt = new Attempt(
      client,
      cluster,
      endpoint,
      context.attempts,
    );
    let upstream: UpstreamResponse;
    try {
      upstream = await context.transport.send(endpoint, {
        method: request.method,
        target: forwardedTarget,
        headers,
        body,
        bodyLength: incoming.bodyLength,
        signal: request.signal,
        tracker: attempt,
      }, route.timeouts);
    } catch (error) {
      attempt.release();
      if (retrying !== null) cluster.retryEnded(retrying);
      retrying = null;
      failure = error instanceof ProxyError
        ? error
        : new ProxyError("proxy_internal_error", String(error), {
          cause: error,
        });
      attemptTrace.end(null, failure.kind);
      if (failure.source === "upstream") {
        cluster.finished(endpoint, failure.message);
      }
      const reason = retryReason(failure);
      if (
        reason === null || attempts >= retries.attempts ||
        !retries.on.includes(reason) ||
        (reason !== "connect_failure" &&
          (!replayable || body instanceof ReadableStream))
      ) {
        break;
      }
      // A connection that was refused is tried elsewhere at once; other
      // failures wait a little first, so that retries do not hammer, and
      // take their share of the budget only once they go.
      if (reason !== "connect_failure") await backoff(attempts);
      if (!cluster.retryAllowed(reason)) break;
      retrying = reason;
      continue;
    }
    if (retrying !== null) cluster.retryEnded(retrying);
    retrying = null;
    const status = upstream.status;
    const retryStatus = retries.on.includes(status) &&
      attempts < retries.attempts && replayable &&
      !(body instanceof ReadableStream);
    cluster.finished(
      endpoint,
      status >= 502 && status <= 504 ? `answered ${status}` : null,
    );
    if (retryStatus && cluster.retryAllowed(String(status))) {
      if (upstream.body instanceof ReadableStream) {
        upstream.body.cancel().catch(() => {});
      }
      attempt.release();
      attemptTrace.end(status, null);
      retrying = String(status);
      await backoff(attempts);
      continue;
    }

    // Phase 4: upstream response.
    const response = clientResponse(
      upstream,
      traced.requestId,
      route,
      endpoint,
      authority,
      scheme,
    );
    // Phase 5: log, once the response has been handed over.
    attempt.whenReleased((stats) => {
      cluster.leave();
      attemptTrace.end(status, null);
      logPhase(context, traced, {
        startedAt,
        service: base.service,
        client: base.client,
        method: base.method,
        target: base.target,
        status: response.status,
        bytesIn: stats?.bytesSent ?? 0,
        bytesOut: stats?.bytesReceived ?? 0,
        durationMs: performance.now() - started,
        endpoint,
        upstreamMs: stats?.headMs ?? null,
        attempts,
        requestId: traced.requestId,
        traceId: traced.traceId,
        error: null,
      });
    });
    return response;
  }
  cluster.leave();
  return answer(context, failure, base, attempts);
}

/** What the pipeline made of a request that asks to upgrade. */
interface UpgradeRequest {
  readonly hash: number | undefined;
  readonly headers: HeaderPair[];
  /** Where the trace headers of the try go in `headers`. */
  readonly traceAt: number;
  readonly target: string;
  readonly authority: string;
}

/**
 * The upgrade hook: a WebSocket is bridged (see websocket_proxy.ts) and
 * logged when it ends, with status 101. The route's admission slot is held
 * until then.
 */
async function upgrade(
  request: Request,
  client: ClientConnection,
  route: HttpRoute,
  settings: WebSocketSettings,
  context: HttpProxyContext,
  base: RequestBase,
  upgrading: UpgradeRequest,
): Promise<Response> {
  const { cluster } = route;
  const { traced } = base;
  let attemptTrace: ReturnType<RequestTrace["attempt"]> | null = null;
  const result = await proxyWebSocket({
    request,
    client,
    service: route.name,
    cluster,
    hash: upgrading.hash,
    target: upgrading.target,
    headers: upgrading.headers,
    host: (endpoint) =>
      route.requestHeaders?.host?.value ??
        (route.preserveHost ? upgrading.authority : endpoint.authority),
    timeouts: route.timeouts,
    settings,
    metrics: context.webSockets,
    traced(endpoint) {
      attemptTrace = traced.attempt(endpoint, upgrading.target);
      upgrading.headers.length = upgrading.traceAt;
      for (const pair of attemptTrace.headers) upgrading.headers.push(pair);
    },
    responseHeaders(headers) {
      if (route.responseHeaders !== null) {
        applyHeaderRules(headers, route.responseHeaders);
      }
      headers.push(["x-request-id", traced.requestId]);
    },
    ended(endpoint, stats) {
      cluster.leave();
      attemptTrace?.end(101, null);
      logPhase(context, traced, {
        startedAt: base.startedAt,
        service: base.service,
        client: base.client,
        method: base.method,
        target: base.target,
        status: 101,
        bytesIn: stats.bytesIn,
        bytesOut: stats.bytesOut,
        durationMs: performance.now() - base.started,
        endpoint,
        upstreamMs: null,
        attempts: 1,
        requestId: traced.requestId,
        traceId: traced.traceId,
        error: null,
      });
    },
  });
  if (result instanceof Response) return result;
  cluster.leave();
  (attemptTrace as ReturnType<RequestTrace["attempt"]> | null)?.end(
    null,
    result.failure.kind,
  );
  return answer(
    context,
    result.failure,
    base,
    result.endpoint === null ? 0 : 1,
  );
}

/**
 * One try of a request on one endpoint. It tracks the exchange for the
 * client connection (so a drain can cut it), counts what the exchange
 * measured, and gives the endpoint's slot back when the exchange ends: at
 * once for a failure, when the body is read for an answer.
 */
class Attempt implements ExchangeTracker {
  readonly #client: ClientConnection;
  readonly #cluster: Cluster;
  readonly #endpoint: Endpoint;
  readonly #metrics: AttemptMetrics;
  #stats: ExchangeStats | null = null;
  #released = false;
  #onRelease: ((stats: ExchangeStats | null) => void) | null = null;

  constructor(
    client: ClientConnection,
    cluster: Cluster,
    endpoint: Endpoint,
    metrics: AttemptMetrics,
  ) {
    this.#client = client;
    this.#cluster = cluster;
    this.#endpoint = endpoint;
    this.#metrics = metrics;
    cluster.started(endpoint);
  }

  add(connection: { close(): void }): void {
    this.#client.add(connection);
  }

  delete(connection: { close(): void }, stats: ExchangeStats): void {
    this.#client.delete(connection, stats);
    this.#stats = stats;
    const service = this.#cluster.name;
    if (stats.connectMs !== null) {
      this.#metrics.connected(service, stats.connectMs / 1000);
    }
    if (stats.headMs !== null) {
      this.#metrics.answered(service, stats.headMs / 1000);
    }
    this.release();
  }

  /** Gives the endpoint's slot back (once). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#cluster.released(this.#endpoint);
    this.#onRelease?.(this.#stats);
  }

  /** Calls `done` with the exchange's measures once it is over (at once if it is). */
  whenReleased(done: (stats: ExchangeStats | null) => void): void {
    if (this.#released) done(this.#stats);
    else this.#onRelease = done;
  }
}

/** Whether an `Upgrade` value asks for WebSocket. */
function isWebSocket(protocol: string): boolean {
  return protocol.trim().toLowerCase() === "websocket";
}

/** Which retry condition a failure meets, if any. */
function retryReason(
  failure: ProxyError,
): "connect_failure" | "reset" | "timeout" | null {
  switch (failure.kind) {
    case "connection_refused":
    case "connection_timeout":
    case "dns_error":
    case "tls_certificate_error":
    case "tls_alert_received":
    case "destination_unavailable":
      return "connect_failure";
    case "connection_terminated":
      return "reset";
    case "http_response_timeout":
      return "timeout";
    default:
      return null;
  }
}

/** Waits before retry `n` (from 1): full jitter, as Envoy does. */
function backoff(n: number): Promise<void> {
  const ceiling = Math.min(BACKOFF_MS.base * 2 ** (n - 1), BACKOFF_MS.max);
  return new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
}

/** The request's hash key, or undefined when what it hashes is missing. */
function requestHash(
  on: HashOn,
  request: Request,
  client: ClientConnection,
  path: string,
): number | undefined {
  switch (on.kind) {
    case "source_ip": {
      const remote = client.remoteAddr;
      return remote.transport === "tcp" ? hashKey(remote.hostname) : undefined;
    }
    case "path":
      return hashKey(path);
    case "header": {
      const value = request.headers.get(on.name);
      return value === null ? undefined : hashKey(value);
    }
    case "cookie": {
      const cookies = request.headers.get("cookie");
      if (cookies === null) return undefined;
      for (const pair of cookies.split(";")) {
        const equals = pair.indexOf("=");
        if (equals > 0 && pair.slice(0, equals).trim() === on.name) {
          return hashKey(pair.slice(equals + 1).trim());
        }
      }
      return undefined;
    }
  }
}

/** What the pipeline knows of a request from its arrival, for answering and logging it. */
interface RequestBase {
  readonly traced: RequestTrace;
  readonly startedAt: number;
  readonly started: number;
  readonly service: string | null;
  readonly client: string;
  readonly method: string;
  readonly target: string;
}

/** Answers a request legate could not (or would not) forward, and logs it. */
function answer(
  context: HttpProxyContext,
  error: ProxyError,
  request: RequestBase,
  attempts: number,
  status?: number,
): Response {
  const { response, bytes } = errorResponse(
    error,
    request.traced.requestId,
    status,
  );
  if (error.kind === "client_gone") {
    context.log.debug("client went away", {
      service: request.service,
      reason: error.message,
    });
  } else if (error.kind === "proxy_internal_error") {
    context.log.error("request failed", {
      service: request.service,
      reason: error.message,
    });
  }
  logPhase(context, request.traced, {
    startedAt: request.startedAt,
    service: request.service,
    client: request.client,
    method: request.method,
    target: request.target,
    status: response.status,
    bytesIn: 0,
    bytesOut: bytes,
    durationMs: performance.now() - request.started,
    endpoint: null,
    upstreamMs: null,
    attempts,
    requestId: request.traced.requestId,
    traceId: request.traced.traceId,
    error,
  });
  return response;
}

function logPhase(
  context: HttpProxyContext,
  traced: RequestTrace,
  outcome: RequestOutcome,
): void {
  traced.end(outcome.status, outcome.error?.kind ?? null);
  for (const hook of context.logPhase) hook(outcome);
}

/**
 * The upstream's response as the client gets it. A 205 carries no content
 * (RFC 9110 15.3.6) and `Response` refuses one with a body, even an empty
 * one; should the upstream have framed one anyway, its stream is cancelled,
 * which closes the connection rather than leaving it waiting.
 */
function clientResponse(
  upstream: UpstreamResponse,
  requestId: string,
  route: HttpRoute,
  endpoint: Endpoint,
  authority: string,
  scheme: "http" | "https",
): Response {
  const headers = withoutHopByHop(upstream.headers);
  let foreignId = false;
  let locations = false;
  for (let i = 0; i < headers.length; i++) {
    const name = headers[i]![0];
    if (name === "x-request-id") foreignId = true;
    else if (name === "location" || name === "content-location") {
      locations = true;
    }
  }
  if (locations && route.rewriteRedirects) {
    rewriteRedirects(headers, {
      endpoint,
      clientScheme: scheme,
      clientAuthority: authority,
      prefix: route.stripPrefix && route.match.pathPrefix !== "/"
        ? route.match.pathPrefix
        : "",
    });
  }
  // The client sees the ID legate logged, not one the upstream made up.
  if (foreignId) {
    let kept = 0;
    for (const pair of headers) {
      if (pair[0] !== "x-request-id") headers[kept++] = pair;
    }
    headers.length = kept;
  }
  headers.push(VIA, ["x-request-id", requestId]);
  if (route.responseHeaders !== null) {
    applyHeaderRules(headers, route.responseHeaders);
  }
  let body = upstream.body;
  if (upstream.status === 205 && body !== null) {
    if (body instanceof ReadableStream) body.cancel().catch(() => {});
    body = null;
  }
  return new Response(body, {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: headers as [string, string][],
  });
}

/** What the pipeline reads from the client's request headers in one pass. */
interface IncomingHeaders {
  /** A placeholder for Host, then the client's end-to-end headers. */
  readonly headers: HeaderPair[];
  /** The client's Host header, or null. */
  readonly host: string | null;
  /** The client's `X-Forwarded-For`, unless `Connection` named it. */
  readonly forwardedFor: string | undefined;
  /** The client's `Via`, unless `Connection` named it. */
  readonly via: string | undefined;
  /** The client's trace headers and request ID. */
  readonly trace: IncomingTrace;
  /** Whether the request frames a body (Content-Length or Transfer-Encoding). */
  readonly framed: boolean;
  /** The protocol the client asks to upgrade to (`Upgrade`, named by `Connection`), or null. */
  readonly upgrade: string | null;
  /** The body's length when Content-Length gives it. */
  readonly bodyLength: number | null;
}

/**
 * Reads the client's headers once: its end-to-end headers, without the
 * hop-by-hop ones and those its `Connection` names. The forwarding headers
 * legate sets are added afterwards, by {@linkcode withForwardingHeaders}, so
 * a client's `Connection` can never remove them (or the Host placeholder).
 */
function readRequestHeaders(request: Request): IncomingHeaders {
  const headers: HeaderPair[] = [["host", ""]];
  let host: string | null = null;
  let length: string | undefined;
  let framed = false;
  let connection: string | undefined;
  let forwardedFor: string | undefined;
  let via: string | undefined;
  let traceparent: string | null = null;
  let tracestate: string | null = null;
  let requestId: string | null = null;
  let upgrade: string | null = null;
  for (const pair of request.headers) {
    switch (pair[0]) {
      case "host":
        host = pair[1];
        break;
      case "content-length":
        length = pair[1];
        framed = true;
        break;
      case "transfer-encoding":
        framed = true;
        break;
      case "connection":
        connection = pair[1];
        break;
      case "x-forwarded-for":
        forwardedFor = pair[1];
        break;
      case "via":
        via = pair[1];
        break;
      // Sent upstream from the request's trace, once each.
      case "traceparent":
        traceparent = pair[1];
        break;
      case "tracestate":
        tracestate = pair[1];
        break;
      case "x-request-id":
        requestId = pair[1];
        break;
      case "upgrade":
        upgrade = pair[1];
        break;
      case "x-forwarded-proto":
      case "x-forwarded-host":
      case "expect":
        break;
      default:
        if (!isHopByHop(pair[0])) headers.push(pair);
    }
  }
  if (connection !== undefined) {
    const named = connectionTokens(connection);
    // Index 0 is legate's Host placeholder, never the client's to remove.
    let kept = 1;
    for (let i = 1; i < headers.length; i++) {
      if (!named.has(headers[i]![0])) headers[kept++] = headers[i]!;
    }
    headers.length = kept;
    if (named.has("x-forwarded-for")) forwardedFor = undefined;
    if (named.has("via")) via = undefined;
    // An Upgrade the Connection header does not name is no upgrade (RFC
    // 9110 7.8); h2c is declined by ignoring it, as Deno itself does.
    if (
      upgrade !== null &&
      (!named.has("upgrade") || upgrade.trim().toLowerCase() === "h2c")
    ) {
      upgrade = null;
    }
  } else {
    upgrade = null;
  }
  return {
    headers,
    host,
    forwardedFor,
    via,
    trace: { traceparent, tracestate, requestId },
    framed,
    upgrade,
    bodyLength: length !== undefined && /^\d+$/.test(length)
      ? Number(length)
      : null,
  };
}

/**
 * The upstream's headers: the client's end-to-end headers, then
 * `X-Forwarded-For` (appended to), `X-Forwarded-Proto`, `X-Forwarded-Host`
 * and `Via` (appended to).
 */
function withForwardingHeaders(
  incoming: IncomingHeaders,
  client: ClientConnection,
  authority: string,
  scheme: "http" | "https",
): HeaderPair[] {
  const { headers, forwardedFor, via } = incoming;
  const remote = client.remoteAddr;
  if (remote.transport === "tcp") {
    headers.push([
      "x-forwarded-for",
      forwardedFor ? `${forwardedFor}, ${remote.hostname}` : remote.hostname,
    ]);
  } else if (forwardedFor) {
    headers.push(["x-forwarded-for", forwardedFor]);
  }
  headers.push(["x-forwarded-proto", scheme]);
  headers.push(["x-forwarded-host", authority]);
  headers.push(via ? ["via", `${via}, 1.1 legate`] : VIA);
  return headers;
}

function errorResponse(
  error: ProxyError,
  requestId: string,
  status: number = statusForError(error),
): { response: Response; bytes: number } {
  const text = STATUS_TEXT[status] ?? "Error";
  const body = encoder.encode(
    `legate: ${status} ${text}: ${error.message}\n`,
  );
  return {
    response: new Response(body, {
      status,
      headers: {
        "content-type": "text/plain; charset=utf-8",
        "proxy-status": error.receivedStatus === null
          ? `legate; error=${error.kind}`
          : `legate; error=${error.kind}; received-status=${error.receivedStatus}`,
        "x-request-id": requestId,
      },
    }),
    bytes: body.length,
  };
}

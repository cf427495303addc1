/**
 * Who a request is, for logs and traces: its `X-Request-Id` and its W3C
 * Trace Context (`traceparent`, `tracestate`).
 *
 * Every request gets a request ID: the client's when it is a sane token,
 * a new random UUID otherwise. Each upstream attempt gets the request ID and
 * exactly one `traceparent` (with the client's `tracestate` when the client
 * sent a valid `traceparent`).
 *
 * Tracing is on when OpenTelemetry is: with Deno's built-in OpenTelemetry
 * (`OTEL_DENO=true`), Deno starts a server span for every request and makes
 * it the active span of the handler, continuing the client's trace; legate
 * adopts that span, names it after the service, and starts a client span per
 * upstream attempt, whose ID is the parent the upstream sees. Spans go
 * through `npm:@opentelemetry/api` to whichever provider is registered
 * (Deno's sends them over OTLP); nothing here exports. With tracing off,
 * nothing here creates a span or a closure: the client's trace context
 * passes through once, and no trace is invented.
 *
 * The pipeline strips the client's `x-request-id`, `traceparent` and
 * `tracestate` from the headers it forwards and sends these instead.
 * @module
 */
import {
  type Context,
  context,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { Endpoint } from "../transport/connect.ts";
import type { HeaderPair } from "../transport/headers.ts";

/** The longest client `X-Request-Id` kept, in characters. */
export const MAX_REQUEST_ID_LENGTH = 200;

/** The trace headers and request ID of a client's request, as received. */
export interface IncomingTrace {
  /** The client's `traceparent`, or null (duplicates arrive comma-joined). */
  readonly traceparent: string | null;
  /** The client's `tracestate`, or null. */
  readonly tracestate: string | null;
  /** The client's `X-Request-Id`, or null. */
  readonly requestId: string | null;
}

/** One upstream attempt's trace: the headers it sends, and its end. */
export interface UpstreamAttempt {
  /**
   * Headers the upstream gets, besides the forwarded ones: `x-request-id`,
   * then at most one `traceparent` and one `tracestate`.
   */
  readonly headers: readonly HeaderPair[];
  /**
   * Ends the attempt's client span (nothing when tracing is off): `status`
   * is the upstream's response status, null without one; `error` is the
   * failure's kind (a `ProxyError` kind), null when there was none.
   */
  end(status: number | null, error: string | null): void;
}

/** One request's identity and trace, started from the client's headers. */
export interface RequestTrace {
  /** The `X-Request-Id`: the client's when sane, a new UUID otherwise. */
  readonly requestId: string;
  /**
   * The trace ID, 32 lowercase hex digits: the server span's when tracing
   * is on, the client's `traceparent`'s when it is off; null when off and
   * the client sent no valid `traceparent`.
   */
  readonly traceId: string | null;
  /** Names the service the request was routed to. */
  routed(service: string): void;
  /**
   * Starts an upstream attempt on `endpoint`, sending `target` (the request
   * target as forwarded). Call it once per attempt, retries included.
   */
  attempt(endpoint: Endpoint, target: string): UpstreamAttempt;
  /**
   * Records how the request ended: the status the client got, and the
   * `ProxyError` kind when legate answered itself. Once, in the log phase.
   * Deno's server span gets the kind as `legate.error` (Deno sets the
   * status and ends it, when the response is sent); a server span legate
   * started itself is ended here.
   */
  end(status: number, error: string | null): void;
}

/** A `traceparent` header's fields (W3C Trace Context, level 1). */
export interface Traceparent {
  /** The version, two lowercase hex digits (never `ff`). */
  readonly version: string;
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** The caller's span ID: 16 lowercase hex digits, not all zero. */
  readonly parentId: string;
  /** The trace flags, two lowercase hex digits (bit 0: sampled). */
  readonly flags: string;
}

/** A version 00 `traceparent` is exactly this long, and longer ones of later versions extend it. */
const TRACEPARENT_LENGTH = 55;
const DASH = 0x2d;

/**
 * Parses a `traceparent` value by the W3C rules: version `00` is exactly
 * `00-<trace-id>-<parent-id>-<flags>`; a later version may carry more
 * after a dash, and its first four fields are read the same way; version
 * `ff`, all-zero IDs, uppercase hex and wrong lengths make it invalid.
 *
 * @returns The fields, or null when the value is invalid.
 *
 * @example Valid, invalid, and a later version
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTraceparent } from "./trace_context.ts";
 * assert.deepEqual(
 *   parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
 *   {
 *     version: "00",
 *     traceId: "0af7651916cd43dd8448eb211c80319c",
 *     parentId: "b7ad6b7169203331",
 *     flags: "01",
 *   },
 * );
 * assert.equal(
 *   parseTraceparent("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"),
 *   null,
 * );
 * assert.equal(
 *   parseTraceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later")
 *     ?.traceId,
 *   "0af7651916cd43dd8448eb211c80319c",
 * );
 * ```
 */
export function parseTraceparent(value: string): Traceparent | null {
  const length = value.length;
  if (length < TRACEPARENT_LENGTH) return null;
  const version = value.slice(0, 2);
  // Version 00 is exactly 55 characters; a later one may go on after a dash.
  if (
    length > TRACEPARENT_LENGTH &&
    (value.charCodeAt(TRACEPARENT_LENGTH) !== DASH || version === "00")
  ) {
    return null;
  }
  if (
    value.charCodeAt(2) !== DASH || value.charCodeAt(35) !== DASH ||
    value.charCodeAt(52) !== DASH || !isLowerHex(value, 0, 2) ||
    version === "ff" || !isLowerHex(value, 3, 35) || isZeros(value, 3, 35) ||
    !isLowerHex(value, 36, 52) || isZeros(value, 36, 52) ||
    !isLowerHex(value, 53, 55)
  ) {
    return null;
  }
  return {
    version,
    traceId: value.slice(3, 35),
    parentId: value.slice(36, 52),
    flags: value.slice(53, 55),
  };
}

/** Whether `value[start..end)` is lowercase hex digits. */
function isLowerHex(value: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = value.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** Whether `value[start..end)` is all `0`. */
function isZeros(value: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    if (value.charCodeAt(i) !== 0x30) return false;
  }
  return true;
}

/**
 * Whether a client's `X-Request-Id` is kept: 1 to
 * {@linkcode MAX_REQUEST_ID_LENGTH} visible ASCII characters (`!` to `~`),
 * no comma (two `X-Request-Id` headers arrive joined by one). Anything else
 * is replaced, never forwarded or logged.
 *
 * @example Tokens are kept; controls, spaces, joined values are not
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSaneRequestId } from "./trace_context.ts";
 * assert.equal(isSaneRequestId("7f1c0b8e-1f4e-4c55-a5b2-1d8c9b7b2f10"), true);
 * assert.equal(isSaneRequestId("req_42/a+b="), true);
 * assert.equal(isSaneRequestId("a\u0001b"), false);
 * assert.equal(isSaneRequestId("a b"), false);
 * assert.equal(isSaneRequestId("a, b"), false);
 * assert.equal(isSaneRequestId("x".repeat(201)), false);
 * ```
 */
export function isSaneRequestId(value: string): boolean {
  const length = value.length;
  if (length === 0 || length > MAX_REQUEST_ID_LENGTH) return false;
  for (let i = 0; i < length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x2c) return false;
  }
  return true;
}

/**
 * Whether spans are recorded: an OpenTelemetry tracer provider is
 * registered, as Deno registers its own under `OTEL_DENO=true`. Asked per
 * request, so a provider registered after legate started is used.
 *
 * @example Off unless OpenTelemetry is on
 * ```ts
 * import assert from "node:assert/strict";
 * import { tracingEnabled } from "./trace_context.ts";
 * assert.equal(tracingEnabled(), Deno.env.get("OTEL_DENO") === "true");
 * ```
 */
export function tracingEnabled(): boolean {
  const provider = trace.getTracerProvider();
  // Deno registers its provider as it is; the API's own
  // setGlobalTracerProvider registers a proxy with the provider as delegate.
  return !(provider instanceof ProxyTracerProvider) ||
    provider.getDelegateTracer("legate") !== undefined;
}

/**
 * Starts one request's identity and trace from the client's headers, as
 * the request arrives (in the handler, where Deno's server span is the
 * active one).
 *
 * @example Tracing off: the client's trace context and request ID pass through
 * ```ts
 * import assert from "node:assert/strict";
 * import { startTrace } from "./trace_context.ts";
 * const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
 * const request = startTrace({
 *   traceparent,
 *   tracestate: "congo=t61rcWkgMzE",
 *   requestId: "req-1",
 * }, "GET");
 * request.routed("users");
 * const endpoint = {
 *   key: "10.0.0.1:8080",
 *   url: "http://users-1.internal:8080",
 *   address: { transport: "tcp" as const, hostname: "10.0.0.1", port: 8080 },
 *   tls: false,
 *   serverName: "users-1.internal",
 *   authority: "users-1.internal:8080",
 * };
 * const attempt = request.attempt(endpoint, "/users/42");
 * assert.deepEqual(attempt.headers, [
 *   ["x-request-id", "req-1"],
 *   ["traceparent", traceparent],
 *   ["tracestate", "congo=t61rcWkgMzE"],
 * ]);
 * attempt.end(200, null);
 * request.end(200, null);
 * assert.equal(request.traceId, "0af7651916cd43dd8448eb211c80319c");
 * ```
 *
 * @example A request without a usable request ID gets a new one
 * ```ts
 * import assert from "node:assert/strict";
 * import { startTrace } from "./trace_context.ts";
 * const request = startTrace({
 *   traceparent: null,
 *   tracestate: null,
 *   requestId: "bad\nid",
 * }, "GET");
 * assert.match(request.requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
 * ```
 */
export function startTrace(
  incoming: IncomingTrace,
  method: string,
): RequestTrace {
  const requestId =
    incoming.requestId !== null && isSaneRequestId(incoming.requestId)
      ? incoming.requestId
      : crypto.randomUUID();
  const parent = incoming.traceparent === null
    ? null
    : parseTraceparent(incoming.traceparent);
  // A tracestate is only meaningful beside the traceparent it belongs to.
  const tracestate = parent !== null && incoming.tracestate
    ? incoming.tracestate
    : null;
  if (!tracingEnabled()) {
    return new UntracedRequest(
      requestId,
      parent,
      // A later version is sent as version 00, the one legate understands:
      // whatever it carried after its fourth field is not passed on.
      parent === null || parent.version === "00"
        ? incoming.traceparent
        : `00-${parent.traceId}-${parent.parentId}-${parent.flags}`,
      tracestate,
    );
  }
  return new TracedRequest(requestId, parent, tracestate, method);
}

/**
 * A request while tracing is off: one object that is also its every
 * attempt, whose headers never change and whose ends do nothing.
 */
class UntracedRequest implements RequestTrace, UpstreamAttempt {
  readonly requestId: string;
  readonly traceId: string | null;
  readonly headers: readonly HeaderPair[];

  constructor(
    requestId: string,
    parent: Traceparent | null,
    traceparent: string | null,
    tracestate: string | null,
  ) {
    this.requestId = requestId;
    this.traceId = parent?.traceId ?? null;
    const headers: HeaderPair[] = [["x-request-id", requestId]];
    if (parent !== null && traceparent !== null) {
      headers.push(["traceparent", traceparent]);
      if (tracestate !== null) headers.push(["tracestate", tracestate]);
    }
    this.headers = headers;
  }

  routed(): void {}

  attempt(): UpstreamAttempt {
    return this;
  }

  end(): void {}
}

let cachedTracer: { provider: TracerProvider; tracer: Tracer } | null = null;

/** legate's tracer, from the provider registered now (`getTracer` is not cheap). */
function legateTracer(): Tracer {
  const provider = trace.getTracerProvider();
  if (cachedTracer?.provider !== provider) {
    cachedTracer = { provider, tracer: provider.getTracer("legate") };
  }
  return cachedTracer.tracer;
}

/** A request while tracing is on: a server span, and a client span per attempt. */
class TracedRequest implements RequestTrace {
  readonly requestId: string;
  readonly traceId: string;
  readonly #tracer: Tracer;
  readonly #method: string;
  readonly #tracestate: string | null;
  readonly #server: Span;
  /** Whether legate started the server span (and so ends it). */
  readonly #owned: boolean;
  /** The server span's context: the parent of every attempt. */
  readonly #context: Context;
  #attempts = 0;

  constructor(
    requestId: string,
    parent: Traceparent | null,
    tracestate: string | null,
    method: string,
  ) {
    this.#tracer = legateTracer();
    this.requestId = requestId;
    this.#method = method;
    this.#tracestate = tracestate;
    // Deno's HTTP server starts a server span per request, continuing the
    // client's traceparent, and runs the handler in its context. Under
    // another provider there is none: legate starts it.
    const active = trace.getActiveSpan();
    if (active !== undefined) {
      this.#server = active;
      this.#owned = false;
      this.#context = context.active();
    } else {
      const remote = parent === null
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, {
          traceId: parent.traceId,
          spanId: parent.parentId,
          traceFlags: parseInt(parent.flags, 16),
          isRemote: true,
        });
      this.#server = this.#tracer.startSpan(method, {
        kind: SpanKind.SERVER,
        attributes: { "http.request.method": method },
      }, remote);
      this.#owned = true;
      this.#context = trace.setSpan(remote, this.#server);
    }
    this.traceId = this.#server.spanContext().traceId;
    this.#server.setAttribute("http.request.header.x-request-id", [requestId]);
  }

  routed(service: string): void {
    this.#server.updateName(`${this.#method} ${service}`);
    this.#server.setAttribute("legate.service", service);
  }

  attempt(endpoint: Endpoint, target: string): UpstreamAttempt {
    const attributes: Record<string, string | number> = {
      "http.request.method": this.#method,
      "url.full": `${endpoint.tls ? "https" : "http"}://${endpoint.authority}${
        target.startsWith("/") ? target : ""
      }`,
    };
    const [host, port] = splitAuthority(endpoint.authority, endpoint.tls);
    attributes["server.address"] = host;
    attributes["server.port"] = port;
    // The address connected to, when discovery resolved a name. Each
    // attribute costs: Deno copies it into the span and exports it.
    const address = endpoint.address;
    if (address.transport === "tcp" && address.hostname !== host) {
      attributes["network.peer.address"] = address.hostname;
    }
    // Semantic conventions: the first try has no resend count.
    if (this.#attempts > 0) {
      attributes["http.request.resend_count"] = this.#attempts;
    }
    this.#attempts++;
    const span = this.#tracer.startSpan(this.#method, {
      kind: SpanKind.CLIENT,
      attributes,
    }, this.#context);
    const { traceId, spanId, traceFlags } = span.spanContext();
    const headers: HeaderPair[] = [
      ["x-request-id", this.requestId],
      [
        "traceparent",
        `00-${traceId}-${spanId}-${
          (traceFlags & 0xff).toString(16).padStart(2, "0")
        }`,
      ],
    ];
    if (this.#tracestate !== null) {
      headers.push(["tracestate", this.#tracestate]);
    }
    return new TracedAttempt(span, headers);
  }

  end(status: number, error: string | null): void {
    const span = this.#server;
    if (error !== null) span.setAttribute("legate.error", error);
    if (!this.#owned) return;
    span.setAttribute("http.response.status_code", status);
    // Server spans: only 5xx are errors (semantic conventions for HTTP).
    if (error !== null || status >= 500) {
      span.setAttribute("error.type", error ?? String(status));
    }
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  }
}

/** One upstream attempt's client span. */
class TracedAttempt implements UpstreamAttempt {
  readonly headers: readonly HeaderPair[];
  readonly #span: Span;

  constructor(span: Span, headers: readonly HeaderPair[]) {
    this.#span = span;
    this.headers = headers;
  }

  end(status: number | null, error: string | null): void {
    const span = this.#span;
    if (status !== null) span.setAttribute("http.response.status_code", status);
    // Client spans: 4xx and 5xx are errors (semantic conventions for HTTP).
    if (error !== null || (status !== null && status >= 400)) {
      span.setAttribute("error.type", error ?? String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }
}

/** `host` and port of an authority (`host`, `host:port`, `[v6]:port`). */
function splitAuthority(authority: string, tls: boolean): [string, number] {
  const colon = authority.lastIndexOf(":");
  const bracket = authority.lastIndexOf("]");
  const [host, port] = colon > bracket
    ? [authority.slice(0, colon), Number(authority.slice(colon + 1))]
    : [authority, tls ? 443 : 80];
  return [host.startsWith("[") ? host.slice(1, -1) : host, port];
}

import assert from "node:assert/strict";
import {
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
  type SpanOptions,
  type SpanStatus,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { Endpoint } from "../src/transport/connect.ts";
import {
  isSaneRequestId,
  MAX_REQUEST_ID_LENGTH,
  parseTraceparent,
  startTrace,
  tracingEnabled,
} from "../src/server/trace_context.ts";

const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID = "b7ad6b7169203331";
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;
const UUID_V4 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const endpoint: Endpoint = {
  key: "127.0.0.1:8080",
  url: "http://users-1.internal:8080",
  address: { transport: "tcp", hostname: "127.0.0.1", port: 8080 },
  tls: false,
  serverName: "users-1.internal",
  authority: "users-1.internal:8080",
};

function headerValues(
  headers: readonly (readonly [string, string])[],
  name: string,
): string[] {
  return headers.filter(([n]) => n === name).map(([, v]) => v);
}

Deno.test("request id: a sane client id is kept and sent upstream", () => {
  for (
    const id of [
      "7f1c0b8e-1f4e-4c55-a5b2-1d8c9b7b2f10",
      "req_42",
      "a+b/c=d:e;f@g~!",
      "x".repeat(MAX_REQUEST_ID_LENGTH),
    ]
  ) {
    const request = startTrace(
      { traceparent: null, tracestate: null, requestId: id },
      "GET",
    );
    assert.equal(request.requestId, id);
    assert.deepEqual(request.attempt(endpoint, "/").headers, [
      ["x-request-id", id],
    ]);
  }
});

Deno.test("request id: one is generated when the client sent none", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const { requestId } = startTrace(
      { traceparent: null, tracestate: null, requestId: null },
      "GET",
    );
    assert.match(requestId, UUID_V4);
    ids.add(requestId);
  }
  assert.equal(ids.size, 1000);
});

Deno.test("request id: controls, spaces, joined, non-ASCII or overlong ids are replaced, never forwarded", () => {
  for (
    const bad of [
      "",
      "a\u0000b",
      "a\u0001b",
      "a\tb",
      "a\rb",
      "a\nX-Injected: 1",
      "a\u007fb",
      "a b",
      "first, second",
      "caf\u00e9",
      "\u010aid", // U+010A as latin1 is LF
      "x".repeat(MAX_REQUEST_ID_LENGTH + 1),
    ]
  ) {
    assert.equal(isSaneRequestId(bad), false, JSON.stringify(bad));
    const request = startTrace(
      { traceparent: null, tracestate: null, requestId: bad },
      "POST",
    );
    assert.match(request.requestId, UUID_V4);
    const sent = headerValues(
      request.attempt(endpoint, "/").headers,
      "x-request-id",
    );
    assert.deepEqual(sent, [request.requestId]);
  }
});

Deno.test("traceparent: the W3C test vectors", async (t) => {
  const valid: [string, string, string, string][] = [
    [TRACEPARENT, TRACE_ID, PARENT_ID, "01"],
    [`00-${TRACE_ID}-${PARENT_ID}-00`, TRACE_ID, PARENT_ID, "00"],
    // Unknown flag bits are kept, not rejected.
    [`00-${TRACE_ID}-${PARENT_ID}-09`, TRACE_ID, PARENT_ID, "09"],
    [`00-${TRACE_ID}-${PARENT_ID}-ff`, TRACE_ID, PARENT_ID, "ff"],
    // A later version: its first four fields, whatever follows a dash.
    [`01-${TRACE_ID}-${PARENT_ID}-01`, TRACE_ID, PARENT_ID, "01"],
    [
      `cc-${TRACE_ID}-${PARENT_ID}-01-what-the-future-will-be-like`,
      TRACE_ID,
      PARENT_ID,
      "01",
    ],
    [`fe-${TRACE_ID}-${PARENT_ID}-01-`, TRACE_ID, PARENT_ID, "01"],
  ];
  await t.step("valid values parse", () => {
    for (const [value, traceId, parentId, flags] of valid) {
      const parsed = parseTraceparent(value);
      assert.ok(parsed, value);
      assert.deepEqual(
        [parsed.traceId, parsed.parentId, parsed.flags],
        [traceId, parentId, flags],
      );
    }
  });
  const invalid: [string, string][] = [
    ["", "empty"],
    ["00", "version only"],
    [`ff-${TRACE_ID}-${PARENT_ID}-01`, "version ff"],
    [`FF-${TRACE_ID}-${PARENT_ID}-01`, "version FF"],
    [`0A-${TRACE_ID}-${PARENT_ID}-01`, "uppercase version"],
    [`0x-${TRACE_ID}-${PARENT_ID}-01`, "non-hex version"],
    [`000-${TRACE_ID}-${PARENT_ID}-01`, "three-digit version"],
    [`0-${TRACE_ID}-${PARENT_ID}-01`, "one-digit version"],
    [`00-${"0".repeat(32)}-${PARENT_ID}-01`, "all-zero trace id"],
    [`00-${TRACE_ID}-${"0".repeat(16)}-01`, "all-zero parent id"],
    [`00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`, "uppercase trace id"],
    [`00-${TRACE_ID}-${PARENT_ID.toUpperCase()}-01`, "uppercase parent id"],
    [`00-${TRACE_ID}-${PARENT_ID}-0A`, "uppercase flags"],
    [`00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`, "31-digit trace id"],
    [`00-${TRACE_ID}0-${PARENT_ID}-01`, "33-digit trace id"],
    [`00-${TRACE_ID}-${PARENT_ID.slice(1)}-01`, "15-digit parent id"],
    [`00-${TRACE_ID}-${PARENT_ID}0-01`, "17-digit parent id"],
    [`00-${TRACE_ID}-${PARENT_ID}-1`, "one-digit flags"],
    [`00-${TRACE_ID}-${PARENT_ID}-011`, "three-digit flags"],
    [`00-${TRACE_ID}-${PARENT_ID}-0g`, "non-hex flags"],
    [`00-${TRACE_ID.slice(0, 31)}g-${PARENT_ID}-01`, "non-hex trace id"],
    [`00-${TRACE_ID}-${PARENT_ID.slice(0, 15)}z-01`, "non-hex parent id"],
    [`00_${TRACE_ID}_${PARENT_ID}_01`, "wrong separators"],
    [`00-${TRACE_ID}-${PARENT_ID}-01-what`, "version 00 with more fields"],
    [`00-${TRACE_ID}-${PARENT_ID}-01-`, "version 00 with a trailing dash"],
    [` 00-${TRACE_ID}-${PARENT_ID}-01`, "leading space"],
    [
      `cc-${TRACE_ID}-${PARENT_ID}-01.what`,
      "later version, no dash after flags",
    ],
    [`cc-${TRACE_ID}-${PARENT_ID}-0`, "later version, too short"],
    [`${TRACEPARENT}, 00-${"1".repeat(32)}-${PARENT_ID}-01`, "two joined"],
  ];
  await t.step("invalid values do not", () => {
    for (const [value, why] of invalid) {
      assert.equal(parseTraceparent(value), null, why);
    }
  });
});

Deno.test("tracing off: the client's traceparent and tracestate pass through exactly once", () => {
  assert.equal(tracingEnabled(), false);
  const request = startTrace({
    traceparent: TRACEPARENT,
    tracestate: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    requestId: "req-1",
  }, "GET");
  request.routed("users");
  assert.equal(request.traceId, TRACE_ID);
  // Every attempt (retries too) sends the same headers, once each.
  for (let i = 0; i < 2; i++) {
    const attempt = request.attempt(endpoint, "/users");
    assert.deepEqual(attempt.headers, [
      ["x-request-id", "req-1"],
      ["traceparent", TRACEPARENT],
      ["tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"],
    ]);
    attempt.end(i === 0 ? null : 200, i === 0 ? "connection_refused" : null);
  }
  request.end(200, null);
});

Deno.test("tracing off: an invalid traceparent is dropped with its tracestate, and no trace is invented", () => {
  for (
    const traceparent of [`ff-${TRACE_ID}-${PARENT_ID}-01`, "garbage", null]
  ) {
    const request = startTrace(
      { traceparent, tracestate: "congo=t61rcWkgMzE", requestId: "req-2" },
      "GET",
    );
    assert.equal(request.traceId, null);
    assert.deepEqual(request.attempt(endpoint, "/").headers, [
      ["x-request-id", "req-2"],
    ]);
  }
});

Deno.test("tracing off: a later version is sent on as version 00, without its extra fields", () => {
  const request = startTrace({
    traceparent: `cc-${TRACE_ID}-${PARENT_ID}-01-what-the-future-will-be-like`,
    tracestate: null,
    requestId: null,
  }, "GET");
  assert.deepEqual(
    headerValues(request.attempt(endpoint, "/").headers, "traceparent"),
    [TRACEPARENT],
  );
});

Deno.test("tracing off: an empty tracestate is not sent", () => {
  const request = startTrace(
    { traceparent: TRACEPARENT, tracestate: "", requestId: null },
    "GET",
  );
  assert.deepEqual(
    headerValues(request.attempt(endpoint, "/").headers, "tracestate"),
    [],
  );
});

/** A span as the recording provider below keeps it. */
interface RecordedSpan {
  name: string;
  kind: number | undefined;
  context: SpanContext;
  parent: SpanContext | undefined;
  attributes: Attributes;
  status: SpanStatus | undefined;
  ended: boolean;
}

/**
 * The smallest tracer provider that records spans, so that the traced path
 * can be checked in-process (tests/tracing_test.ts checks it against Deno's
 * own provider and a real OTLP receiver).
 */
class RecordingProvider implements TracerProvider {
  readonly spans: RecordedSpan[] = [];

  getTracer(): Tracer {
    const spans = this.spans;
    const start = (
      name: string,
      options: SpanOptions = {},
      context?: Context,
    ): Span => {
      const parent = context ? trace.getSpanContext(context) : undefined;
      const record: RecordedSpan = {
        name,
        kind: options.kind,
        context: {
          traceId: parent?.traceId ?? randomHex(16),
          spanId: randomHex(8),
          traceFlags: parent?.traceFlags ?? 1,
        },
        parent,
        attributes: { ...options.attributes },
        status: undefined,
        ended: false,
      };
      spans.push(record);
      const span: Span = {
        spanContext: () => record.context,
        setAttribute(key, value) {
          if (value !== undefined) record.attributes[key] = value;
          return span;
        },
        setAttributes(attributes) {
          Object.assign(record.attributes, attributes);
          return span;
        },
        addEvent: () => span,
        addLink: () => span,
        addLinks: () => span,
        setStatus(status) {
          record.status = status;
          return span;
        },
        updateName(name) {
          record.name = name;
          return span;
        },
        end() {
          record.ended = true;
        },
        isRecording: () => !record.ended,
        recordException() {},
      };
      return span;
    };
    return {
      startSpan: start,
      startActiveSpan: () => {
        throw new Error("Not used by legate");
      },
    };
  }
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Runs `body` with a recording provider registered, then unregisters it. */
function withRecordingProvider(
  body: (provider: RecordingProvider) => void,
): void {
  const provider = new RecordingProvider();
  assert.ok(trace.setGlobalTracerProvider(provider));
  try {
    body(provider);
  } finally {
    trace.disable();
  }
}

Deno.test("tracing on: a server span continues the client's trace, and each attempt is its child", () => {
  withRecordingProvider((provider) => {
    assert.equal(tracingEnabled(), true);
    const request = startTrace({
      traceparent: TRACEPARENT,
      tracestate: "congo=t61rcWkgMzE",
      requestId: "req-3",
    }, "GET");
    request.routed("users");
    assert.equal(request.traceId, TRACE_ID);
    const first = request.attempt(endpoint, "/users/1");
    first.end(null, "connection_refused");
    const second = request.attempt(endpoint, "/users/1");
    second.end(200, null);
    request.end(200, null);

    const [server, ...attempts] = provider.spans;
    assert.ok(server);
    assert.equal(server.name, "GET users");
    assert.equal(server.kind, 1); // SpanKind.SERVER
    assert.equal(server.parent?.spanId, PARENT_ID);
    assert.equal(server.parent?.isRemote, true);
    assert.equal(server.attributes["legate.service"], "users");
    assert.deepEqual(server.attributes["http.request.header.x-request-id"], [
      "req-3",
    ]);
    assert.equal(server.ended, true);
    assert.equal(attempts.length, 2);
    for (const [i, attempt] of [first, second].entries()) {
      const span = attempts[i]!;
      assert.equal(span.kind, 2); // SpanKind.CLIENT
      assert.equal(span.context.traceId, TRACE_ID);
      assert.equal(span.parent?.spanId, server.context.spanId);
      assert.equal(span.ended, true);
      assert.deepEqual(attempt.headers, [
        ["x-request-id", "req-3"],
        ["traceparent", `00-${TRACE_ID}-${span.context.spanId}-01`],
        ["tracestate", "congo=t61rcWkgMzE"],
      ]);
    }
    assert.equal(attempts[0]!.attributes["error.type"], "connection_refused");
    assert.equal(attempts[0]!.status?.code, 2); // SpanStatusCode.ERROR
    assert.equal(
      attempts[0]!.attributes["http.request.resend_count"],
      undefined,
    );
    assert.equal(attempts[1]!.attributes["http.request.resend_count"], 1);
    assert.equal(attempts[1]!.attributes["http.response.status_code"], 200);
    assert.equal(attempts[1]!.status, undefined);
    assert.equal(attempts[1]!.attributes["server.address"], "users-1.internal");
    assert.equal(attempts[1]!.attributes["server.port"], 8080);
    assert.equal(
      attempts[1]!.attributes["url.full"],
      "http://users-1.internal:8080/users/1",
    );
  });
});

Deno.test("tracing on: an invalid client traceparent starts a new trace, without its tracestate", () => {
  withRecordingProvider((provider) => {
    const request = startTrace({
      traceparent: `00-${"0".repeat(32)}-${PARENT_ID}-01`,
      tracestate: "congo=t61rcWkgMzE",
      requestId: null,
    }, "POST");
    const attempt = request.attempt(endpoint, "/");
    attempt.end(503, null);
    request.end(503, null);
    const [server, client] = provider.spans;
    assert.equal(server?.parent, undefined);
    assert.match(request.traceId ?? "", /^[0-9a-f]{32}$/);
    assert.notEqual(request.traceId, "0".repeat(32));
    assert.deepEqual(headerValues(attempt.headers, "tracestate"), []);
    assert.deepEqual(headerValues(attempt.headers, "traceparent"), [
      `00-${request.traceId}-${client?.context.spanId}-01`,
    ]);
    assert.equal(client?.attributes["error.type"], "503");
    assert.equal(server?.attributes["error.type"], "503");
    assert.equal(server?.status?.code, 2);
  });
});

Deno.test("tracing on: legate's own answers mark the server span with the error kind", () => {
  withRecordingProvider((provider) => {
    const request = startTrace(
      { traceparent: null, tracestate: null, requestId: null },
      "GET",
    );
    request.end(404, "destination_not_found");
    const [server] = provider.spans;
    assert.equal(server?.attributes["legate.error"], "destination_not_found");
    assert.equal(server?.attributes["http.response.status_code"], 404);
    // A 4xx is the client's doing: not an error of the server span.
    assert.equal(server?.status, undefined);
  });
});

Deno.test("tracing on: an IPv6 endpoint's server.address has no brackets", () => {
  withRecordingProvider((provider) => {
    const request = startTrace(
      { traceparent: null, tracestate: null, requestId: null },
      "GET",
    );
    request.attempt({
      ...endpoint,
      address: { transport: "tcp", hostname: "::1", port: 8443 },
      tls: true,
      authority: "[::1]",
    }, "/").end(200, null);
    const client = provider.spans[1];
    assert.equal(client?.attributes["server.address"], "::1");
    assert.equal(client?.attributes["server.port"], 443);
    // The address connected to is the authority's: no network.peer.address.
    assert.equal(client?.attributes["network.peer.address"], undefined);
    assert.equal(client?.attributes["url.full"], "https://[::1]/");
  });
});

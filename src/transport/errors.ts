/**
 * The proxy's one error vocabulary: every failure on the way to or from an
 * upstream becomes a {@linkcode ProxyError} with a kind, a source and a
 * retryable flag, and one function maps it to an HTTP status.
 * @module
 */

/**
 * What went wrong, named after the RFC 9209 Proxy-Status error types so the
 * `Proxy-Status` header legate sends can carry it unchanged.
 */
export type ProxyErrorKind =
  | "destination_not_found"
  | "dns_error"
  | "connection_refused"
  | "connection_timeout"
  | "connection_terminated"
  | "http_response_timeout"
  | "http_protocol_error"
  | "http_request_error"
  | "http_upgrade_failed"
  | "idle_timeout"
  | "client_gone"
  | "connection_limit_reached"
  | "tls_certificate_error"
  | "tls_alert_received"
  | "destination_unavailable"
  | "proxy_internal_error";

/** Which side caused a failure. */
export type ErrorSource = "upstream" | "downstream" | "internal";

const SOURCES: Record<ProxyErrorKind, ErrorSource> = {
  destination_not_found: "internal",
  dns_error: "upstream",
  connection_refused: "upstream",
  connection_timeout: "upstream",
  connection_terminated: "upstream",
  http_response_timeout: "upstream",
  http_protocol_error: "upstream",
  http_request_error: "downstream",
  http_upgrade_failed: "upstream",
  idle_timeout: "upstream",
  client_gone: "downstream",
  connection_limit_reached: "internal",
  tls_certificate_error: "upstream",
  tls_alert_received: "upstream",
  destination_unavailable: "upstream",
  proxy_internal_error: "internal",
};

/** Failures that happen before the upstream saw a request: always safe to retry elsewhere. */
const RETRYABLE = new Set<ProxyErrorKind>([
  "dns_error",
  "connection_refused",
  "connection_timeout",
]);

/**
 * A failure while proxying.
 *
 * @example A timeout is a 504 that another endpoint may still serve
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProxyError, statusForError } from "./errors.ts";
 * const error = new ProxyError("connection_timeout", "connect to users-1:80 took over 5s");
 * assert.equal(statusForError(error), 504);
 * assert.equal(error.source, "upstream");
 * assert.equal(error.retryable, true);
 * ```
 */
export class ProxyError extends Error {
  /** What went wrong. */
  readonly kind: ProxyErrorKind;
  /** Which side caused it. */
  readonly source: ErrorSource;
  /** Whether the request may be sent to another endpoint. */
  readonly retryable: boolean;
  /**
   * The status the upstream answered with, where that is the failure (a
   * refused WebSocket handshake): `Proxy-Status` names it as
   * `received-status`.
   */
  readonly receivedStatus: number | null;

  /** Makes an error of `kind`; `message` says what happened, for logs. */
  constructor(
    kind: ProxyErrorKind,
    message: string,
    options?: ErrorOptions & { receivedStatus?: number },
  ) {
    super(message, options);
    this.name = "ProxyError";
    this.kind = kind;
    this.source = SOURCES[kind];
    this.retryable = RETRYABLE.has(kind);
    this.receivedStatus = options?.receivedStatus ?? null;
  }
}

/**
 * The HTTP status for a failure: 504 for upstream timeouts, 404 when no route
 * matched, 400 for a request legate will not forward, 503 when a limit is
 * reached or no endpoint can take the request, 499 (logged only) when the
 * client went away, 502 otherwise.
 */
export function statusForError(error: ProxyError): number {
  switch (error.kind) {
    case "connection_timeout":
    case "http_response_timeout":
    case "idle_timeout":
      return 504;
    case "destination_not_found":
      return 404;
    case "http_request_error":
      return 400;
    case "connection_limit_reached":
    case "destination_unavailable":
      return 503;
    case "client_gone":
      return 499;
    default:
      return 502;
  }
}

/**
 * Classifies an error thrown by `Deno.connect` or a socket read or write.
 *
 * @example legate out of file descriptors is its own limit, not the upstream's failure
 * ```ts
 * import assert from "node:assert/strict";
 * import { classifySocketError, statusForError } from "./errors.ts";
 * const error = classifySocketError(
 *   new Error("Too many open files (os error 24)"),
 *   "connect to http://127.0.0.1:8080",
 * );
 * assert.equal(error.kind, "connection_limit_reached");
 * assert.equal(error.source, "internal");
 * assert.equal(statusForError(error), 503);
 * ```
 */
export function classifySocketError(
  error: unknown,
  context: string,
): ProxyError {
  if (error instanceof ProxyError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  if (error instanceof Deno.errors.ConnectionRefused) {
    return new ProxyError(
      "connection_refused",
      `${context}: connection refused`,
      {
        cause: error,
      },
    );
  }
  if (error instanceof Deno.errors.TimedOut) {
    return new ProxyError("connection_timeout", `${context}: timed out`, {
      cause: error,
    });
  }
  // legate itself is out of file descriptors (EMFILE, ENFILE): its own
  // limit, which must not count against a healthy upstream.
  if (/too many open files|os error 2[34]\b/i.test(detail)) {
    return new ProxyError("connection_limit_reached", `${context}: ${detail}`, {
      cause: error,
    });
  }
  if (/lookup|resolve|name or service|nodename/i.test(detail)) {
    return new ProxyError("dns_error", `${context}: ${detail}`, {
      cause: error,
    });
  }
  // The upstream ended the handshake, e.g. refusing legate's client
  // certificate ("CertificateRequired", "BadCertificate"): its alert, not ours.
  if (/received fatal alert/i.test(detail)) {
    return new ProxyError("tls_alert_received", `${context}: ${detail}`, {
      cause: error,
    });
  }
  if (/certificate|UnknownIssuer|NotValidForName/i.test(detail)) {
    return new ProxyError("tls_certificate_error", `${context}: ${detail}`, {
      cause: error,
    });
  }
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.UnexpectedEof ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.NotConnected
  ) {
    return new ProxyError("connection_terminated", `${context}: ${detail}`, {
      cause: error,
    });
  }
  return new ProxyError("destination_unavailable", `${context}: ${detail}`, {
    cause: error,
  });
}

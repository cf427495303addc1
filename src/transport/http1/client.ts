/**
 * The HTTP upstream transport: HTTP/1.1 over `Deno.connect` (and
 * `Deno.startTls`) with a keep-alive pool per endpoint.
 *
 * Bytes pass through untouched: no decompression (a gzip body arrives
 * byte-identical with its `Content-Encoding`), the request target is sent as
 * the caller gives it, and bodies stream in both directions with
 * Content-Length or chunked framing.
 *
 * This module runs one exchange: connect or take a pooled connection, write
 * the request, read the response head, hand the body over, and decide whether
 * the connection may be reused. Routing, header policy and status mapping
 * belong to the server; bytes on the wire to parse, encode and body.
 * @module
 */
import { setImmediate } from "node:timers";
import { connectEndpoint, type Endpoint, writeAll } from "../connect.ts";
import { classifySocketError, ProxyError } from "../errors.ts";
import type { HeaderPair } from "../headers.ts";
import { IdleTimer } from "../idle_timer.ts";
import { schedule } from "../timer_wheel.ts";
import { responseBodyStream, writeRequestBody } from "./body.ts";
import { Http1Connection } from "./connection.ts";
import { type BodyFraming, encodeRequestHead } from "./encode.ts";
import { parseResponseHead, type ResponseHead } from "./parse.ts";
import { ConnectionPool, type PoolOptions } from "./pool.ts";

/** A request as the transport sends it. */
export interface UpstreamRequest {
  /** Method, e.g. `GET`. */
  readonly method: string;
  /** Request target exactly as it goes on the wire: visible ASCII only. */
  readonly target: string;
  /** End-to-end headers, Host included; framing headers are the transport's. */
  readonly headers: readonly HeaderPair[];
  /**
   * Body: a stream, bytes held in full (sent again as they are when the
   * request is retried), or null for none.
   */
  readonly body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** Body length when known (sent as Content-Length); null streams it chunked. */
  readonly bodyLength: number | null;
  /** Aborts the exchange until the response headers arrive. */
  readonly signal: AbortSignal;
  /** Told which upstream connection the exchange holds, so it can be cut. */
  readonly tracker?: ExchangeTracker;
}

/** A response as the transport received it. */
export interface UpstreamResponse {
  /** Status code, 200–599 (1xx interim responses are consumed). */
  readonly status: number;
  /** Reason phrase. */
  readonly statusText: string;
  /**
   * End-to-end and hop-by-hop headers as received (names lowercased), with
   * `Content-Length` only where it describes the body handed over (or, for
   * HEAD, the body a GET would get) and never `Transfer-Encoding`.
   */
  readonly headers: HeaderPair[];
  /**
   * Body: bytes when small (up to 16 KiB with a Content-Length), a stream
   * otherwise, null when the response has none (HEAD, 204, 304).
   */
  readonly body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
}

/** Timeouts for one exchange, in milliseconds. */
export interface ExchangeTimeouts {
  /** Opening the connection. */
  readonly connect: number;
  /** From the end of the request until the response headers arrive. */
  readonly request: number;
  /** No body bytes in either direction. */
  readonly idle: number;
}

/** Sends HTTP requests to upstream endpoints. */
export interface HttpTransport {
  /**
   * Sends `request` to `endpoint`. Rejects with a {@linkcode ProxyError}; a
   * failure after the response headers errors the body stream instead.
   */
  send(
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: ExchangeTimeouts,
  ): Promise<UpstreamResponse>;
  /** Closes idle pooled connections; exchanges in flight finish. */
  close(): void;
}

/**
 * Hears when an exchange starts and stops holding an upstream connection, so
 * that whoever owns the request (its client connection, its listener) can
 * cut it: closing the connection ends a wait for headers and errors a body
 * being streamed.
 */
export interface ExchangeTracker {
  /** An exchange now holds `connection`. */
  add(connection: { close(): void }): void;
  /** The exchange holding `connection` is over; `stats` is what it measured. */
  delete(connection: { close(): void }, stats: ExchangeStats): void;
}

/** What one exchange measured, as it ended. */
export interface ExchangeStats {
  /** Opening its connection, in milliseconds; null on a pooled connection. */
  readonly connectMs: number | null;
  /** From the start of the exchange to the response head, in milliseconds; null without one. */
  readonly headMs: number | null;
  /** Request body bytes sent. */
  readonly bytesSent: number;
  /** Response body bytes received. */
  readonly bytesReceived: number;
}

/** Options of {@linkcode Http1Transport}. */
export type Http1TransportOptions = PoolOptions;

const SMALL_BODY_BYTES = 16 * 1024;

/**
 * Methods that may be sent twice without doing twice what they do (RFC 9110
 * 9.2.2): resent when a pooled connection turns out stale, and retried.
 */
export const IDEMPOTENT: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "TRACE",
  "PUT",
  "DELETE",
]);
/** Methods whose requests frame a body even when it is empty. */
const BODYLESS = new Set(["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"]);

/**
 * HTTP/1.1 client with keep-alive pools. A request that fails on a reused
 * connection before any response byte (the upstream closed it while idle) is
 * sent again on a fresh connection only when that cannot repeat an action:
 * an idempotent method without a body.
 *
 * @example Sends a request and reuses the connection for the next
 * ```ts
 * import assert from "node:assert/strict";
 * import { Http1Transport } from "./client.ts";
 * const connections = new Set<string>();
 * await using upstream = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   (request, info) => {
 *     connections.add(`${(info.remoteAddr as Deno.NetAddr).port}`);
 *     return new Response(`${request.method} ${new URL(request.url).pathname}`);
 *   },
 * );
 * const { port } = upstream.addr;
 * const endpoint = {
 *   key: `127.0.0.1:${port}`,
 *   url: `http://127.0.0.1:${port}`,
 *   address: { transport: "tcp" as const, hostname: "127.0.0.1", port },
 *   tls: false,
 *   serverName: "127.0.0.1",
 *   authority: `127.0.0.1:${port}`,
 * };
 * const transport = new Http1Transport();
 * for (const path of ["/a", "/b"]) {
 *   const response = await transport.send(endpoint, {
 *     method: "GET",
 *     target: path,
 *     headers: [["host", endpoint.authority]],
 *     body: null,
 *     bodyLength: null,
 *     signal: new AbortController().signal,
 *   }, { connect: 5_000, request: 60_000, idle: 60_000 });
 *   assert.equal(response.status, 200);
 *   assert.equal(new TextDecoder().decode(response.body as Uint8Array), `GET ${path}`);
 * }
 * assert.equal(connections.size, 1);
 * transport.close();
 * ```
 */
export class Http1Transport implements HttpTransport {
  readonly #pool: ConnectionPool;

  /** Makes a transport with empty pools. */
  constructor(options: Http1TransportOptions = {}) {
    this.#pool = new ConnectionPool(options);
  }

  async send(
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: ExchangeTimeouts,
  ): Promise<UpstreamResponse> {
    // Encoded first: a request that cannot be sent fails before it takes a connection.
    const head = encodeRequestHead(
      request.method,
      request.target,
      request.headers,
      bodyFraming(request),
    );
    const replayable = !(request.body instanceof ReadableStream) &&
      IDEMPOTENT.has(request.method);
    let pooled = this.#pool.take(endpoint.key);
    if (pooled && !replayable) {
      // A request that must not be sent twice waits one turn of the event
      // loop, so that an upstream's close that already arrived is seen
      // before the request goes into that connection (a close and a request
      // can land in the same turn). It costs a few microseconds.
      await nextTurn();
      if (pooled.stale) {
        pooled.close();
        pooled = this.#pool.take(endpoint.key);
      }
    }
    if (pooled) {
      try {
        return await this.#exchange(pooled, head, endpoint, request, timeouts);
      } catch (error) {
        if (!(error instanceof StaleConnection) || !replayable) {
          throw unwrapStale(error);
        }
      }
    }
    if (request.signal.aborted) throw clientGone(endpoint);
    const connecting = performance.now();
    const conn = await connectEndpoint(endpoint, timeouts.connect);
    const connection = new Http1Connection(conn);
    connection.connectMs = performance.now() - connecting;
    try {
      return await this.#exchange(
        connection,
        head,
        endpoint,
        request,
        timeouts,
      );
    } catch (error) {
      throw unwrapStale(error);
    }
  }

  close(): void {
    this.#pool.close();
  }

  async #exchange(
    connection: Http1Connection,
    head: Uint8Array,
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: ExchangeTimeouts,
  ): Promise<UpstreamResponse> {
    const where = `${request.method} ${endpoint.url}`;
    const started = performance.now();
    let headMs: number | null = null;
    let bytesSent = 0;
    // Measured once per exchange: a pooled connection's connect was another's.
    const connectMs = connection.connectMs;
    connection.connectMs = null;
    const stats = (bytesReceived: number): ExchangeStats => ({
      connectMs,
      headMs,
      bytesSent,
      bytesReceived,
    });
    request.tracker?.add(connection);
    let failure: ProxyError | undefined;
    const cut = (error: ProxyError) => {
      failure ??= error;
      connection.close();
    };
    // The request timeout runs from the end of the request; while a body is
    // uploading, only the idle timeout applies.
    let cancelRequestTimer: (() => void) | undefined;
    const startRequestTimer = () => {
      cancelRequestTimer = schedule(
        timeouts.request,
        () =>
          cut(
            new ProxyError(
              "http_response_timeout",
              `${where}: no response headers within ${timeouts.request}ms`,
            ),
          ),
      );
    };
    const streamed = request.body instanceof ReadableStream;
    const uploadIdle = !streamed ? undefined : new IdleTimer(
      timeouts.idle,
      () =>
        cut(
          new ProxyError(
            "idle_timeout",
            `${where}: request body stalled for ${timeouts.idle}ms`,
          ),
        ),
    );
    const onAbort = () => cut(clientGone(endpoint));
    request.signal.addEventListener("abort", onAbort, { once: true });
    if (request.signal.aborted) onAbort();

    let requestSent = false;
    let headReceived = false;
    let sendFailure: ProxyError | undefined;
    sendRequest(connection, head, request, uploadIdle).then((sent) => {
      bytesSent = sent;
      requestSent = true;
      uploadIdle?.stop();
      if (!headReceived) startRequestTimer();
    }, (error: unknown) => {
      uploadIdle?.stop();
      if (error instanceof ProxyError) {
        cut(error); // the client's body failed
        return;
      }
      // An upstream may answer before it has read the whole request (a 413
      // or 401 to an upload) and close: its answer is still read and
      // forwarded; the connection is not reused.
      sendFailure = classifySocketError(error, `${where}: sending the request`);
      if (!headReceived) startRequestTimer();
    });
    let response: ResponseHead;
    let smallBody: Uint8Array<ArrayBuffer> | undefined;
    try {
      response = await readFinalHead(connection, request.method);
      headMs = performance.now() - started;
      // A small body is read at once and handed over as bytes: a stream per
      // response costs more than the body itself.
      if (
        response.framing.kind === "length" &&
        response.framing.length <= SMALL_BODY_BYTES
      ) {
        smallBody = await connection.readExactly(response.framing.length);
      }
    } catch (error) {
      request.tracker?.delete(connection, stats(0));
      connection.close();
      if (failure) throw failure;
      // A protocol error keeps its own message; otherwise a failure while
      // sending explains a failed read best.
      const reason = error instanceof ProxyError &&
          error.kind === "http_protocol_error"
        ? error
        : sendFailure ?? classifySocketError(error, where);
      if (
        connection.reused && !connection.receivedAny &&
        reason.kind === "connection_terminated"
      ) {
        throw new StaleConnection(reason);
      }
      throw reason;
    } finally {
      headReceived = true;
      cancelRequestTimer?.();
      uploadIdle?.stop();
      request.signal.removeEventListener("abort", onAbort);
    }

    const finish = (clean: boolean, received: number) => {
      request.tracker?.delete(connection, stats(received));
      if (
        clean && response.keepAlive && requestSent && !connection.closed &&
        connection.buffered === 0
      ) {
        connection.reused = true;
        this.#pool.release(endpoint.key, connection, response.keepAliveTimeout);
      } else {
        connection.close();
      }
    };
    const body = smallBody ??
      (response.framing.kind === "none" ? null : responseBodyStream(
        connection,
        response.framing,
        timeouts.idle,
        where,
        finish,
      ));
    if (!(body instanceof ReadableStream)) finish(true, body?.length ?? 0);
    const headers = response.headers;
    const { contentLength } = response;
    if (
      contentLength !== null &&
      (response.framing.kind === "length" ||
        (request.method === "HEAD" && response.status !== 204))
    ) {
      headers.push(["content-length", String(contentLength)]);
    }
    return {
      status: response.status,
      statusText: response.statusText,
      headers,
      body,
    };
  }
}

/** Resolves after the event loop has polled I/O once (`setTimeout(0)` takes a millisecond or more). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function bodyFraming(request: UpstreamRequest): BodyFraming {
  if (request.body === null) {
    return BODYLESS.has(request.method) ? "none" : "empty";
  }
  if (request.body instanceof Uint8Array) return request.body.length;
  return request.bodyLength ?? "chunked";
}

/** Writes the request; resolves with the body bytes sent. */
async function sendRequest(
  connection: Http1Connection,
  head: Uint8Array,
  request: UpstreamRequest,
  progress: IdleTimer | undefined,
): Promise<number> {
  if (request.body instanceof Uint8Array) {
    // Held bytes go out with the head, in one write.
    const whole = new Uint8Array(head.length + request.body.length);
    whole.set(head);
    whole.set(request.body, head.length);
    await writeAll(connection.conn as Deno.Conn, whole);
    return request.body.length;
  }
  await writeAll(connection.conn as Deno.Conn, head);
  if (request.body instanceof ReadableStream) {
    return await writeRequestBody(
      connection,
      request.body,
      request.bodyLength,
      progress!,
    );
  }
  return 0;
}

/** Reads heads until the final one: interim 1xx responses (100, 103) are consumed. */
async function readFinalHead(
  connection: Http1Connection,
  method: string,
): Promise<ResponseHead> {
  while (true) {
    const head = parseResponseHead(await connection.readHead(), method);
    if (head.status >= 200) return head;
    if (head.status === 101) {
      throw new ProxyError(
        "http_protocol_error",
        "upstream switched protocols, which legate does not forward yet",
      );
    }
  }
}

/** Marks a failure on a reused connection before any response byte. */
class StaleConnection extends Error {
  readonly reason: ProxyError;
  constructor(reason: ProxyError) {
    super(reason.message);
    this.reason = reason;
  }
}

function unwrapStale(error: unknown): unknown {
  return error instanceof StaleConnection ? error.reason : error;
}

function clientGone(endpoint: Endpoint): ProxyError {
  return new ProxyError(
    "client_gone",
    `client went away before ${endpoint.url} answered`,
  );
}

/**
 * The HTTP upstream transport: HTTP/1.1 over `Deno.connect` (and `Deno.startTls`)
 * with a keep-alive pool per endpoint.
 *
 * Bytes pass through untouched: no decompression (a gzip body arrives
 * byte-identical with its `Content-Encoding`), no URL normalisation (the
 * request target is sent exactly as the client wrote it), and bodies stream in
 * both directions with Content-Length or chunked framing.
 *
 * This module knows sockets and HTTP framing only; routing, header policy and
 * status mapping belong to the server.
 * @module
 */
import {
  closeQuietly,
  connectEndpoint,
  type Endpoint,
  writeAll,
} from "./connect.ts";
import { classifySocketError, ProxyError } from "./errors.ts";
import type { HeaderPair } from "./headers.ts";
import { IdleTimer } from "./idle_timer.ts";
import { schedule } from "./timer_wheel.ts";

/** A request as the transport sends it. */
export interface UpstreamRequest {
  /** Method, e.g. `GET`. */
  readonly method: string;
  /** Request target: path and query exactly as they go on the wire. */
  readonly target: string;
  /** End-to-end headers, Host included; framing headers are the transport's. */
  readonly headers: readonly HeaderPair[];
  /** Body, or null for none. */
  readonly body: ReadableStream<Uint8Array> | null;
  /** Body length when known (sent as Content-Length); null streams it chunked. */
  readonly bodyLength: number | null;
  /** Aborts the exchange until the response headers arrive. */
  readonly signal: AbortSignal;
  /** The group that can cut this exchange at any point, e.g. its listener's. */
  readonly group?: ExchangeGroup;
}

/** A response as the transport received it. */
export interface UpstreamResponse {
  /** Status code, 200–599 (1xx interim responses are consumed). */
  readonly status: number;
  /** Reason phrase. */
  readonly statusText: string;
  /** Response headers as received (names lowercased), framing headers included. */
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
 * Exchanges that can be cut together: those of one listener, when its drain
 * deadline passes. Cutting closes their upstream connections, which ends
 * requests waiting for headers and errors the bodies being streamed.
 */
export class ExchangeGroup {
  readonly #open = new Set<{ close(): void }>();

  /** Exchanges in flight. */
  get size(): number {
    return this.#open.size;
  }

  /** Tracks an exchange's connection. */
  add(connection: { close(): void }): void {
    this.#open.add(connection);
  }

  /** Forgets a finished exchange's connection. */
  delete(connection: { close(): void }): void {
    this.#open.delete(connection);
  }

  /** Closes every connection in flight. */
  cutAll(): void {
    for (const connection of this.#open) connection.close();
    this.#open.clear();
  }
}

/** Options of {@linkcode Http1Transport}. */
export interface Http1TransportOptions {
  /**
   * Idle connections kept per endpoint.
   * @default {64}
   */
  readonly maxIdlePerEndpoint?: number;
  /**
   * How long an idle pooled connection is kept, in milliseconds.
   * @default {60000}
   */
  readonly poolIdleTimeout?: number;
}

const MAX_HEAD_BYTES = 64 * 1024;
/** RFC 9110 token characters. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const INVALID_VALUE = /[\0\r\n]/;
/** RFC 9112 reason-phrase: HTAB, SP, VCHAR, obs-text. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
const SMALL_BODY_BYTES = 16 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;
/** WHATWG's "latin1" is windows-1252; {@linkcode decodeLatin1} corrects it. */
const windows1252 = new TextDecoder("latin1");
const utf8 = new TextEncoder();
/** A code point above 0xFF: windows-1252 read a byte in 0x80–0x9F. */
const NOT_LATIN1 = /[\u0100-\uffff]/;
const DECODE_SLICE = 8 * 1024;

/**
 * HTTP/1.1 client with keep-alive pools. A request that fails on a reused
 * connection before any response byte (the upstream closed it while idle) is
 * retried once on a fresh connection when it has no body.
 *
 * @example Usage
 * ```ts ignore
 * import { Http1Transport } from "./http1.ts";
 * const transport = new Http1Transport();
 * const response = await transport.send(endpoint, request, { connect: 5000, request: 60000, idle: 60000 });
 * ```
 */
export class Http1Transport implements HttpTransport {
  readonly #idle = new Map<string, Http1Connection[]>();
  readonly #maxIdle: number;
  readonly #poolIdleTimeout: number;
  readonly #sweeper: ReturnType<typeof setInterval>;

  /** Makes a transport with empty pools. */
  constructor(options: Http1TransportOptions = {}) {
    this.#maxIdle = options.maxIdlePerEndpoint ?? 64;
    this.#poolIdleTimeout = options.poolIdleTimeout ?? 60_000;
    this.#sweeper = setInterval(
      () => this.#sweep(),
      Math.min(this.#poolIdleTimeout, 10_000),
    );
    Deno.unrefTimer(this.#sweeper);
  }

  async send(
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: ExchangeTimeouts,
  ): Promise<UpstreamResponse> {
    const pooled = this.#take(endpoint.url);
    if (pooled) {
      try {
        return await this.#exchange(pooled, endpoint, request, timeouts);
      } catch (error) {
        if (!(error instanceof StaleConnection) || request.body !== null) {
          throw unwrapStale(error);
        }
      }
    }
    if (request.signal.aborted) throw clientGone(endpoint);
    const conn = await connectEndpoint(endpoint, timeouts.connect);
    try {
      return await this.#exchange(
        new Http1Connection(conn),
        endpoint,
        request,
        timeouts,
      );
    } catch (error) {
      throw unwrapStale(error);
    }
  }

  close(): void {
    clearInterval(this.#sweeper);
    for (const list of this.#idle.values()) for (const c of list) c.close();
    this.#idle.clear();
  }

  #take(key: string): Http1Connection | undefined {
    const list = this.#idle.get(key);
    const now = Date.now();
    while (list && list.length > 0) {
      const connection = list.pop()!;
      if (
        !connection.closed && now - connection.idleSince < this.#poolIdleTimeout
      ) {
        connection.leavePool();
        return connection;
      }
      connection.close();
    }
    return undefined;
  }

  #release(key: string, connection: Http1Connection): void {
    const list = this.#idle.get(key) ?? [];
    if (list.length >= this.#maxIdle) {
      connection.close();
      return;
    }
    list.push(connection);
    this.#idle.set(key, list);
    connection.enterPool(() => {
      const index = list.indexOf(connection);
      if (index >= 0) list.splice(index, 1);
    });
  }

  #sweep(): void {
    const now = Date.now();
    for (const [key, list] of this.#idle) {
      const keep = list.filter((c) => {
        const fresh = !c.closed && now - c.idleSince < this.#poolIdleTimeout;
        if (!fresh) c.close();
        return fresh;
      });
      if (keep.length > 0) this.#idle.set(key, keep);
      else this.#idle.delete(key);
    }
  }

  async #exchange(
    connection: Http1Connection,
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: ExchangeTimeouts,
  ): Promise<UpstreamResponse> {
    request.group?.add(connection);
    const where = `${request.method} ${endpoint.url}`;
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
    const uploadIdle = request.body === null ? undefined : new IdleTimer(
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
    sendRequest(connection, request, uploadIdle).then(() => {
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
    let head: ResponseHead;
    let smallBody: Uint8Array<ArrayBuffer> | undefined;
    try {
      head = await readResponseHead(connection, request.method);
      // A small body is read at once and handed over as bytes: a stream per
      // response costs more than the body itself.
      if (
        head.framing.kind === "length" &&
        head.framing.length <= SMALL_BODY_BYTES
      ) {
        smallBody = await connection.readExactly(head.framing.length);
      }
    } catch (error) {
      request.group?.delete(connection);
      connection.close();
      if (failure) throw failure;
      const reason = sendFailure ?? classifySocketError(error, where);
      if (connection.reused && !connection.receivedAny) {
        throw new StaleConnection(reason);
      }
      throw reason;
    } finally {
      headReceived = true;
      cancelRequestTimer?.();
      uploadIdle?.stop();
      request.signal.removeEventListener("abort", onAbort);
    }

    const finish = (reusable: boolean) => {
      request.group?.delete(connection);
      if (
        reusable && requestSent && !connection.closed &&
        connection.buffered === 0
      ) {
        connection.reused = true;
        this.#release(endpoint.url, connection);
      } else {
        connection.close();
      }
    };
    const body = smallBody ??
      (head.framing.kind === "none"
        ? null
        : bodyStream(connection, head, timeouts.idle, where, finish));
    if (!(body instanceof ReadableStream)) finish(head.keepAlive);
    return {
      status: head.status,
      statusText: head.statusText,
      headers: head.headers,
      body,
    };
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

/** One upstream connection with its read buffer. */
class Http1Connection {
  readonly conn: Deno.Conn;
  buffer = new Uint8Array(16 * 1024);
  start = 0;
  end = 0;
  closed = false;
  reused = false;
  receivedAny = false;
  idleSince = 0;
  /** A read issued while pooled, so a close by the upstream is noticed at once. */
  #pendingRead: Promise<number | null> | null = null;
  #inPool = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  get buffered(): number {
    return this.end - this.start;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn);
  }

  enterPool(remove: () => void): void {
    this.#inPool = true;
    this.idleSince = Date.now();
    this.receivedAny = false;
    this.start = this.end = 0;
    const read = this.conn.read(this.buffer);
    this.#pendingRead = read;
    // While pooled, any outcome of this read (EOF, reset, stray bytes) retires the connection.
    const retire = () => {
      if (this.#inPool) {
        remove();
        this.close();
      }
    };
    read.then(retire, retire);
  }

  leavePool(): void {
    this.#inPool = false;
  }

  /** Reads more bytes into the buffer; false at EOF. */
  async fill(): Promise<boolean> {
    if (this.start === this.end) this.start = this.end = 0;
    if (this.end === this.buffer.length) {
      if (this.start > 0) {
        this.buffer.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else {
        const grown = new Uint8Array(this.buffer.length * 2);
        grown.set(this.buffer);
        this.buffer = grown;
      }
    }
    let n: number | null;
    if (this.#pendingRead) {
      const pending = this.#pendingRead;
      this.#pendingRead = null;
      n = await pending;
    } else {
      n = await this.conn.read(this.buffer.subarray(this.end));
    }
    if (n === null) return false;
    this.receivedAny = true;
    this.end += n;
    return true;
  }

  /** Copies out up to `max` buffered bytes, or reads a fresh chunk; null at EOF. */
  async readChunk(max: number): Promise<Uint8Array | null> {
    if (this.end > this.start) {
      const n = Math.min(max, this.end - this.start);
      const chunk = this.buffer.slice(this.start, this.start + n);
      this.start += n;
      return chunk;
    }
    const chunk = new Uint8Array(Math.min(max, READ_CHUNK_BYTES));
    const n = await this.conn.read(chunk);
    return n === null ? null : chunk.subarray(0, n);
  }

  /** Reads exactly `length` bytes; throws when the upstream ends first. */
  async readExactly(length: number): Promise<Uint8Array<ArrayBuffer>> {
    while (this.end - this.start < length) {
      if (!(await this.fill())) {
        throw new ProxyError(
          "connection_terminated",
          "upstream closed the connection before the body ended",
        );
      }
    }
    const bytes = this.buffer.slice(this.start, this.start + length);
    this.start += length;
    return bytes;
  }

  /** Reads one CRLF-terminated line (without the CRLF); null at EOF. */
  async readLine(): Promise<string | null> {
    while (true) {
      const index = this.buffer.subarray(this.start, this.end).indexOf(10);
      if (index >= 0) {
        const lineEnd = this.start + index;
        const text = decodeLatin1(
          this.buffer.subarray(
            this.start,
            lineEnd > this.start && this.buffer[lineEnd - 1] === 13
              ? lineEnd - 1
              : lineEnd,
          ),
        );
        this.start = lineEnd + 1;
        return text;
      }
      if (this.end - this.start > MAX_HEAD_BYTES) {
        throw new ProxyError(
          "http_protocol_error",
          "upstream sent a line longer than 64 KiB",
        );
      }
      if (!(await this.fill())) return null;
    }
  }
}

/**
 * Header bytes as a string of one character per byte (ISO-8859-1), as
 * `Headers` takes them back to bytes. The native windows-1252 decoder is right
 * for every byte but 0x80–0x9F, which a UTF-8 file name often has.
 */
function decodeLatin1(bytes: Uint8Array): string {
  const text = windows1252.decode(bytes);
  if (!NOT_LATIN1.test(text)) return text;
  let exact = "";
  for (let i = 0; i < bytes.length; i += DECODE_SLICE) {
    exact += String.fromCharCode(...bytes.subarray(i, i + DECODE_SLICE));
  }
  return exact;
}

function encodeLatin1(text: string): Uint8Array {
  // Header values are ByteStrings: one byte per code unit, never UTF-8.
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(text)) return utf8.encode(text);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

const BODYLESS_METHODS = new Set([
  "GET",
  "HEAD",
  "DELETE",
  "OPTIONS",
  "TRACE",
  "CONNECT",
]);

async function sendRequest(
  connection: Http1Connection,
  request: UpstreamRequest,
  progress: IdleTimer | undefined,
): Promise<void> {
  let head = `${request.method} ${request.target} HTTP/1.1\r\n`;
  for (const [name, value] of request.headers) head += `${name}: ${value}\r\n`;
  const { body } = request;
  if (body === null) {
    if (!BODYLESS_METHODS.has(request.method)) head += "content-length: 0\r\n";
    await writeAll(connection.conn, encodeLatin1(head + "\r\n"));
    return;
  }
  const chunked = request.bodyLength === null;
  head += chunked
    ? "transfer-encoding: chunked\r\n"
    : `content-length: ${request.bodyLength}\r\n`;
  await writeAll(connection.conn, encodeLatin1(head + "\r\n"));
  const reader = body.getReader();
  const framing = { bytes: new Uint8Array(0) };
  while (true) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (error) {
      throw new ProxyError(
        "client_gone",
        `client request body failed: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    if (chunk.done) break;
    if (chunk.value.length === 0) continue;
    progress?.touch();
    try {
      await writeAll(
        connection.conn,
        chunked ? frameChunk(chunk.value, framing) : chunk.value,
      );
    } catch (error) {
      reader.cancel(error).catch(() => {});
      throw error;
    }
  }
  if (chunked) await writeAll(connection.conn, utf8.encode("0\r\n\r\n"));
}

/**
 * Frames `data` as one chunk in `buffer`, reused across the chunks of one
 * body (each write completes before the next chunk is framed), so an upload
 * allocates nothing per chunk. Returns the framed bytes.
 */
function frameChunk(
  data: Uint8Array,
  buffer: { bytes: Uint8Array },
): Uint8Array {
  const size = `${data.length.toString(16)}\r\n`;
  const length = size.length + data.length + 2;
  if (buffer.bytes.length < length) buffer.bytes = new Uint8Array(length);
  const framed = buffer.bytes;
  utf8.encodeInto(size, framed);
  framed.set(data, size.length);
  framed[length - 2] = 13;
  framed[length - 1] = 10;
  return framed.subarray(0, length);
}

type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

interface ResponseHead {
  status: number;
  statusText: string;
  headers: HeaderPair[];
  framing: Framing;
  keepAlive: boolean;
}

async function readResponseHead(
  connection: Http1Connection,
  method: string,
): Promise<ResponseHead> {
  while (true) {
    const head = await readHeadBlock(connection);
    const lines = head.split("\r\n");
    const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]!);
    if (!statusLine) {
      throw new ProxyError(
        "http_protocol_error",
        `upstream sent an invalid status line: ${
          JSON.stringify(lines[0]!.slice(0, 80))
        }`,
      );
    }
    const status = Number(statusLine[2]);
    const headers: HeaderPair[] = [];
    let connectionTokens = "";
    let encoding: string | undefined;
    let length: string | undefined;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (colon <= 0 || !HEADER_NAME.test(name) || INVALID_VALUE.test(value)) {
        throw new ProxyError(
          "http_protocol_error",
          `upstream sent an invalid header line: ${
            JSON.stringify(line.slice(0, 80))
          }`,
        );
      }
      headers.push([name, value]);
      if (name === "connection") connectionTokens += `${value.toLowerCase()},`;
      else if (name === "transfer-encoding") encoding = value;
      else if (name === "content-length") {
        length = length === undefined ? value : `${length},${value}`;
      }
    }
    if (status >= 100 && status < 200) {
      if (status === 101) {
        throw new ProxyError(
          "http_protocol_error",
          "upstream switched protocols, which legate does not forward yet",
        );
      }
      continue; // 100 Continue, 103 Early Hints: interim, the final response follows.
    }
    if (status > 599) {
      throw new ProxyError(
        "http_protocol_error",
        `upstream sent status ${status}`,
      );
    }
    const http11 = statusLine[1] === "1";
    const framing = responseFraming(method, status, encoding, length);
    const keepAlive = framing.kind !== "close" &&
      (http11
        ? !connectionTokens.includes("close")
        : connectionTokens.includes("keep-alive"));
    return {
      status,
      // A reason phrase is only informative (RFC 9112 4); one with control
      // characters is dropped rather than failing the response.
      statusText: REASON_PHRASE.test(statusLine[3] ?? "") ? statusLine[3]! : "",
      headers,
      framing,
      keepAlive,
    };
  }
}

async function readHeadBlock(connection: Http1Connection): Promise<string> {
  while (true) {
    const { buffer, start } = connection;
    // Only the first 64 KiB may hold the head, however much has arrived.
    const end = Math.min(connection.end, start + MAX_HEAD_BYTES + 4);
    for (let i = start; i + 3 < end; i++) {
      if (
        buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 &&
        buffer[i + 3] === 10
      ) {
        connection.start = i + 4;
        return decodeLatin1(buffer.subarray(start, i));
      }
    }
    if (connection.end - start > MAX_HEAD_BYTES) {
      throw new ProxyError(
        "http_protocol_error",
        "upstream response headers exceed 64 KiB",
      );
    }
    if (!(await connection.fill())) {
      throw new ProxyError(
        "connection_terminated",
        connection.receivedAny
          ? "upstream closed the connection inside the response headers"
          : "upstream closed the connection without responding",
      );
    }
  }
}

function responseFraming(
  method: string,
  status: number,
  encoding: string | undefined,
  length: string | undefined,
): Framing {
  if (method === "HEAD" || status === 204 || status === 304) {
    return { kind: "none" };
  }
  if (encoding !== undefined) {
    return /(?:^|,)\s*chunked\s*$/i.test(encoding)
      ? { kind: "chunked" }
      : { kind: "close" };
  }
  if (length !== undefined) {
    const values = new Set(length.split(",").map((v) => v.trim()));
    const value = [...values][0]!;
    if (values.size !== 1 || !/^\d+$/.test(value)) {
      throw new ProxyError(
        "http_protocol_error",
        `upstream sent an invalid Content-Length: ${JSON.stringify(length)}`,
      );
    }
    return { kind: "length", length: Number(value) };
  }
  return { kind: "close" };
}

/** The response body as a stream; `finish` learns whether the connection can be reused. */
function bodyStream(
  connection: Http1Connection,
  head: ResponseHead,
  idleMs: number,
  where: string,
  finish: (reusable: boolean) => void,
): ReadableStream<Uint8Array> {
  const { framing } = head;
  let remaining = framing.kind === "length" ? framing.length : 0;
  let chunkedDone = false;
  let settled = false;
  let idleFailure: ProxyError | undefined;
  const idle = new IdleTimer(idleMs, () => {
    idleFailure = new ProxyError(
      "idle_timeout",
      `${where}: no body bytes for ${idleMs}ms`,
    );
    connection.close();
  });
  const settle = (reusable: boolean) => {
    if (settled) return;
    settled = true;
    idle.stop();
    finish(reusable);
  };
  const truncated = () =>
    new ProxyError(
      "connection_terminated",
      `${where}: upstream closed the connection before the body ended`,
    );

  async function next(): Promise<Uint8Array | null> {
    switch (framing.kind) {
      case "length": {
        if (remaining === 0) return null;
        const chunk = await connection.readChunk(remaining);
        if (chunk === null) throw truncated();
        remaining -= chunk.length;
        return chunk;
      }
      case "close":
        return await connection.readChunk(READ_CHUNK_BYTES);
      case "none":
        return null;
      case "chunked": {
        if (chunkedDone) return null;
        if (remaining === 0) {
          const sizeLine = await connection.readLine();
          if (sizeLine === null) throw truncated();
          const size = /^([0-9a-fA-F]{1,15})\s*(?:;.*)?$/.exec(sizeLine);
          if (!size) {
            throw new ProxyError(
              "http_protocol_error",
              `${where}: invalid chunk size ${
                JSON.stringify(sizeLine.slice(0, 40))
              }`,
            );
          }
          remaining = parseInt(size[1]!, 16);
          if (remaining === 0) {
            // Trailers are dropped: Deno.serve cannot send them.
            while (true) {
              const line = await connection.readLine();
              if (line === null) throw truncated();
              if (line === "") break;
            }
            chunkedDone = true;
            return null;
          }
        }
        const chunk = await connection.readChunk(remaining);
        if (chunk === null) throw truncated();
        remaining -= chunk.length;
        if (remaining === 0 && (await connection.readLine()) !== "") {
          throw new ProxyError(
            "http_protocol_error",
            `${where}: chunk not followed by CRLF`,
          );
        }
        return chunk;
      }
    }
  }

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await next();
        if (chunk === null) {
          controller.close();
          settle(head.keepAlive);
          return;
        }
        idle.touch();
        controller.enqueue(chunk);
      } catch (error) {
        settle(false);
        controller.error(idleFailure ?? classifySocketError(error, where));
      }
    },
    cancel() {
      settle(false);
    },
  }, { highWaterMark: 0 });
}

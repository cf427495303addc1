/**
 * Response smuggling and desync through legate.
 *
 * The invariant: **one client never sees another client's response, nor bytes
 * an origin smuggled after a response.** A malicious origin written here with
 * raw sockets answers client A's request with exact bytes: a framing case of
 * RFC 9112, usually followed by a complete fake response
 * (`HTTP/1.1 200 OK ... SMUGGLED`). Client B then asks for its own path on
 * what would be the same pooled upstream connection, were it clean. B must get
 * its own body or a 502, never `SMUGGLED` and never A's bytes; a third
 * request shows legate still serves. Where RFC 9112 defines what A gets, that
 * is asserted too.
 *
 * The clients talk raw HTTP/1.1 to legate, so that framing legate sends
 * (a forwarded Content-Length, a cut chunked body) is seen as it is.
 * @module
 */
import assert from "node:assert/strict";
import { connectTo, startLegate, waitFor } from "./_helpers.ts";

/** A complete response an origin slips in after the real one. */
const FAKE = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED";
/** What a client must never see unless it is its own body by framing. */
const SMUGGLED = "SMUGGLED";
/** The real body of A's response in most cases. */
const A_BODY = "hello";
/** How long a client waits for legate to finish a response before failing. */
const CLIENT_DEADLINE_MS = 4_000;

// ---------------------------------------------------------------------------
// Bytes

/** One byte per character, as a header or a body goes on the wire. */
function latin1Bytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

/** One character per byte: every byte survives, unlike windows-1252 "latin1". */
function latin1Text(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return text;
}

function concat(...parts: (string | Uint8Array)[]): Uint8Array {
  const chunks = parts.map((p) => typeof p === "string" ? latin1Bytes(p) : p);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

async function gzip(text: string): Promise<Uint8Array> {
  const stream = new Blob([latin1Bytes(text) as Uint8Array<ArrayBuffer>])
    .stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

// ---------------------------------------------------------------------------
// The malicious origin

/** A request as the origin parsed it. */
interface SeenRequest {
  /** Which upstream connection it came on, from 1. */
  readonly connection: number;
  /** Its position among all requests the origin saw, from 1. */
  readonly index: number;
  readonly method: string;
  readonly target: string;
  /** Content-Length of its body, 0 without one. */
  readonly bodyLength: number;
}

/** One accepted upstream connection, read and written with exact bytes. */
class OriginConnection {
  readonly id: number;
  readonly #conn: Deno.Conn;
  #pending: Uint8Array = new Uint8Array(0);
  #closed = false;
  /** Whether legate closed (or reset) the connection. */
  closedByPeer = false;

  constructor(id: number, conn: Deno.Conn) {
    this.id = id;
    this.#conn = conn;
  }

  get closed(): boolean {
    return this.#closed || this.closedByPeer;
  }

  async write(data: string | Uint8Array): Promise<void> {
    let bytes = typeof data === "string" ? latin1Bytes(data) : data;
    while (bytes.length > 0) {
      bytes = bytes.subarray(await this.#conn.write(bytes));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Reads more bytes; false at EOF, reset or after `close()`. */
  async #fill(): Promise<boolean> {
    const buffer = new Uint8Array(65536);
    let n: number | null;
    try {
      n = await this.#conn.read(buffer);
    } catch {
      n = null;
    }
    if (n === null) {
      if (!this.#closed) this.closedByPeer = true;
      return false;
    }
    this.#pending = concat(this.#pending, buffer.subarray(0, n));
    return true;
  }

  /** Reads a request head up to its empty line; null when the connection ends. */
  async readHead(): Promise<string | null> {
    while (true) {
      const text = latin1Text(this.#pending);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#pending = this.#pending.subarray(end + 4);
        return text.slice(0, end);
      }
      if (!(await this.#fill())) return null;
    }
  }

  /** Reads and discards `length` body bytes; false when the connection ends first. */
  async skip(length: number): Promise<boolean> {
    while (this.#pending.length < length) {
      if (!(await this.#fill())) return false;
    }
    this.#pending = this.#pending.subarray(length);
    return true;
  }
}

/** How the origin answers one request; it may leave the body unread. */
type Reply = (request: SeenRequest, conn: OriginConnection) => Promise<void>;

/** The malicious origin: numbered connections and requests, one reply function. */
interface Origin extends AsyncDisposable {
  readonly port: number;
  readonly connections: OriginConnection[];
  readonly requests: SeenRequest[];
  /** The first request for `target`. */
  request(target: string): SeenRequest | undefined;
}

function startOrigin(reply: Reply): Origin {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: OriginConnection[] = [];
  const requests: SeenRequest[] = [];
  const serving: Promise<void>[] = [];
  const serve = async (conn: OriginConnection) => {
    while (!conn.closed) {
      const head = await conn.readHead();
      if (head === null) break;
      const [method = "", target = ""] = head.split("\r\n")[0]!.split(" ");
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      const request: SeenRequest = {
        connection: conn.id,
        index: requests.length + 1,
        method,
        target,
        bodyLength: length ? Number(length[1]) : 0,
      };
      requests.push(request);
      await reply(request, conn);
    }
  };
  const accepting = (async () => {
    for await (const socket of listener) {
      const conn = new OriginConnection(connections.length + 1, socket);
      connections.push(conn);
      serving.push(serve(conn).catch(() => {}).finally(() => conn.close()));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    connections,
    requests,
    request: (target) => requests.find((r) => r.target === target),
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of connections) conn.close();
      await Promise.all(serving);
    },
  };
}

/** The honest answer to any path: a body naming the path. */
function ownBody(target: string): string {
  return `response to ${target}`;
}

/**
 * Answers `request` honestly, after reading its body. A request for
 * `/smuggled` can only come from a body the origin left unread; it gets the
 * fake response.
 */
async function answerOwn(
  request: SeenRequest,
  conn: OriginConnection,
): Promise<void> {
  if (!(await conn.skip(request.bodyLength))) return;
  if (request.target === "/smuggled") {
    await conn.write(FAKE);
    return;
  }
  const body = request.method === "HEAD" ? "" : ownBody(request.target);
  await conn.write(
    `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  );
}

// ---------------------------------------------------------------------------
// The clients

/** What a client got from legate over one connection, read to its end. */
interface ClientResult {
  /** Status code, 0 when no complete head arrived. */
  readonly status: number;
  /** Header names lowercased; repeated headers joined with ", ". */
  readonly headers: Map<string, string>;
  /** The body as framed by legate (chunked decoded), one character per byte. */
  readonly body: string;
  /** Whether the framing legate chose ended properly (last chunk, full length). */
  readonly complete: boolean;
  /** Bytes after the end of the response. */
  readonly extra: string;
  /** Everything received, one character per byte. */
  readonly raw: string;
  /** Whether the deadline passed before legate closed the connection. */
  readonly timedOut: boolean;
}

interface ClientRequest {
  readonly method?: string;
  readonly target: string;
  /** A request body, sent with a Content-Length. */
  readonly body?: string;
  /** Sends the body only once the whole response has arrived. */
  readonly holdBodyUntilResponse?: boolean;
}

/** Parses a response legate sent; `ended` when the connection closed after it. */
function parseResponse(
  raw: string,
  method: string,
  ended: boolean,
): Omit<ClientResult, "raw" | "timedOut"> {
  const headEnd = raw.indexOf("\r\n\r\n");
  const headers = new Map<string, string>();
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
  if (headEnd < 0 || !status) {
    return { status: 0, headers, body: "", complete: false, extra: "" };
  }
  for (const line of raw.slice(0, headEnd).split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  const code = Number(status[1]);
  const rest = raw.slice(headEnd + 4);
  if (
    method === "HEAD" || code === 204 || code === 304 ||
    (code >= 100 && code < 200)
  ) {
    return { status: code, headers, body: "", complete: true, extra: rest };
  }
  if (/chunked\s*$/i.test(headers.get("transfer-encoding") ?? "")) {
    let body = "";
    let at = 0;
    while (true) {
      const lineEnd = rest.indexOf("\r\n", at);
      if (lineEnd < 0) break;
      const size = /^([0-9a-f]+)(?:;.*)?$/i.exec(rest.slice(at, lineEnd));
      if (!size) break;
      const n = parseInt(size[1]!, 16);
      if (n === 0) {
        const trailerEnd = rest.indexOf("\r\n\r\n", lineEnd);
        const end = rest.startsWith("\r\n", lineEnd + 2)
          ? lineEnd + 4
          : trailerEnd < 0
          ? -1
          : trailerEnd + 4;
        if (end < 0) break;
        return {
          status: code,
          headers,
          body,
          complete: true,
          extra: rest.slice(end),
        };
      }
      if (rest.length < lineEnd + 2 + n + 2) {
        body += rest.slice(lineEnd + 2, lineEnd + 2 + n);
        break;
      }
      body += rest.slice(lineEnd + 2, lineEnd + 2 + n);
      if (!rest.startsWith("\r\n", lineEnd + 2 + n)) break;
      at = lineEnd + 2 + n + 2;
    }
    return { status: code, headers, body, complete: false, extra: "" };
  }
  const length = headers.get("content-length");
  if (length !== undefined && /^\d+$/.test(length)) {
    const n = Number(length);
    return {
      status: code,
      headers,
      body: rest.slice(0, n),
      complete: rest.length >= n,
      extra: rest.slice(n),
    };
  }
  // Close-delimited: only the end of the connection ends it.
  return { status: code, headers, body: rest, complete: ended, extra: "" };
}

/**
 * Requests to legate one after another over one fresh connection: every one
 * but the last is kept alive and read until its response is whole, the last
 * says `connection: close` and is read until legate closes. A deadline bounds
 * the whole exchange. `onBytes` sees the current response's bytes after each
 * read.
 */
async function exchanges(
  address: string,
  requests: ClientRequest[],
  onBytes?: (raw: string) => void,
): Promise<ClientResult[]> {
  const conn = await connectTo(address);
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }, CLIENT_DEADLINE_MS);
  const buffer = new Uint8Array(65536);
  const read = async (): Promise<string | null> => {
    try {
      const n = await conn.read(buffer);
      return n === null ? null : latin1Text(buffer.subarray(0, n));
    } catch {
      return null; // reset, or closed by the deadline
    }
  };
  const send = (text: string) =>
    conn.write(latin1Bytes(text)).then(() => {}, () => {});
  const results: ClientResult[] = [];
  try {
    for (const [i, request] of requests.entries()) {
      const last = i === requests.length - 1;
      const method = request.method ?? "GET";
      const { body } = request;
      const held = body !== undefined && request.holdBodyUntilResponse === true;
      const head =
        `${method} ${request.target} HTTP/1.1\r\nhost: legate.test\r\n` +
        (body === undefined ? "" : `content-length: ${body.length}\r\n`) +
        (last ? "connection: close\r\n" : "") + "\r\n";
      await send(held ? head : head + (body ?? ""));
      let bodySent = !held;
      let raw = "";
      let ended = false;
      while (last || !parseResponse(raw, method, false).complete) {
        const chunk = await read();
        if (chunk === null) {
          ended = true;
          break;
        }
        raw += chunk;
        onBytes?.(raw);
        if (!bodySent && parseResponse(raw, method, false).complete) {
          bodySent = true;
          await send(body!);
        }
      }
      results.push({ ...parseResponse(raw, method, ended), raw, timedOut });
    }
  } finally {
    clearTimeout(deadline);
    try {
      conn.close();
    } catch {
      // Closed by the deadline.
    }
  }
  return results;
}

/** One request to legate over a fresh connection, read until legate closes it. */
async function exchange(
  address: string,
  request: ClientRequest,
  onBytes?: (raw: string) => void,
): Promise<ClientResult> {
  return (await exchanges(address, [request], onBytes))[0]!;
}

// ---------------------------------------------------------------------------
// What the clients must get

type Check = (result: ClientResult, what: string) => void;

function describe(result: ClientResult): string {
  return JSON.stringify(result.raw.slice(0, 600));
}

function assertFinished(result: ClientResult, what: string): void {
  assert.ok(
    !result.timedOut,
    `${what}: legate did not finish within ${CLIENT_DEADLINE_MS}ms; got ${
      describe(result)
    }`,
  );
}

/** A complete response with exactly this status and body, nothing after it. */
function whole(status: number, body: string): Check {
  return (result, what) => {
    assertFinished(result, what);
    assert.equal(
      result.status,
      status,
      `${what}: status; got ${describe(result)}`,
    );
    assert.ok(result.complete, `${what}: complete; got ${describe(result)}`);
    assert.equal(result.body, body, `${what}: body`);
    assert.equal(result.extra, "", `${what}: nothing after the response`);
  };
}

/** legate's own 502 with `Proxy-Status: legate; error=<kind>` (any kind if omitted). */
function badGateway(kind?: string): Check {
  return (result, what) => {
    assertFinished(result, what);
    assert.equal(
      result.status,
      502,
      `${what}: status; got ${describe(result)}`,
    );
    assert.ok(result.complete, `${what}: complete; got ${describe(result)}`);
    const proxyStatus = result.headers.get("proxy-status") ?? "";
    if (kind === undefined) {
      assert.match(proxyStatus, /^legate; error=[a-z_]+$/, what);
    } else {
      assert.equal(proxyStatus, `legate; error=${kind}`, what);
    }
  };
}

const protocolError = badGateway("http_protocol_error");

/**
 * The upstream's status forwarded, then the body cut before its framing
 * ended: what arrived is a prefix of `prefix` (when given).
 */
function cut(prefix?: string): Check {
  return (result, what) => {
    assertFinished(result, what);
    assert.equal(
      result.status,
      200,
      `${what}: status; got ${describe(result)}`,
    );
    assert.ok(
      !result.complete,
      `${what}: the response must be cut, not end as if whole; got ${
        describe(result)
      }`,
    );
    if (prefix !== undefined) {
      assert.ok(
        prefix.startsWith(result.body),
        `${what}: only bytes before the fault may arrive; got ${
          JSON.stringify(result.body.slice(0, 200))
        }`,
      );
    }
  };
}

/** Either check holds; the message names both failures. */
function either(first: Check, second: Check): Check {
  return (result, what) => {
    try {
      first(result, what);
    } catch (error1) {
      try {
        second(result, what);
      } catch (error2) {
        throw new assert.AssertionError({
          message: `${(error1 as Error).message}\n  -- or --\n${
            (error2 as Error).message
          }`,
        });
      }
    }
  };
}

/** B, C and every bystander: its own body, or a 502; never SMUGGLED or A's bytes. */
function assertOwnOr502(result: ClientResult, target: string): void {
  const what = `client ${target}`;
  assertFinished(result, what);
  assert.ok(
    !result.raw.includes(SMUGGLED),
    `${what} saw the smuggled response: ${describe(result)}`,
  );
  assert.ok(
    !result.raw.includes(A_BODY),
    `${what} saw A's bytes: ${describe(result)}`,
  );
  if (result.status === 502) badGateway()(result, what);
  else whole(200, ownBody(target))(result, what);
}

// ---------------------------------------------------------------------------
// The cases

interface Case {
  readonly name: string;
  /** A's method. */
  readonly method?: "GET" | "HEAD";
  /** The origin's bytes for A (then it keeps the connection open), or a reply of its own. */
  readonly answer: string | Uint8Array | Reply;
  /** The origin closes the connection after sending `answer`. */
  readonly close?: boolean;
  /** What A must get. */
  readonly expectA: Check;
  /**
   * Whether B may come on A's upstream connection: "expected" for the control
   * cases (proving the harness would reuse), "never" where RFC 9112 or stray
   * bytes forbid it.
   */
  readonly reuse: "expected" | "allowed" | "never";
  /** The fake response is A's own body by framing (close-delimited). */
  readonly smuggledIsABody?: boolean;
  /** Runs between A and B. */
  readonly afterA?: (origin: Origin) => Promise<void>;
}

const CHUNKED_HEAD = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
const CHUNKED_HELLO = "5\r\nhello\r\n0\r\n\r\n";

/** A chunked response whose first chunk-size line is `size`, then a fake. */
function badChunkSize(size: string, note = ""): Case {
  return {
    name: `chunk size ${JSON.stringify(size)}${note} is a framing error`,
    answer: `${CHUNKED_HEAD}${size}\r\nhello\r\n0\r\n\r\n${FAKE}`,
    // No data precedes the bad size line, so nothing may reach A.
    expectA: either(protocolError, cut("")),
    reuse: "never",
  };
}

/**
 * A chunk size too large for a double: exact arithmetic reads every byte as
 * data until the origin closes, a limit rejects it; a wrapped or rounded size
 * would end the chunk early and frame the rest.
 */
function hugeChunkSize(size: string, note: string): Case {
  return {
    name: `chunk size 0x${size} (${note}) is never truncated to a small size`,
    answer: `${CHUNKED_HEAD}${size}\r\nhello\r\n0\r\n\r\n${FAKE}`,
    close: true,
    expectA: either(protocolError, cut()),
    reuse: "never",
    smuggledIsABody: true,
  };
}

/** A header line with `line` in it, which makes the response malformed. */
function badHeader(name: string, line: string): Case {
  return {
    name,
    answer:
      `HTTP/1.1 200 OK\r\n${line}\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  };
}

/** The TE+CL response forwarded: chunked decoded, the upstream's length dropped. */
function teWithLength(result: ClientResult, what: string): void {
  whole(200, A_BODY)(result, what);
  const length = result.headers.get("content-length");
  assert.ok(
    length === undefined || length === String(A_BODY.length),
    `${what}: the upstream's Content-Length was forwarded: ${length}`,
  );
}

const gzipChunked = await gzip(A_BODY);

const CASES: Case[] = [
  // Length framing.
  {
    name: "Content-Length exact: the control, the connection is reused",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello`,
    expectA: whole(200, A_BODY),
    reuse: "expected",
  },
  {
    name:
      "Content-Length smaller than the bytes sent: the extra bytes are nobody's response",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name:
      "Content-Length larger than the bytes sent, then close: a small body is cut or a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello`,
    close: true,
    expectA: either(badGateway("connection_terminated"), cut(A_BODY)),
    reuse: "never",
  },
  {
    name:
      "Content-Length larger than the bytes sent, then close: a streamed body is cut",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n${
      "x".repeat(40_000)
    }`,
    close: true,
    expectA: cut("x".repeat(40_000)),
    reuse: "never",
  },
  {
    name:
      "Transfer-Encoding chunked and Content-Length: chunked wins, Content-Length is not forwarded, the connection is not reused",
    answer:
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n${CHUNKED_HELLO}`,
    expectA: either(protocolError, teWithLength),
    reuse: "never",
  },
  {
    name:
      "Content-Length then Transfer-Encoding chunked, a fake after the last chunk",
    answer:
      `HTTP/1.1 200 OK\r\ncontent-length: 60\r\ntransfer-encoding: chunked\r\n\r\n${CHUNKED_HELLO}${FAKE}`,
    expectA: either(protocolError, teWithLength),
    reuse: "never",
  },
  {
    name: "two Content-Length headers with different values are a 502",
    answer:
      `HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 51\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a Content-Length list of different values is a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5, 51\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a Content-Length with a sign is a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a negative Content-Length is a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a Content-Length with a space inside is a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5 1\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name:
      "a Content-Length list of equal values is one length (RFC 9110 8.6) or a 502",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello${FAKE}`,
    expectA: either(protocolError, whole(200, A_BODY)),
    reuse: "never",
  },
  {
    name: "two equal Content-Length headers are one length or a 502",
    answer:
      `HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: either(protocolError, whole(200, A_BODY)),
    reuse: "never",
  },

  // Transfer codings.
  {
    name:
      "Transfer-Encoding gzip, chunked: decoded or a 502, never gzip passed off as the content",
    answer: concat(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
      `${gzipChunked.length.toString(16)}\r\n`,
      gzipChunked,
      `\r\n0\r\n\r\n${FAKE}`,
    ),
    expectA: either(protocolError, whole(200, A_BODY)),
    reuse: "never",
  },
  {
    name:
      "Transfer-Encoding chunked, gzip: read until close, the chunk framing inside is not trusted",
    answer:
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n${CHUNKED_HELLO}${FAKE}`,
    close: true,
    // The content is not gzip: decoding fails, and legate cannot pass on a
    // transfer coding Deno.serve does not send.
    expectA: either(protocolError, cut()),
    reuse: "never",
    smuggledIsABody: true,
  },
  {
    name:
      "Transfer-Encoding chunked then gzip on two header lines: read until close",
    answer:
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n${CHUNKED_HELLO}${FAKE}`,
    close: true,
    expectA: either(protocolError, cut()),
    reuse: "never",
    smuggledIsABody: true,
  },
  {
    name:
      "Transfer-Encoding in an HTTP/1.0 response is faulty framing (RFC 9112 6.1): a 502",
    answer:
      `HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n${CHUNKED_HELLO}${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },

  // Chunked framing.
  {
    name:
      "chunked with extensions and trailers: the control, the connection is reused",
    answer:
      `${CHUNKED_HEAD}5;name=value;q="a;b"\r\nhello\r\n0;end\r\nx-trailer: 1\r\n\r\n`,
    expectA: whole(200, A_BODY),
    reuse: "expected",
  },
  {
    name:
      "chunked with extensions and trailers, then a fake: the fake is nobody's response",
    answer:
      `${CHUNKED_HEAD}5;name=value\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n${FAKE}`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name: "a last chunk followed by a fake response: the fake is nobody's",
    answer: `${CHUNKED_HEAD}${CHUNKED_HELLO}${FAKE}`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name:
      "a trailer line that is itself a fake response: A's response is cut or a 502",
    answer: `${CHUNKED_HEAD}5\r\nhello\r\n0\r\n${FAKE}`,
    expectA: either(protocolError, cut(A_BODY)),
    reuse: "never",
  },
  badChunkSize("-5"),
  badChunkSize("0x5"),
  badChunkSize(" 5", " (leading space)"),
  badChunkSize("5 5", " (space inside)"),
  badChunkSize("", " (empty)"),
  hugeChunkSize("20000000000001", "2^53 + 1"),
  hugeChunkSize("10000000000000005", "2^64 + 5, wraps to 5 in 64 bits"),
  {
    name: "chunk data not followed by CRLF is a framing error",
    answer: `${CHUNKED_HEAD}5\r\nhelloXX\r\n0\r\n\r\n${FAKE}`,
    expectA: either(protocolError, cut(A_BODY)),
    reuse: "never",
  },
  {
    name:
      "chunk lines ending in bare LF: one consistent reading, the fake is nobody's",
    answer: `${CHUNKED_HEAD}5\nhello\n0\n\n${FAKE}`,
    expectA: either(whole(200, A_BODY), either(protocolError, cut(A_BODY))),
    reuse: "never",
  },
  {
    name:
      "a response head with bare LF line endings: one consistent reading, the fake is nobody's",
    answer: `HTTP/1.1 200 OK\ncontent-length: 5\n\nhello${FAKE}`,
    expectA: either(whole(200, A_BODY), protocolError),
    reuse: "never",
  },

  // Status codes and bodiless responses.
  {
    name:
      "1xx interim responses with a Content-Length have no body; the final response follows",
    answer: "HTTP/1.1 100 Continue\r\ncontent-length: 46\r\n\r\n" +
      "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n" +
      `HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name: "101 Switching Protocols to a GET without Upgrade is a 502",
    answer:
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a 204 with a body sent anyway: the body is nobody's response",
    answer: `HTTP/1.1 204 No Content\r\ncontent-length: 46\r\n\r\n${FAKE}`,
    expectA: whole(204, ""),
    reuse: "never",
  },
  {
    name: "a 304 with a body sent anyway: the body is nobody's response",
    answer:
      `HTTP/1.1 304 Not Modified\r\netag: "x"\r\ncontent-length: 46\r\n\r\n${FAKE}`,
    expectA: whole(304, ""),
    reuse: "never",
  },
  {
    name:
      "a HEAD response with Content-Length and body bytes sent anyway: they are nobody's response",
    method: "HEAD",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 46\r\n\r\n${FAKE}`,
    expectA: whole(200, ""),
    reuse: "never",
  },
  {
    name: "status 099 is a 502 http_protocol_error",
    answer: `HTTP/1.1 099 X\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "status 600 is a 502 http_protocol_error",
    answer: `HTTP/1.1 600 X\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name: "a non-numeric status is a 502 http_protocol_error",
    answer: `HTTP/1.1 2x0 OK\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },

  // Connection management.
  {
    name:
      "no framing: the body runs until close, fake included, and the connection is not reused",
    answer: `HTTP/1.1 200 OK\r\n\r\nhello${FAKE}`,
    close: true,
    expectA: whole(200, A_BODY + FAKE),
    reuse: "never",
    smuggledIsABody: true,
  },
  {
    name:
      "Connection: close: not reused, though the origin keeps the connection open",
    answer:
      `HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name:
      "HTTP/1.0 without keep-alive: not reused, though the origin keeps the connection open",
    answer: `HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello`,
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
  {
    name: "HTTP/1.0 with keep-alive: may be reused",
    answer:
      `HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\nhello`,
    expectA: whole(200, A_BODY),
    reuse: "allowed",
  },

  // Header lines.
  {
    name:
      "obs-fold with a space: unfolded (RFC 9112 5.2) or a 502, the folded line is no header",
    answer:
      `HTTP/1.1 200 OK\r\nx-a: 1\r\n content-length: 46\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: either(protocolError, whole(200, A_BODY)),
    reuse: "never",
  },
  {
    name:
      "obs-fold with a tab: unfolded (RFC 9112 5.2) or a 502, the folded line is no header",
    answer:
      `HTTP/1.1 200 OK\r\nx-a: 1\r\n\tcontent-length: 46\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: either(protocolError, whole(200, A_BODY)),
    reuse: "never",
  },
  badHeader("NUL in a header value is a 502", "x-a: a\0b"),
  badHeader("CR alone in a header value is a 502", "x-a: a\rb"),
  badHeader(
    "LF alone in a header line is a 502, whichever way it is read",
    "x-a: a\ncontent-length: 46",
  ),
  badHeader("a control byte in a header name is a 502", "x-\x01a: 1"),
  badHeader("a space before the colon is a 502", "x-a : 1"),
  {
    name: "a header section over 64 KiB is a 502",
    answer: `HTTP/1.1 200 OK\r\nx-big: ${
      "a".repeat(70_000)
    }\r\ncontent-length: 5\r\n\r\nhello${FAKE}`,
    expectA: protocolError,
    reuse: "never",
  },
  {
    name:
      "a header section that never ends is a 502 as soon as it passes the limit",
    answer: "HTTP/1.1 200 OK\r\n" +
      `x-h: ${"a".repeat(60)}\r\n`.repeat(1_200),
    expectA: protocolError,
    reuse: "never",
  },

  // The pool.
  {
    name: "an unsolicited response on an idle pooled connection retires it",
    answer: `HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello`,
    expectA: whole(200, A_BODY),
    reuse: "never",
    async afterA(origin) {
      const conn = origin.connections[0]!;
      await conn.write(FAKE);
      // Only the origin sees legate's reaction: it closes the connection.
      await waitFor(
        () => conn.closedByPeer,
        "legate to close the pooled connection that sent unsolicited bytes",
        2_000,
      );
    },
  },
  {
    name: "two responses to one request, in two writes: the second is nobody's",
    async answer(_request, conn) {
      await conn.write(`HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello`);
      await conn.write(FAKE);
    },
    expectA: whole(200, A_BODY),
    reuse: "never",
  },
];

const route = (origin: Origin) =>
  `listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:${origin.port}]\n` +
  "timeouts: { connect: 1s, request: 2s, idle: 1s }\n";

async function runCase(c: Case): Promise<void> {
  await using origin = startOrigin(async (request, conn) => {
    if (request.target !== "/a") return await answerOwn(request, conn);
    if (typeof c.answer === "function") await c.answer(request, conn);
    else await conn.write(c.answer);
    if (c.close) conn.close();
  });
  await using l = await startLegate({ "svc.yaml": route(origin) });
  const address = l.address("svc");

  const a = await exchange(address, {
    method: c.method ?? "GET",
    target: "/a",
  });
  c.expectA(a, "client A");
  if (!c.smuggledIsABody) {
    assert.ok(
      !a.raw.includes(SMUGGLED),
      `client A saw bytes smuggled after its response: ${describe(a)}`,
    );
  }
  await c.afterA?.(origin);

  const b = await exchange(address, { target: "/b" });
  assertOwnOr502(b, "/b");
  const seenA = origin.request("/a");
  const seenB = origin.request("/b");
  assert.ok(seenA, "the origin saw A's request");
  if (c.reuse === "never" && seenB) {
    assert.notEqual(
      seenB.connection,
      seenA.connection,
      "B's request went on A's upstream connection",
    );
  }
  if (c.reuse === "expected") {
    assert.equal(
      seenB?.connection,
      seenA.connection,
      "control: B reuses A's clean upstream connection",
    );
  }

  const third = await exchange(address, { target: "/c" });
  whole(200, ownBody("/c"))(third, "client C, after the case");
}

for (const c of CASES) Deno.test(c.name, () => runCase(c));

Deno.test("an answer before the request body is read: the unread body is never sent as the next request", async () => {
  // The body is a request of its own. Were the connection reused after the
  // early answer, legate would send the rest of A's body and then B's request,
  // and the origin would answer the body's request first: B would get SMUGGLED.
  // A's client holds its body back until its response is whole, so the early
  // answer always comes before legate has sent the body.
  await using origin = startOrigin(async (request, conn) => {
    if (request.target !== "/a") return await answerOwn(request, conn);
    await conn.write(`HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello`);
  });
  await using l = await startLegate({ "svc.yaml": route(origin) });
  const address = l.address("svc");
  const a = await exchange(address, {
    method: "POST",
    target: "/a",
    body: "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
    holdBodyUntilResponse: true,
  });
  whole(200, A_BODY)(a, "client A");
  const b = await exchange(address, { target: "/b" });
  assertOwnOr502(b, "/b");
  const seenB = origin.request("/b");
  if (seenB) {
    assert.notEqual(
      seenB.connection,
      origin.request("/a")!.connection,
      "B's request went on the connection whose request body was unfinished",
    );
  }
  whole(200, ownBody("/c"))(
    await exchange(address, { target: "/c" }),
    "client C",
  );
});

Deno.test("two concurrent clients each get exactly their own body while one download streams slowly", async () => {
  let releaseA!: () => void;
  const bAnswered = new Promise<void>((resolve) => releaseA = resolve);
  await using origin = startOrigin(async (request, conn) => {
    if (request.target !== "/a") {
      await answerOwn(request, conn);
      if (request.target === "/b") releaseA();
      return;
    }
    await conn.write(`${CHUNKED_HEAD}10\r\nfirst half of A;\r\n`);
    await bAnswered;
    await conn.write(`11\r\nsecond half of A.\r\n0\r\n\r\n`);
  });
  // Disposed before the origin: A's reply never waits for ever on a failure.
  using _release = { [Symbol.dispose]: () => releaseA() };
  await using l = await startLegate({ "svc.yaml": route(origin) });
  const address = l.address("svc");
  let aStreaming!: () => void;
  const firstHalf = new Promise<void>((resolve) => aStreaming = resolve);
  const a = exchange(address, { target: "/a" }, (raw) => {
    if (raw.includes("first half of A;")) aStreaming();
  });
  await firstHalf;
  const b = await exchange(address, { target: "/b" });
  whole(200, ownBody("/b"))(b, "client B");
  whole(200, "first half of A;second half of A.")(await a, "client A");
  assert.notEqual(
    origin.request("/b")!.connection,
    origin.request("/a")!.connection,
    "B went on the connection A's response was still streaming on",
  );
  whole(200, ownBody("/c"))(
    await exchange(address, { target: "/c" }),
    "client C",
  );
});

Deno.test("many clients in parallel over reused connections each get exactly their own body", async () => {
  // Each path picks a clean framing, so connections go back to the pool and
  // are reused by whichever client comes next.
  const framings = [
    (body: string) =>
      `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    (body: string) =>
      `${CHUNKED_HEAD}${
        body.length.toString(16)
      };x=1\r\n${body}\r\n0\r\nx-t: 1\r\n\r\n`,
    (body: string) =>
      `HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    (body: string) =>
      `HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  ];
  await using origin = startOrigin(async (request, conn) => {
    const n = Number(request.target.slice(1));
    await conn.write(framings[n % framings.length]!(ownBody(request.target)));
  });
  await using l = await startLegate({ "svc.yaml": route(origin) });
  const address = l.address("svc");
  for (let round = 0; round < 8; round++) {
    const targets = Array.from({ length: 6 }, (_, i) => `/${round * 6 + i}`);
    const results = await Promise.all(
      targets.map((target) => exchange(address, { target })),
    );
    results.forEach((result, i) =>
      whole(200, ownBody(targets[i]!))(result, `client ${targets[i]}`)
    );
  }
  assert.ok(
    origin.connections.length < origin.requests.length,
    "connections were reused",
  );
});

Deno.test("Transfer-Encoding and Content-Length over one keep-alive client connection: the next request on it gets its own response", async (t) => {
  // An application's HTTP client pools its connections to legate, so the
  // next request on one may be another user's. A Content-Length legate
  // forwards that disagrees with the body it streams makes Deno.serve
  // truncate the body (too small) or cut the connection (too large).
  for (const length of [3, 60]) {
    await t.step(`upstream Content-Length ${length}`, async () => {
      await using origin = startOrigin(async (request, conn) => {
        if (request.target !== "/a") return await answerOwn(request, conn);
        await conn.write(
          `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: ${length}\r\n\r\n${CHUNKED_HELLO}`,
        );
      });
      await using l = await startLegate({ "svc.yaml": route(origin) });
      const [a, b] = await exchanges(l.address("svc"), [
        { target: "/a" },
        { target: "/b" },
      ]);
      either(protocolError, teWithLength)(
        a!,
        `client A, upstream Content-Length ${length}`,
      );
      assertOwnOr502(b!, "/b");
    });
  }
});

/**
 * Control bytes in a header value, each its own test, registered last: a
 * Deno that panics on such a response header ends the whole test process,
 * so run one alone with `--filter "control byte 0x01 "`.
 */
const CONTROL_BYTE_CASES: Case[] = [
  ...Array.from({ length: 0x20 }, (_, byte) => byte).filter((byte) =>
    byte !== 0x00 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d
  ),
  0x7f,
].map((byte) =>
  badHeader(
    `control byte ${
      hex(byte)
    } in a header value is a 502, never a crash of the process`,
    `x-a: a${String.fromCharCode(byte)}b`,
  )
);

for (const c of CONTROL_BYTE_CASES) Deno.test(c.name, () => runCase(c));

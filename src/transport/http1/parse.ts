/**
 * Parsing what an upstream sends: the response head (status line and header
 * section) and the lines of chunked framing, as RFC 9112 writes them.
 *
 * Strict on purpose: whatever could be read two ways (a bare CR or LF, an
 * obs-fold, a Content-Length that disagrees with itself, a transfer coding
 * other than chunked, a control byte in a value) is a `http_protocol_error`
 * rather than a guess, because a proxy that guesses differently from the
 * origin can hand one client another's response. Pure functions on bytes and
 * strings: no sockets here.
 * @module
 */
import { ProxyError } from "../errors.ts";
import type { HeaderPair } from "../headers.ts";

/** How the body of a response is delimited (RFC 9112 6.3). */
export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  | { readonly kind: "close" };

/** A parsed final response head. */
export interface ResponseHead {
  /** Status code, 200–599, or 100–199 for an interim response. */
  readonly status: number;
  /** Reason phrase; empty when the upstream sent none or one RFC 9112 does not allow. */
  readonly statusText: string;
  /**
   * Header fields in the order received, names lowercased, values trimmed;
   * without `Content-Length` and `Transfer-Encoding`, which are framing.
   */
  readonly headers: HeaderPair[];
  /** The single valid Content-Length value, when one was sent and is not overridden by chunked. */
  readonly contentLength: number | null;
  /** How the body is delimited. */
  readonly framing: Framing;
  /** Whether the connection may carry another exchange after this one. */
  readonly keepAlive: boolean;
  /** Seconds the upstream keeps an idle connection open (`Keep-Alive: timeout=N`), when it says. */
  readonly keepAliveTimeout: number | null;
}

/** The largest response head legate reads, in bytes. */
export const MAX_HEAD_BYTES = 64 * 1024;

/** RFC 9110 token characters, lowercase (names are lowercased before the test). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** RFC 9110 field-value characters: HTAB, SP, VCHAR, obs-text. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** RFC 9112 status-line, with the reason phrase optional (many servers omit it). */
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/;
const OWS_EDGES = /^[ \t]+|[ \t]+$/g;
/**
 * RFC 9112 7.1.1 chunk-size and chunk-ext: `;` BWS name [BWS `=` BWS value],
 * a value being a token or a quoted string.
 */
const CHUNK_SIZE_LINE =
  /^([0-9a-fA-F]+)(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*$/;
/** Upper bound on a Content-Length or chunk size: exact as a JavaScript number. */
const MAX_LENGTH = Number.MAX_SAFE_INTEGER;

/** WHATWG's "latin1" is windows-1252; {@linkcode decodeLatin1} corrects it. */
const windows1252 = new TextDecoder("latin1");
/** A code point above 0xFF: windows-1252 read a byte in 0x80–0x9F. */
const NOT_LATIN1 = /[\u0100-\uffff]/;
const DECODE_SLICE = 8 * 1024;

/**
 * Header bytes as a string of one character per byte (ISO-8859-1), the form
 * `Headers` takes back to the same bytes. The native windows-1252 decoder is
 * right for every byte but 0x80–0x9F, which a UTF-8 file name often has.
 *
 * @example Bytes 0x80–0x9F keep their value
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeLatin1 } from "./parse.ts";
 * assert.equal(decodeLatin1(new Uint8Array([0x61, 0x80, 0xe2])), "a\x80\xe2");
 * ```
 */
export function decodeLatin1(bytes: Uint8Array): string {
  const text = windows1252.decode(bytes);
  if (!NOT_LATIN1.test(text)) return text;
  let exact = "";
  for (let i = 0; i < bytes.length; i += DECODE_SLICE) {
    exact += String.fromCharCode(...bytes.subarray(i, i + DECODE_SLICE));
  }
  return exact;
}

/**
 * Parses a response head: the bytes before the blank line that ends it (the
 * final CRLF CRLF excluded). `method` is the request's, which decides whether
 * a body follows.
 *
 * @example A keep-alive response with a length
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseResponseHead } from "./parse.ts";
 * const head = parseResponseHead(
 *   new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1"),
 *   "GET",
 * );
 * assert.deepEqual(head.framing, { kind: "length", length: 5 });
 * assert.deepEqual(head.headers, [["x-a", "1"]]);
 * assert.equal(head.keepAlive, true);
 * ```
 * @throws {ProxyError} `http_protocol_error` for anything RFC 9112 does not allow.
 */
export function parseResponseHead(
  bytes: Uint8Array,
  method: string,
): ResponseHead {
  const lines = decodeLatin1(bytes).split("\r\n");
  const statusLine = STATUS_LINE.exec(lines[0]!);
  if (!statusLine) {
    throw protocolError(
      `upstream sent an invalid status line: ${quote(lines[0]!)}`,
    );
  }
  const status = Number(statusLine[2]);
  if (status < 100 || status > 599) {
    throw protocolError(`upstream sent status ${statusLine[2]}`);
  }
  const http11 = statusLine[1] === "1";
  const headers: HeaderPair[] = [];
  let connection = "";
  let encoding: string | undefined;
  let lengths: string | undefined;
  let keepAliveParameters: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    if (colon <= 0 || !TOKEN.test(name)) {
      // Covers obs-fold too: a continuation line starts with SP or HTAB,
      // which no field name does (RFC 9112 5.2 allows a proxy to reject it).
      throw protocolError(
        `upstream sent an invalid header line: ${quote(line)}`,
      );
    }
    const value = trimOws(line, colon + 1);
    if (!FIELD_VALUE.test(value)) {
      throw protocolError(
        `upstream sent a control character in header "${name}"`,
      );
    }
    switch (name) {
      case "content-length":
        lengths = lengths === undefined ? value : `${lengths},${value}`;
        continue;
      case "transfer-encoding":
        encoding = encoding === undefined ? value : `${encoding},${value}`;
        continue;
      case "connection":
        connection += `,${value.toLowerCase()}`;
        break;
      case "keep-alive":
        keepAliveParameters = value;
        break;
    }
    headers.push([name, value]);
  }
  const length = encoding === undefined && lengths !== undefined
    ? contentLength(lengths)
    : null;
  const framing = responseFraming(method, status, http11, encoding, length);
  // Most responses say one token, or nothing: no list to build for those.
  const tokens = connection === ""
    ? NO_TOKENS
    : connection === ",keep-alive"
    ? KEEP_ALIVE
    : connection === ",close"
    ? CLOSE
    : tokenList(connection);
  const keepAlive = framing.kind !== "close" &&
    // A message with both framings is treated as suspect (RFC 9112 6.1).
    !(encoding !== undefined && lengths !== undefined) &&
    // `close` wins over `keep-alive`, in either version (RFC 9112 9.3).
    !tokens.includes("close") && (http11 || tokens.includes("keep-alive"));
  return {
    status,
    // A reason phrase is only informative (RFC 9112 4); one with control
    // characters is dropped rather than failing the response.
    statusText: FIELD_VALUE.test(statusLine[3] ?? "")
      ? statusLine[3] ?? ""
      : "",
    headers,
    contentLength: length,
    framing,
    keepAlive,
    keepAliveTimeout: keepAliveParameters === undefined
      ? null
      : keepAliveTimeout(keepAliveParameters),
  };
}

function responseFraming(
  method: string,
  status: number,
  http11: boolean,
  encoding: string | undefined,
  length: number | null,
): Framing {
  if (encoding !== undefined) {
    if (!http11) {
      // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
      throw protocolError(
        "upstream sent Transfer-Encoding in an HTTP/1.0 response",
      );
    }
    const codings = tokenList(encoding);
    if (codings.length !== 1 || codings[0] !== "chunked") {
      // Any other coding would reach the client still encoded, with no
      // header to say so; nginx refuses these too.
      throw protocolError(
        `upstream sent an unsupported Transfer-Encoding: ${quote(encoding)}`,
      );
    }
  }
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) {
    return NONE;
  }
  if (encoding !== undefined) return CHUNKED;
  if (length !== null) return { kind: "length", length };
  return CLOSE_DELIMITED;
}

/** The value of one or more Content-Length fields; equal repeats are allowed (RFC 9110 8.6). */
function contentLength(lengths: string): number {
  const values = lengths.split(",").map((v) => v.replace(OWS_EDGES, ""));
  const first = values[0]!;
  if (!/^\d{1,16}$/.test(first) || values.some((v) => v !== first)) {
    throw protocolError(
      `upstream sent an invalid Content-Length: ${quote(lengths)}`,
    );
  }
  const length = Number(first);
  if (length > MAX_LENGTH) {
    throw protocolError(
      `upstream sent an invalid Content-Length: ${quote(lengths)}`,
    );
  }
  return length;
}

function keepAliveTimeout(parameters: string): number | null {
  const match = /(?:^|[,;\s])timeout\s*=\s*(\d{1,6})(?:$|[,;\s])/i.exec(
    parameters,
  );
  return match ? Number(match[1]) : null;
}

const NONE: Framing = { kind: "none" };
const CHUNKED: Framing = { kind: "chunked" };
const CLOSE_DELIMITED: Framing = { kind: "close" };
const NO_TOKENS: readonly string[] = [];
const KEEP_ALIVE: readonly string[] = ["keep-alive"];
const CLOSE: readonly string[] = ["close"];

/** `line` from `start` without the spaces and tabs at its edges (OWS). */
function trimOws(line: string, start: number): string {
  let end = line.length;
  while (start < end && (line[start] === " " || line[start] === "\t")) start++;
  while (end > start && (line[end - 1] === " " || line[end - 1] === "\t")) {
    end--;
  }
  return line.slice(start, end);
}

function tokenList(list: string): string[] {
  return list.split(",").map((t) => t.replace(OWS_EDGES, "").toLowerCase())
    .filter((t) => t !== "");
}

/**
 * The size in a chunk-size line (RFC 9112 7.1), extensions ignored.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseChunkSize } from "./parse.ts";
 * assert.equal(parseChunkSize("1a;name=value"), 26);
 * assert.throws(() => parseChunkSize("-1"));
 * ```
 * @throws {ProxyError} `http_protocol_error` for anything but hex digits and extensions.
 */
export function parseChunkSize(line: string): number {
  const match = CHUNK_SIZE_LINE.exec(line);
  const digits = match ? match[1]!.replace(/^0+(?=.)/, "") : undefined;
  if (digits === undefined || digits.length > 13) {
    throw protocolError(`upstream sent an invalid chunk size: ${quote(line)}`);
  }
  return parseInt(digits, 16);
}

/**
 * Checks one trailer field line of a chunked body; trailers are then dropped
 * (`Deno.serve` cannot send them).
 *
 * @throws {ProxyError} `http_protocol_error` when the line is not a field line.
 */
export function checkTrailerLine(line: string): void {
  const colon = line.indexOf(":");
  if (
    colon <= 0 || !TOKEN.test(line.slice(0, colon).toLowerCase()) ||
    !FIELD_VALUE.test(line.slice(colon + 1))
  ) {
    throw protocolError(
      `upstream sent an invalid trailer line: ${quote(line)}`,
    );
  }
}

function protocolError(message: string): ProxyError {
  return new ProxyError("http_protocol_error", message);
}

/** A short, printable quotation of untrusted text for a log or an error body. */
function quote(text: string): string {
  return JSON.stringify(text.slice(0, 80));
}

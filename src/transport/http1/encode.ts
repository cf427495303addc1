/**
 * Encoding what legate sends upstream: the request head and chunk framing.
 *
 * The encoder is the last place before the wire, so it refuses anything that
 * could change how the upstream splits the byte stream into requests: a
 * request target with a byte outside visible ASCII, a method or header name
 * that is not a token, a header value with CR, LF, NUL or a character above
 * 0xFF (which could only be written by dropping its high byte: U+010A would
 * become LF), a framing header of the caller's, or a body length that is not
 * a whole number. The server rejects such requests earlier with a 400; this is the
 * guarantee that holds whatever a caller passes.
 * @module
 */
import { ProxyError } from "../errors.ts";
import type { HeaderPair } from "../headers.ts";

/** How a request body goes on the wire. */
export type BodyFraming = "none" | "empty" | "chunked" | number;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** RFC 9112 request-target in origin-form, absolute-form or asterisk-form: visible ASCII. */
const TARGET = /^[\x21-\x7e]+$/;
/** Framing is the encoder's alone: a caller's copy would contradict it. */
const FRAMING = /^(?:content-length|transfer-encoding)$/i;
/** Bytes that end or split a header line, and characters no byte can carry. */
const UNSAFE_VALUE = /[\0\r\n\u0100-\uffff]/;
/** Anything above ASCII: such heads need one byte per character, not UTF-8. */
const NOT_ASCII = /[\u0080-\uffff]/;
const utf8 = new TextEncoder();

/** The bytes that end a chunked body: the last chunk and an empty trailer section. */
export const LAST_CHUNK: Uint8Array = utf8.encode("0\r\n\r\n");

/**
 * Encodes a request head. `body` says how the body is framed: `"none"` for a
 * request without one, `"empty"` for a method that expects one but has none
 * (`Content-Length: 0`), `"chunked"`, or the body's length.
 *
 * @example A GET and a POST
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeRequestHead } from "./encode.ts";
 * const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
 * assert.equal(
 *   text(encodeRequestHead("GET", "/a?b", [["host", "h"]], "none")),
 *   "GET /a?b HTTP/1.1\r\nhost: h\r\n\r\n",
 * );
 * assert.equal(
 *   text(encodeRequestHead("POST", "/", [], 3)),
 *   "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
 * );
 * assert.throws(() => encodeRequestHead("GET", "/a\u010ab", [], "none"));
 * ```
 * @throws {ProxyError} `http_request_error` when a part cannot be sent as it is.
 */
export function encodeRequestHead(
  method: string,
  target: string,
  headers: readonly HeaderPair[],
  body: BodyFraming,
): Uint8Array {
  if (!TOKEN.test(method)) throw refused(`method ${JSON.stringify(method)}`);
  if (!TARGET.test(target)) {
    throw refused(`request target ${JSON.stringify(target.slice(0, 80))}`);
  }
  if (
    typeof body === "number" && !(Number.isSafeInteger(body) && body >= 0)
  ) {
    throw refused(`body length ${body}`);
  }
  let head = `${method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of headers) {
    if (!TOKEN.test(name) || UNSAFE_VALUE.test(value) || FRAMING.test(name)) {
      throw refused(`header ${JSON.stringify(name)}`);
    }
    head += `${name}: ${value}\r\n`;
  }
  if (body === "chunked") head += "transfer-encoding: chunked\r\n";
  else if (body === "empty") head += "content-length: 0\r\n";
  else if (typeof body === "number") head += `content-length: ${body}\r\n`;
  return encodeLatin1(head + "\r\n");
}

/** Header values are ByteStrings: one byte per character, never UTF-8. */
function encodeLatin1(text: string): Uint8Array {
  if (!NOT_ASCII.test(text)) return utf8.encode(text);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function refused(what: string): ProxyError {
  return new ProxyError(
    "http_request_error",
    `cannot send ${what} upstream: it is not valid HTTP/1.1`,
  );
}

/**
 * Frames `data` (never empty) as one chunk in `buffer`, reused across the chunks of one
 * body (each write completes before the next chunk is framed), so an upload
 * allocates nothing per chunk. Returns the framed bytes.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { frameChunk } from "./encode.ts";
 * const framed = frameChunk(new TextEncoder().encode("hello"), { bytes: new Uint8Array(0) });
 * assert.equal(new TextDecoder().decode(framed), "5\r\nhello\r\n");
 * ```
 */
export function frameChunk(
  data: Uint8Array,
  buffer: { bytes: Uint8Array },
): Uint8Array {
  // An empty chunk would be the last chunk: the body would end there.
  if (data.length === 0) throw new RangeError("Cannot frame an empty chunk");
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

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
const LAST_CHUNK: Uint8Array = utf8.encode("0\r\n\r\n");

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
 * Frames `parts` (their bytes in order) as one chunk in `buffer`, followed by
 * the last chunk when `last` is set. The buffer is reused across the writes
 * of one body (each write completes before the next is framed), so an upload
 * allocates nothing per chunk once the buffer is large enough. Returns the
 * framed bytes.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { frameChunk } from "./encode.ts";
 * const hello = new TextEncoder().encode("hello");
 * const framed = frameChunk([hello, hello], { bytes: new Uint8Array(0) }, true);
 * assert.equal(new TextDecoder().decode(framed), "a\r\nhellohello\r\n0\r\n\r\n");
 * ```
 */
export function frameChunk(
  parts: readonly Uint8Array[],
  buffer: { bytes: Uint8Array },
  last: boolean,
): Uint8Array {
  let bytes = 0;
  for (const part of parts) bytes += part.length;
  // An empty chunk is the last chunk: the body would end there.
  if (bytes === 0 && !last) throw new RangeError("Cannot frame an empty chunk");
  const size = bytes === 0 ? "" : `${bytes.toString(16)}\r\n`;
  const data = size.length + bytes + (bytes === 0 ? 0 : 2);
  const length = data + (last ? LAST_CHUNK.length : 0);
  if (buffer.bytes.length < length) buffer.bytes = new Uint8Array(length);
  const framed = buffer.bytes;
  let at = utf8.encodeInto(size, framed).written;
  for (const part of parts) {
    framed.set(part, at);
    at += part.length;
  }
  if (bytes !== 0) {
    framed[at++] = 13;
    framed[at++] = 10;
  }
  if (last) framed.set(LAST_CHUNK, at);
  return framed.subarray(0, length);
}

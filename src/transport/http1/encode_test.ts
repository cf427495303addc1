/**
 * The request-head encoder and chunk framing on exact bytes: what legate
 * writes upstream, and what it refuses to write because the upstream could
 * split the byte stream differently.
 */
import assert from "node:assert/strict";
import { ProxyError } from "../errors.ts";
import type { HeaderPair } from "../headers.ts";
import { text } from "./_scripted_stream.ts";
import { type BodyFraming, encodeRequestHead, frameChunk } from "./encode.ts";

const isRequestError = (error: unknown) =>
  error instanceof ProxyError && error.kind === "http_request_error" &&
  error.source === "downstream";

const HOST: HeaderPair = ["host", "example.com"];

const ENCODED: {
  name: string;
  method: string;
  target: string;
  headers: HeaderPair[];
  body: BodyFraming;
  wire: string;
}[] = [
  {
    name: "a GET without a body",
    method: "GET",
    target: "/a/b?c=d&e=%20",
    headers: [HOST, ["accept", "*/*"]],
    body: "none",
    wire:
      "GET /a/b?c=d&e=%20 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\n\r\n",
  },
  {
    name: "a HEAD without a body",
    method: "HEAD",
    target: "/",
    headers: [HOST],
    body: "none",
    wire: "HEAD / HTTP/1.1\r\nhost: example.com\r\n\r\n",
  },
  {
    name: "a POST with a known length",
    method: "POST",
    target: "/items",
    headers: [HOST, ["content-type", "text/plain"]],
    body: 11,
    wire:
      "POST /items HTTP/1.1\r\nhost: example.com\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\n",
  },
  {
    name: "a POST with a chunked body",
    method: "POST",
    target: "/items",
    headers: [HOST],
    body: "chunked",
    wire:
      "POST /items HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n",
  },
  {
    name: "a POST without a body as Content-Length: 0",
    method: "POST",
    target: "/",
    headers: [HOST],
    body: "empty",
    wire: "POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\n\r\n",
  },
  {
    name: "a PUT whose known length is zero",
    method: "PUT",
    target: "/",
    headers: [],
    body: 0,
    wire: "PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
  },
  {
    name: "an absolute-form target",
    method: "GET",
    target: "http://example.com:8080/x?y",
    headers: [],
    body: "none",
    wire: "GET http://example.com:8080/x?y HTTP/1.1\r\n\r\n",
  },
  {
    name: "the asterisk-form target of OPTIONS",
    method: "OPTIONS",
    target: "*",
    headers: [],
    body: "none",
    wire: "OPTIONS * HTTP/1.1\r\n\r\n",
  },
  {
    name: "an extension method and header names as given",
    method: "PROPFIND",
    target: "/",
    headers: [["X-Mixed-Case", "v"], ["x-empty", ""], ["x-tab", "a\tb"]],
    body: "none",
    wire:
      "PROPFIND / HTTP/1.1\r\nX-Mixed-Case: v\r\nx-empty: \r\nx-tab: a\tb\r\n\r\n",
  },
];

for (const row of ENCODED) {
  Deno.test(`request head: encodes ${row.name}`, () => {
    const encoded = encodeRequestHead(
      row.method,
      row.target,
      row.headers,
      row.body,
    );
    assert.equal(text(encoded), row.wire);
    assert.equal(encoded.length, row.wire.length);
  });
}

Deno.test("request head: writes a latin1 header value one byte per character, never UTF-8", () => {
  const value = "caf\xe9 \x80\x9f\xa0\xff";
  const encoded = encodeRequestHead("GET", "/", [["x-a", value]], "none");
  const wire = `GET / HTTP/1.1\r\nx-a: ${value}\r\n\r\n`;
  assert.equal(encoded.length, wire.length);
  assert.deepEqual(
    [...encoded],
    [...wire].map((c) => c.charCodeAt(0)),
  );
});

const REFUSED: [string, () => unknown][] = [
  ["a target with a space", () => encodeRequestHead("GET", "/a b", [], "none")],
  ["a target with a tab", () => encodeRequestHead("GET", "/a\tb", [], "none")],
  ["a target with a CR", () => encodeRequestHead("GET", "/a\rb", [], "none")],
  ["a target with an LF", () => encodeRequestHead("GET", "/a\nb", [], "none")],
  ["a target with a NUL", () => encodeRequestHead("GET", "/a\0b", [], "none")],
  [
    "a target with a DEL",
    () => encodeRequestHead("GET", "/a\x7fb", [], "none"),
  ],
  [
    "a target with a character above 0x7E",
    () => encodeRequestHead("GET", "/caf\xe9", [], "none"),
  ],
  [
    "a target with a character above 0xFF whose low byte is LF",
    () => encodeRequestHead("GET", "/a\u010aHost: evil", [], "none"),
  ],
  ["an empty target", () => encodeRequestHead("GET", "", [], "none")],
  ["an empty method", () => encodeRequestHead("", "/", [], "none")],
  [
    "a method with a space",
    () => encodeRequestHead("GET /x HTTP/1.1\r\n\r\nGET", "/", [], "none"),
  ],
  [
    "a method with a separator",
    () => encodeRequestHead("G(T", "/", [], "none"),
  ],
  [
    "a method with a character above 0x7E",
    () => encodeRequestHead("G\xc9T", "/", [], "none"),
  ],
  [
    "a header name with a space",
    () => encodeRequestHead("GET", "/", [["x a", "1"]], "none"),
  ],
  [
    "a header name with a colon",
    () => encodeRequestHead("GET", "/", [["x:a", "1"]], "none"),
  ],
  [
    "an empty header name",
    () => encodeRequestHead("GET", "/", [["", "1"]], "none"),
  ],
  [
    "a header name with CR LF",
    () => encodeRequestHead("GET", "/", [["x\r\ny", "1"]], "none"),
  ],
  [
    "a header value with a CR",
    () => encodeRequestHead("GET", "/", [["x-a", "a\rb"]], "none"),
  ],
  [
    "a header value with an LF",
    () => encodeRequestHead("GET", "/", [["x-a", "a\nb"]], "none"),
  ],
  [
    "a header value with a NUL",
    () => encodeRequestHead("GET", "/", [["x-a", "a\0b"]], "none"),
  ],
  [
    "a header value with U+010A (its low byte is LF)",
    () => encodeRequestHead("GET", "/", [["x-a", "a\u010ab"]], "none"),
  ],
  [
    "a header value with U+0100",
    () => encodeRequestHead("GET", "/", [["x-a", "\u0100"]], "none"),
  ],
  [
    "a header value with a lone surrogate",
    () => encodeRequestHead("GET", "/", [["x-a", "\ud800"]], "none"),
  ],
  [
    "a header value with an emoji",
    () => encodeRequestHead("GET", "/", [["x-a", "\u{1f600}"]], "none"),
  ],
];

for (const [what, encode] of REFUSED) {
  Deno.test(`request head: refuses ${what}`, () => {
    assert.throws(encode, isRequestError);
  });
}

/** Runs `encode` for every input; returns those it did not refuse, with what it wrote. */
function notRefused<T>(
  inputs: T[],
  encode: (input: T) => Uint8Array,
): string[] {
  const accepted: string[] = [];
  for (const input of inputs) {
    try {
      accepted.push(
        `${Deno.inspect(input)} → ${JSON.stringify(text(encode(input)))}`,
      );
    } catch (error) {
      if (!isRequestError(error)) throw error;
    }
  }
  return accepted;
}

Deno.test("request head: refuses a body length that is not a safe non-negative integer", () => {
  // Written today as `content-length: -1`, `1.5`, `NaN`, `Infinity`: not
  // 1*DIGIT. Above 2^53 - 1 the number may not be the one the client sent.
  const lengths = [-1, 1.5, NaN, Infinity, 2 ** 53];
  assert.deepEqual(
    notRefused(lengths, (length) => encodeRequestHead("POST", "/", [], length)),
    [],
  );
});

Deno.test("request head: refuses a caller's Content-Length or Transfer-Encoding", () => {
  // Framing is the transport's: a caller's Content-Length written beside
  // chunked (or beside none, or a second one) lets the upstream split the
  // stream differently from legate. Today they are written as given.
  const cases: [HeaderPair, BodyFraming][] = [
    [["content-length", "5"], "chunked"],
    [["Content-Length", "0"], 5],
    [["transfer-encoding", "chunked"], 5],
    [["content-length", "5"], "none"],
    [["Transfer-Encoding", "chunked"], "empty"],
  ];
  assert.deepEqual(
    notRefused(
      cases,
      ([header, body]) => encodeRequestHead("POST", "/", [header], body),
    ),
    [],
  );
});

Deno.test("frameChunk frames data as hex size, CRLF, data, CRLF", () => {
  const buffer = { bytes: new Uint8Array(0) };
  assert.equal(
    text(frameChunk([new TextEncoder().encode("hello")], buffer, false)),
    "5\r\nhello\r\n",
  );
  assert.equal(
    text(frameChunk([new Uint8Array(26).fill(0x78)], buffer, false)),
    `1a\r\n${"x".repeat(26)}\r\n`,
  );
  assert.equal(
    text(frameChunk([new Uint8Array(4096).fill(0x79)], buffer, false)),
    `1000\r\n${"y".repeat(4096)}\r\n`,
  );
});

Deno.test("frameChunk joins parts into one chunk and appends the last chunk when asked", () => {
  const buffer = { bytes: new Uint8Array(0) };
  const parts = [
    new TextEncoder().encode("ab"),
    new Uint8Array(0),
    new TextEncoder().encode("cde"),
  ];
  assert.equal(text(frameChunk(parts, buffer, false)), "5\r\nabcde\r\n");
  assert.equal(
    text(frameChunk(parts, buffer, true)),
    "5\r\nabcde\r\n0\r\n\r\n",
  );
  assert.equal(text(frameChunk([], buffer, true)), "0\r\n\r\n");
  assert.throws(
    () => frameChunk([new Uint8Array(0)], buffer, false),
    RangeError,
  );
});

Deno.test("frameChunk reuses its buffer for a chunk that fits and grows it for one that does not", () => {
  const buffer = { bytes: new Uint8Array(0) };
  const first = frameChunk([new Uint8Array(10).fill(0x61)], buffer, false);
  const grown = buffer.bytes;
  assert.equal(first.buffer, grown.buffer);
  const second = frameChunk([new Uint8Array(3).fill(0x62)], buffer, false);
  assert.equal(buffer.bytes, grown);
  assert.equal(second.buffer, grown.buffer);
  assert.equal(text(second), "3\r\nbbb\r\n");
  frameChunk([new Uint8Array(100)], buffer, false);
  assert.notEqual(buffer.bytes, grown);
  assert.ok(buffer.bytes.length >= 100 + "64\r\n\r\n".length);
});

/**
 * RFC 9112 edge cases for the response-head and chunk-line parsers, one row
 * per case, on exact bytes (one character per byte in the strings below).
 */
import assert from "node:assert/strict";
import { ProxyError } from "../errors.ts";
import type { HeaderPair } from "../headers.ts";
import { bytes } from "./_scripted_stream.ts";
import {
  checkTrailerLine,
  decodeLatin1,
  type Framing,
  parseChunkSize,
  parseResponseHead,
  type ResponseHead,
} from "./parse.ts";

/** A head's lines joined by CRLF, without the blank line that ends it. */
const lines = (...parts: string[]) => parts.join("\r\n");

const isProtocolError = (error: unknown) =>
  error instanceof ProxyError && error.kind === "http_protocol_error";

type Expected = Partial<{
  status: number;
  statusText: string;
  headers: HeaderPair[];
  contentLength: number | null;
  framing: Framing;
  keepAlive: boolean;
  keepAliveTimeout: number | null;
}>;

interface HeadCase {
  /** What the row shows, as a sentence. */
  readonly name: string;
  /** The head's bytes, one character per byte, without the final CRLF CRLF. */
  readonly head: string;
  /** The request method. @default {"GET"} */
  readonly method?: string;
  /** The parsed fields that matter for the row, or the error it must raise. */
  readonly expect: Expected | "http_protocol_error";
  /** Why the row fails today: what the parser does instead. */
}

const LENGTH_5: Framing = { kind: "length", length: 5 };
const CHUNKED: Framing = { kind: "chunked" };
const CLOSE: Framing = { kind: "close" };
const NONE: Framing = { kind: "none" };

const STATUS_LINES: HeadCase[] = [
  {
    name: "reads an HTTP/1.1 status line with a reason phrase",
    head: "HTTP/1.1 404 Not Found\r\nContent-Length: 5",
    expect: { status: 404, statusText: "Not Found", keepAlive: true },
  },
  {
    name: "reads an HTTP/1.0 status line; the connection closes by default",
    head: "HTTP/1.0 200 OK\r\nContent-Length: 5",
    expect: {
      status: 200,
      statusText: "OK",
      framing: LENGTH_5,
      keepAlive: false,
    },
  },
  {
    name: "accepts a status line without the space and reason phrase",
    head: "HTTP/1.1 200\r\nContent-Length: 5",
    expect: { status: 200, statusText: "", framing: LENGTH_5 },
  },
  {
    name: "accepts a status line with an empty reason phrase",
    head: "HTTP/1.1 200 \r\nContent-Length: 5",
    expect: { status: 200, statusText: "" },
  },
  {
    name: "keeps HTAB, SP and obs-text in a reason phrase byte for byte",
    head: "HTTP/1.1 200 Gr\xfc\xdf\te \x80\xff\r\nContent-Length: 5",
    expect: { status: 200, statusText: "Gr\xfc\xdf\te \x80\xff" },
  },
  ...["\x00", "\x01", "\x08", "\x0b", "\x1f", "\x7f"].map((c) => ({
    name: `drops a reason phrase holding ${
      JSON.stringify(c)
    } but keeps the response`,
    head: `HTTP/1.1 200 O${c}K\r\nContent-Length: 5\r\nX-A: 1`,
    expect: {
      status: 200,
      statusText: "",
      framing: LENGTH_5,
      headers: [["x-a", "1"]] as HeaderPair[],
    },
  })),
  {
    name:
      "rejects a bare LF in the status line: a lenient reader sees a header line there",
    head: "HTTP/1.1 200 OK\nContent-Length: 0\r\nX-A: 1",
    expect: "http_protocol_error",
  },
  {
    name: "accepts the lowest interim status, 100",
    head: "HTTP/1.1 100 Continue",
    expect: { status: 100, framing: NONE },
  },
  {
    name: "accepts the highest status, 599",
    head: "HTTP/1.1 599 Custom\r\nContent-Length: 5",
    expect: { status: 599 },
  },
  ...[
    ["a status below 100", "HTTP/1.1 099 Low"],
    ["a status above 599", "HTTP/1.1 600 High"],
    ["a four-digit status", "HTTP/1.1 1000 Big"],
    ["a two-digit status", "HTTP/1.1 20 Short"],
    ["a status that is not digits", "HTTP/1.1 abc OK"],
    ["a status with a sign", "HTTP/1.1 +20 OK"],
    ["two spaces before the status", "HTTP/1.1  200 OK"],
    ["a tab before the status", "HTTP/1.1\t200 OK"],
    ["a tab after the status", "HTTP/1.1 200\tOK"],
    ["HTTP/2.0", "HTTP/2.0 200 OK"],
    ["HTTP/1.2", "HTTP/1.2 200 OK"],
    ["HTTP/1 without a minor version", "HTTP/1 200 OK"],
    ["a lowercase HTTP-name", "http/1.1 200 OK"],
    ["whitespace before the status line", " HTTP/1.1 200 OK"],
    ["an empty line before the status line", "\r\nHTTP/1.1 200 OK"],
    ["an empty head", ""],
    ["an HTTP/0.9-style body instead of a head", "<html>"],
  ].map(([what, head]) => ({
    name: `rejects ${what}`,
    head: `${head}\r\nContent-Length: 5`,
    expect: "http_protocol_error" as const,
  })),
];

const FRAMING: HeadCase[] = [
  {
    name: "gives a HEAD response no body whatever its Content-Length says",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5",
    method: "HEAD",
    expect: { framing: NONE, contentLength: 5, keepAlive: true },
  },
  {
    name: "gives a HEAD response no body even when it says chunked",
    head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
    method: "HEAD",
    expect: { framing: NONE, contentLength: null, keepAlive: true },
  },
  {
    name: "gives a HEAD response without framing headers no body, kept alive",
    head: "HTTP/1.1 200 OK",
    method: "HEAD",
    expect: { framing: NONE, keepAlive: true },
  },
  {
    name: "gives a 1xx response no body whatever it says",
    head: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 5",
    expect: { status: 103, framing: NONE, headers: [["link", "</a>"]] },
  },
  {
    name: "gives a 101 response no body",
    head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket",
    expect: { status: 101, framing: NONE },
  },
  {
    name: "gives a 204 response no body whatever its Content-Length says",
    head: "HTTP/1.1 204 No Content\r\nContent-Length: 5",
    expect: { framing: NONE, contentLength: 5, keepAlive: true },
  },
  {
    name: "gives a 204 response no body even when it says chunked",
    head: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked",
    expect: { framing: NONE, keepAlive: true },
  },
  {
    name: "gives a 304 response no body; its Content-Length is the GET's",
    head: "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234",
    expect: { framing: NONE, contentLength: 1234, keepAlive: true },
  },
  {
    name: "still validates the Content-Length of a response without a body",
    head: "HTTP/1.1 304 Not Modified\r\nContent-Length: 12a",
    expect: "http_protocol_error",
  },
  {
    name: "still refuses an unknown Transfer-Encoding on a HEAD response",
    head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
    method: "HEAD",
    expect: "http_protocol_error",
  },
  {
    name: "reads Transfer-Encoding: chunked",
    head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
    expect: { framing: CHUNKED, contentLength: null, keepAlive: true },
  },
  ...["Chunked", "CHUNKED", " \tchunked\t ", "chunked, ", ", chunked"].map((
    value,
  ) => ({
    name: `reads Transfer-Encoding ${JSON.stringify(value)} as chunked`,
    head: `HTTP/1.1 200 OK\r\nTransfer-Encoding:${value}`,
    expect: { framing: CHUNKED, headers: [] as HeaderPair[] },
  })),
  {
    name:
      "lets chunked win over Content-Length, forgets the length and closes after",
    head:
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-A: 1",
    expect: {
      framing: CHUNKED,
      contentLength: null,
      keepAlive: false,
      headers: [["x-a", "1"]],
    },
  },
  {
    name: "lets chunked win over a Content-Length sent after it",
    head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
    expect: { framing: CHUNKED, contentLength: null, keepAlive: false },
  },
  ...[
    ["gzip", "gzip"],
    ["identity", "identity"],
    ["chunked twice in one field", "chunked, chunked"],
    ["chunked twice in two fields", "chunked\r\nTransfer-Encoding: chunked"],
    ["gzip before chunked", "gzip, chunked"],
    ["chunked before gzip", "chunked, gzip"],
    ["chunked with a parameter", "chunked;q=1"],
    ["an empty value", ""],
    ["only commas", " , ,"],
    ["chunked with a trailing NBSP (0xA0)", "chunked\xa0"],
  ].map(([what, value]) => ({
    name: `rejects Transfer-Encoding ${what}`,
    head: `HTTP/1.1 200 OK\r\nTransfer-Encoding: ${value}`,
    expect: "http_protocol_error" as const,
  })),
  {
    name: "rejects Transfer-Encoding in an HTTP/1.0 response",
    head: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked",
    expect: "http_protocol_error",
  },
  {
    name:
      "rejects Transfer-Encoding in an HTTP/1.0 response even with a Content-Length",
    head: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
    expect: "http_protocol_error",
  },
  {
    name: "reads Content-Length framing",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5",
    expect: {
      framing: LENGTH_5,
      contentLength: 5,
      keepAlive: true,
      headers: [],
    },
  },
  {
    name: "reads Content-Length: 0 as an empty body on a kept connection",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 0",
    expect: {
      framing: { kind: "length", length: 0 },
      contentLength: 0,
      keepAlive: true,
    },
  },
  {
    name: "accepts the same Content-Length twice in two fields",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5",
    expect: { framing: LENGTH_5, contentLength: 5 },
  },
  ...["5, 5", "5,5", "5 ,\t5", "5, 5, 5"].map((value) => ({
    name: `accepts a Content-Length list of equal values ${
      JSON.stringify(value)
    }`,
    head: `HTTP/1.1 200 OK\r\nContent-Length: ${value}`,
    expect: { framing: LENGTH_5, contentLength: 5 },
  })),
  {
    name: "accepts leading zeros in a Content-Length",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 005",
    expect: { framing: LENGTH_5, contentLength: 5 },
  },
  {
    name: "accepts the largest safe integer as a Content-Length",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 9007199254740991",
    expect: {
      framing: { kind: "length", length: 9007199254740991 },
      contentLength: 9007199254740991,
    },
  },
  ...[
    ["differing values in two fields", "5\r\nContent-Length: 6"],
    ["differing values in a list", "5, 6"],
    ["an empty list element", "5,,5"],
    ["a leading comma", ", 5"],
    ["a plus sign", "+5"],
    ["a minus sign", "-5"],
    ["a space inside", "5 5"],
    ["a hex value", "0x5"],
    ["hex digits", "5a"],
    ["a decimal point", "5.0"],
    ["an exponent", "5e0"],
    ["an empty value", ""],
    ["a trailing NBSP (0xA0)", "5\xa0"],
    ["2^53", "9007199254740992"],
    ["twenty digits", "18446744073709551616"],
  ].map(([what, value]) => ({
    name: `rejects a Content-Length with ${what}`,
    head: `HTTP/1.1 200 OK\r\nContent-Length: ${value}`,
    expect: "http_protocol_error" as const,
  })),
  {
    name: "reads a response without framing headers to the close",
    head: "HTTP/1.1 200 OK\r\nX-A: 1",
    expect: { framing: CLOSE, contentLength: null, keepAlive: false },
  },
  {
    name:
      "reads a response without framing to the close even when it says keep-alive",
    head: "HTTP/1.0 200 OK\r\nConnection: keep-alive",
    expect: { framing: CLOSE, keepAlive: false },
  },
];

const KEEP_ALIVE: HeadCase[] = [
  {
    name: "keeps an HTTP/1.1 connection alive by default",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5",
    expect: { keepAlive: true },
  },
  ...[
    "close",
    "Close",
    "CLOSE",
    "x-a, close",
    "close , x-a",
    ",close,",
    "keep-alive, close",
    "x-a\r\nConnection: close",
  ].map((value) => ({
    name: `closes an HTTP/1.1 connection on Connection ${
      JSON.stringify(value)
    }`,
    head: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: ${value}`,
    expect: { keepAlive: false },
  })),
  ...["closed", "x-close", "close-later", "keep-alive", "upgrade"].map((
    value,
  ) => ({
    name: `keeps an HTTP/1.1 connection alive on Connection ${
      JSON.stringify(value)
    }: a token merely containing "close" is another token`,
    head: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: ${value}`,
    expect: { keepAlive: true },
  })),
  {
    name: "closes an HTTP/1.0 connection by default",
    head: "HTTP/1.0 200 OK\r\nContent-Length: 5",
    expect: { keepAlive: false },
  },
  ...["keep-alive", "Keep-Alive", "x-a, keep-alive"].map((value) => ({
    name: `keeps an HTTP/1.0 connection alive on Connection ${
      JSON.stringify(value)
    }`,
    head: `HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: ${value}`,
    expect: { keepAlive: true },
  })),
  {
    name: "closes an HTTP/1.0 connection on Connection keep-alive-ish",
    head: "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive-ish",
    expect: { keepAlive: false },
  },
  {
    name:
      "closes an HTTP/1.0 connection that says both keep-alive and close (RFC 9112 9.3: close is checked first)",
    head:
      "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, close",
    expect: { keepAlive: false },
  },
  {
    name: "reads Keep-Alive: timeout=5, max=100 as a 5 s keep-alive timeout",
    head:
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5, max=100",
    expect: {
      keepAliveTimeout: 5,
      headers: [["keep-alive", "timeout=5, max=100"]],
    },
  },
  {
    name: "reads a keep-alive timeout that is not the first parameter",
    head:
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: max=100,timeout=7",
    expect: { keepAliveTimeout: 7 },
  },
  {
    name: "reads a keep-alive timeout with spaces around the equals sign",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: Timeout = 3",
    expect: { keepAliveTimeout: 3 },
  },
  ...["timeout=abc", "timeout=-1", "xtimeout=5", "timeout=5s", 'timeout="5"']
    .map((value) => ({
      name: `ignores Keep-Alive ${JSON.stringify(value)}`,
      head: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: ${value}`,
      expect: { keepAliveTimeout: null },
    })),
  {
    name: "has no keep-alive timeout without a Keep-Alive header",
    head: "HTTP/1.1 200 OK\r\nContent-Length: 5",
    expect: { keepAliveTimeout: null },
  },
];

/** Every byte RFC 9110 forbids in a field value, but HTAB. */
const VALUE_CONTROLS = [
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)).filter(
    (c) => c !== "\t",
  ),
  "\x7f",
];
const OBS_TEXT = Array.from(
  { length: 0x80 },
  (_, i) => String.fromCharCode(0x80 + i),
).join("");

const HEADERS: HeadCase[] = [
  {
    name:
      "lowercases names, keeps order and repeats, and leaves out framing fields",
    head: lines(
      "HTTP/1.1 200 OK",
      "X-Custom: a",
      "Set-Cookie: a=1",
      "Content-Length: 5",
      "set-cookie: b=2",
      "CONNECTION: keep-alive",
    ),
    expect: {
      headers: [
        ["x-custom", "a"],
        ["set-cookie", "a=1"],
        ["set-cookie", "b=2"],
        ["connection", "keep-alive"],
      ],
    },
  },
  {
    name: "trims SP and HTAB around a value and keeps them inside",
    head: "HTTP/1.1 200 OK\r\nX-A: \t a \t b \t ",
    expect: { headers: [["x-a", "a \t b"]] },
  },
  {
    name: "keeps an NBSP (0xA0) at either edge of a value: it is not OWS",
    head: "HTTP/1.1 200 OK\r\nX-A: \xa0a\xa0 ",
    expect: { headers: [["x-a", "\xa0a\xa0"]] },
  },
  {
    name: "keeps every obs-text byte 0x80–0xFF of a value, byte for byte",
    head: `HTTP/1.1 200 OK\r\nX-A: ${OBS_TEXT}`,
    expect: { headers: [["x-a", OBS_TEXT]] },
  },
  {
    name: "accepts a header without a value",
    head: "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Blank: \t",
    expect: { headers: [["x-empty", ""], ["x-blank", ""]] },
  },
  {
    name: "keeps a colon inside a value",
    head: "HTTP/1.1 200 OK\r\nX-A: b:c: d",
    expect: { headers: [["x-a", "b:c: d"]] },
  },
  {
    name: "accepts every token character in a name",
    head: "HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~09Az: v",
    expect: { headers: [["!#$%&'*+-.^_`|~09az", "v"]] },
  },
  {
    name: "rejects an obs-fold continuation line starting with SP",
    head: "HTTP/1.1 200 OK\r\nX-A: a\r\n b",
    expect: "http_protocol_error",
  },
  {
    name: "rejects an obs-fold continuation line starting with HTAB",
    head: "HTTP/1.1 200 OK\r\nX-A: a\r\n\tb",
    expect: "http_protocol_error",
  },
  ...[
    ["a space before the colon", "X-A : a"],
    ["a tab before the colon", "X-A\t: a"],
    ["whitespace before the name", " X-A: a"],
    ["an empty name", ": a"],
    ["no colon", "X-A"],
    ["an empty line", ""],
    ["a separator in the name", "X(A): a"],
    ["an @ in the name", "X@A: a"],
    ["a space in the name", "X A: a"],
    ["obs-text in the name", "X-\xe9: a"],
    ["a NUL in the name", "X\x00A: a"],
    ["a bare CR in the name", "X\rA: a"],
    ["a bare LF in the name", "X\nA: a"],
    ["a status line", "HTTP/1.1 200 OK"],
  ].map(([what, line]) => ({
    name: `rejects a header line with ${what}`,
    head: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\n${line}`,
    expect: "http_protocol_error" as const,
  })),
  ...VALUE_CONTROLS.map((c) => ({
    name: `rejects ${JSON.stringify(c)} inside a header value`,
    head: `HTTP/1.1 200 OK\r\nX-A: a${c}b\r\nContent-Length: 5`,
    expect: "http_protocol_error" as const,
  })),
  {
    name: "rejects a bare CR at the end of a header value",
    head: "HTTP/1.1 200 OK\r\nX-A: a\r\r\nContent-Length: 5",
    expect: "http_protocol_error",
  },
  {
    name:
      "rejects a bare LF that would hide a second Content-Length inside a value",
    head: "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 0\r\nContent-Length: 5",
    expect: "http_protocol_error",
  },
];

const HEAD_CASES: HeadCase[] = [
  ...STATUS_LINES,
  ...FRAMING,
  ...KEEP_ALIVE,
  ...HEADERS,
];

function check(row: HeadCase): void {
  const parse = () => parseResponseHead(bytes(row.head), row.method ?? "GET");
  if (row.expect === "http_protocol_error") {
    assert.throws(parse, isProtocolError, `${JSON.stringify(row.head)}`);
    return;
  }
  const head: ResponseHead = parse();
  for (const [key, value] of Object.entries(row.expect)) {
    assert.deepEqual(
      head[key as keyof ResponseHead],
      value,
      `${key} of ${JSON.stringify(row.head)}`,
    );
  }
}

for (const row of HEAD_CASES) {
  Deno.test(`response head: ${row.name}`, () => check(row));
}

Deno.test("response head: every row of the table has a distinct name", () => {
  const names = HEAD_CASES.map((row) => row.name);
  assert.deepEqual(names, [...new Set(names)]);
});

Deno.test("response head: a complete result for a typical response", () => {
  const head = parseResponseHead(
    bytes(lines(
      "HTTP/1.1 201 Created",
      "Location: /items/7",
      "Content-Length: 2",
      "Keep-Alive: timeout=5, max=100",
    )),
    "POST",
  );
  assert.deepEqual(head, {
    status: 201,
    statusText: "Created",
    headers: [["location", "/items/7"], ["keep-alive", "timeout=5, max=100"]],
    contentLength: 2,
    framing: { kind: "length", length: 2 },
    keepAlive: true,
    keepAliveTimeout: 5,
  });
});

interface ChunkSizeCase {
  readonly line: string;
  readonly expect: number | "http_protocol_error";
  readonly name: string;
}

const CHUNK_SIZES: ChunkSizeCase[] = [
  { name: "reads a single hex digit", line: "5", expect: 5 },
  { name: "reads the last-chunk size", line: "0", expect: 0 },
  { name: "reads lowercase hex digits", line: "1a", expect: 26 },
  { name: "reads uppercase hex digits", line: "1A", expect: 26 },
  { name: "reads mixed-case hex digits", line: "fF", expect: 255 },
  { name: "reads leading zeros", line: "000000000000000000001f", expect: 31 },
  { name: "reads a last chunk with leading zeros", line: "0000", expect: 0 },
  { name: "ignores an extension without a value", line: "5;name", expect: 5 },
  {
    name: "ignores an extension with a value",
    line: "5;name=value",
    expect: 5,
  },
  {
    name: "ignores an extension with a quoted value",
    line: '5;name="a ; b"',
    expect: 5,
  },
  { name: "ignores several extensions", line: "5;a=1;b;c=2", expect: 5 },
  { name: "accepts BWS (SP) before a semicolon", line: "5 ;a=1", expect: 5 },
  { name: "accepts BWS (HTAB) before a semicolon", line: "5\t;a", expect: 5 },
  { name: "accepts BWS after a semicolon", line: "5; a = 1", expect: 5 },
  { name: "ignores an extension on the last chunk", line: "0;x=y", expect: 0 },
  {
    name: "reads thirteen significant hex digits",
    line: "fffffffffffff",
    expect: 0xfffffffffffff,
  },
  {
    name: "reads thirteen significant digits after leading zeros",
    line: "000fffffffffffff",
    expect: 0xfffffffffffff,
  },
  ...[
    ["an empty line", ""],
    ["a negative size", "-1"],
    ["a plus sign", "+1"],
    ["a 0x prefix", "0x1"],
    ["a space before the digits", " 5"],
    ["a tab before the digits", "\t5"],
    ["a space inside the digits", "5 5"],
    ["a non-hex digit", "g"],
    ["a decimal point", "1.5"],
    ["an extension without a size", ";a=1"],
    ["fourteen significant digits", "10000000000000"],
    ["twenty significant digits", "ffffffffffffffffffff"],
    ["a bare CR at the end", "5\r"],
    ["a bare CR inside an extension", "5;a\rb"],
    ["a control byte inside an extension", "5;a\x01"],
    ["a DEL inside an extension", "5;a\x7f"],
    ["a NUL after the digits", "5\x00"],
  ].map(([what, line]) => ({
    name: `rejects ${what}`,
    line: line!,
    expect: "http_protocol_error" as const,
  })),
  {
    name:
      "rejects whitespace after the size without an extension (RFC 9112 7.1)",
    line: "5 ",
    expect: "http_protocol_error",
  },
  {
    name:
      "rejects a semicolon without an extension name (RFC 9112 7.1.1: chunk-ext-name is a token)",
    line: "5;",
    expect: "http_protocol_error",
  },
];

for (const row of CHUNK_SIZES) {
  Deno.test(`chunk size: ${row.name}`, () => {
    if (row.expect === "http_protocol_error") {
      assert.throws(
        () => parseChunkSize(row.line),
        isProtocolError,
        JSON.stringify(row.line),
      );
    } else {
      assert.equal(parseChunkSize(row.line), row.expect);
    }
  });
}

const TRAILERS_ACCEPTED: [string, string][] = [
  ["a field line", "X-Checksum: abc"],
  ["a field without a value", "X-Empty:"],
  ["HTAB and obs-text in a value", "X-A: a\tb \x80\xff"],
  ["a framing field (it is dropped, never applied)", "Content-Length: 5"],
];
const TRAILERS_REJECTED: [string, string][] = [
  ["a fake status line", "HTTP/1.1 200 OK"],
  ["a fake status line with a colon", "HTTP/1.1 200 OK: x"],
  ["an obs-fold continuation", " folded: value"],
  ["a space before the colon", "X-A : a"],
  ["an empty name", ": a"],
  ["no colon", "X-A"],
  ["a NUL in the value", "X-A: a\x00"],
  ["a control byte in the value", "X-A: a\x01"],
  ["a DEL in the value", "X-A: a\x7f"],
  ["a bare CR in the value", "X-A: a\rb"],
  ["obs-text in the name", "X\x80: a"],
];

for (const [what, line] of TRAILERS_ACCEPTED) {
  Deno.test(`trailer line: accepts ${what}`, () => {
    checkTrailerLine(line);
  });
}
for (const [what, line] of TRAILERS_REJECTED) {
  Deno.test(`trailer line: rejects ${what}`, () => {
    assert.throws(() => checkTrailerLine(line), isProtocolError);
  });
}

Deno.test("decodeLatin1 maps every byte to the character of the same code", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const decoded = decodeLatin1(all);
  assert.equal(decoded.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(decoded.charCodeAt(i), i);
});

Deno.test("decodeLatin1 keeps bytes 0x80–0x9F exact in input longer than one slice", () => {
  const input = Uint8Array.from({ length: 20_000 }, (_, i) => 0x80 + (i % 32));
  const decoded = decodeLatin1(input);
  assert.equal(decoded.length, input.length);
  for (let i = 0; i < input.length; i++) {
    assert.equal(decoded.charCodeAt(i), input[i]);
  }
});

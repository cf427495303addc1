/**
 * Seeded fuzzing of the response parser and body framing on a fake socket.
 *
 * 1. Segmentation: two valid responses back to back, delivered in random
 *    read sizes, parse into exactly what they parse into when delivered at
 *    once, and the first body ends exactly where the second response
 *    begins: legate never desynchronises two exchanges on one connection.
 * 2. Mutation: valid responses with bytes flipped, inserted, deleted or
 *    duplicated either parse into a result that keeps every invariant, or
 *    fail with a `ProxyError` and nothing else; delivered in random read
 *    sizes they end the same way; and no case reads or pulls without bound.
 *
 * Case `i` of a property draws from `mulberry32(SEED + i)`, so a failure
 * names the one case to replay. Change `SEED` locally to explore further.
 */
import assert from "node:assert/strict";
import { ProxyError } from "../errors.ts";
import { mulberry32, ScriptedStream, text } from "./_scripted_stream.ts";
import { responseBodyStream } from "./body.ts";
import { Http1Connection } from "./connection.ts";
import { parseResponseHead, type ResponseHead } from "./parse.ts";

const SEED = 0x1e6a7e;
const SEGMENTATION_CASES = 2_000;
const MUTATION_CASES = 3_000;

/** A valid response and what it parses into. */
interface Sample {
  readonly name: string;
  readonly method: string;
  /** The exact bytes, one character per byte. */
  readonly wire: string;
  /** The final status. */
  readonly status: number;
  readonly body: string;
  /** Whether the body ends by its framing rather than by the close. */
  readonly delimited: boolean;
}

const CHUNKED = "Transfer-Encoding: chunked\r\n";
/** A body that looks like the end of a head and a whole response. */
const FAKE = "\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

const SAMPLES: Sample[] = [
  {
    name: "length",
    method: "GET",
    wire: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
    status: 200,
    body: "hello",
    delimited: true,
  },
  {
    name: "length with repeated equal Content-Length",
    method: "POST",
    wire:
      "HTTP/1.1 201 Created\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\nabc",
    status: 201,
    body: "abc",
    delimited: true,
  },
  {
    name: "empty length",
    method: "GET",
    wire: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    status: 200,
    body: "",
    delimited: true,
  },
  {
    name: "length holding a fake response",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: ${FAKE.length}\r\n\r\n${FAKE}`,
    status: 200,
    body: FAKE,
    delimited: true,
  },
  {
    name: "chunked with extensions and trailers",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\n${CHUNKED}\r\n` +
      '5;ext=1\r\nhello\r\n1 ;a;b="c"\r\n \r\n0005\r\nworld\r\n' +
      "0\r\nX-Checksum: abc\r\n\r\n",
    status: 200,
    body: "hello world",
    delimited: true,
  },
  {
    name: "chunked with uppercase sizes",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n` +
      `1A\r\n${"z".repeat(26)}\r\nA\r\n0123456789\r\n0\r\n\r\n`,
    status: 200,
    body: `${"z".repeat(26)}0123456789`,
    delimited: true,
  },
  {
    name: "empty chunked",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\n${CHUNKED}\r\n0\r\n\r\n`,
    status: 200,
    body: "",
    delimited: true,
  },
  {
    name: "HEAD with a length",
    method: "HEAD",
    wire: "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
    status: 200,
    body: "",
    delimited: true,
  },
  {
    name: "HEAD saying chunked",
    method: "HEAD",
    wire: `HTTP/1.1 200 OK\r\n${CHUNKED}\r\n`,
    status: 200,
    body: "",
    delimited: true,
  },
  {
    name: "204",
    method: "DELETE",
    wire: "HTTP/1.1 204 No Content\r\nX-A: \xe9\x80\xff\r\n\r\n",
    status: 204,
    body: "",
    delimited: true,
  },
  {
    name: "304 with its GET's length",
    method: "GET",
    wire:
      'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "x"\r\n\r\n',
    status: 304,
    body: "",
    delimited: true,
  },
  {
    name: "100 Continue then length",
    method: "PUT",
    wire: "HTTP/1.1 100 Continue\r\n\r\n" +
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    status: 200,
    body: "ok",
    delimited: true,
  },
  {
    name: "103 Early Hints then chunked",
    method: "GET",
    wire: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
      `HTTP/1.1 200 OK\r\n${CHUNKED}\r\n3\r\nabc\r\n0\r\n\r\n`,
    status: 200,
    body: "abc",
    delimited: true,
  },
  {
    name: "HTTP/1.0 keep-alive with length and timeout",
    method: "GET",
    wire: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" +
      "Keep-Alive: timeout=5, max=100\r\nContent-Length: 4\r\n\r\n1.0!",
    status: 200,
    body: "1.0!",
    delimited: true,
  },
  {
    name: "closing length",
    method: "GET",
    wire:
      "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 4\r\n\r\nfail",
    status: 500,
    body: "fail",
    delimited: true,
  },
  {
    name: "close-delimited",
    method: "GET",
    wire:
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil\r\n\r\nthe end",
    status: 200,
    body: "until\r\n\r\nthe end",
    delimited: false,
  },
  {
    name: "HTTP/1.0 close-delimited",
    method: "GET",
    wire: "HTTP/1.0 200\r\n\r\n0\r\n\r\n",
    status: 200,
    body: "0\r\n\r\n",
    delimited: false,
  },
];

const DELIMITED = SAMPLES.filter((s) => s.delimited);

/** What reading one exchange gave: its heads, body and finish calls. */
interface Exchange {
  readonly heads: ResponseHead[];
  readonly body: string;
  readonly finishes: boolean[];
}

/**
 * Reads interim heads, the final head and its body as client.ts does.
 * Throws what the code under test throws; an `Error` (not a ProxyError)
 * when a body pulls more than `maxPulls` times without ending.
 */
async function readExchange(
  connection: Http1Connection,
  method: string,
  maxPulls: number,
  finishes: boolean[],
): Promise<Exchange> {
  const heads: ResponseHead[] = [];
  let head: ResponseHead;
  do {
    head = parseResponseHead(await connection.readHead(), method);
    heads.push(head);
  } while (head.status < 200 && head.status !== 101);
  const body = responseBodyStream(
    connection,
    head.framing,
    60_000,
    "fuzz",
    (clean) => finishes.push(clean),
  );
  const reader = body.getReader();
  let received = "";
  for (let pulls = 0;; pulls++) {
    if (pulls > maxPulls) {
      await reader.cancel();
      throw new Error(`the body pulled ${pulls} times without ending`);
    }
    const { done, value } = await reader.read();
    if (done) break;
    received += text(value);
  }
  return { heads, body: received, finishes };
}

type Segmenter = (remaining: number) => number;

/** Read sizes for one case: single bytes, small, medium, or any size. */
function randomSegmenter(random: () => number): Segmenter {
  const draw = (max: number) => 1 + Math.floor(random() * max);
  switch (Math.floor(random() * 4)) {
    case 0:
      return () => 1;
    case 1:
      return () => draw(8);
    case 2:
      return () => draw(64);
    default:
      return (remaining) => draw(remaining);
  }
}

/** Reads one sample alone, all at once, never reading past its bytes when delimited. */
async function readAlone(sample: Sample): Promise<Exchange> {
  const stream = new ScriptedStream(sample.wire, {
    afterEnd: sample.delimited ? "fail" : "eof",
  });
  const connection = new Http1Connection(stream);
  const exchange = await readExchange(
    connection,
    sample.method,
    sample.wire.length + 4,
    [],
  );
  if (sample.delimited) {
    assert.equal(connection.buffered + stream.undelivered, 0, sample.name);
  }
  return exchange;
}

/** The bytes as a JSON string with every byte above 0x7E escaped, so none hides. */
const show = (wire: string) =>
  JSON.stringify(wire).replace(
    /[\x7f-\xff]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16)}`,
  );

const replay = (property: string, i: number, wire: string) =>
  `${property} case ${i} (mulberry32(${SEED} + ${i})): ${show(wire)}`;

Deno.test("every fuzz sample reads as expected when alone", async () => {
  for (const sample of SAMPLES) {
    const { heads, body, finishes } = await readAlone(sample);
    assert.equal(heads.at(-1)!.status, sample.status, sample.name);
    assert.equal(body, sample.body, sample.name);
    assert.deepEqual(finishes, [true], sample.name);
    assert.equal(heads.at(-1)!.framing.kind !== "close", sample.delimited);
  }
});

Deno.test(`random segmentation never desynchronises two responses on one connection (seed ${SEED}, ${SEGMENTATION_CASES} cases)`, async () => {
  const alone = new Map<Sample, Exchange>();
  for (const sample of SAMPLES) alone.set(sample, await readAlone(sample));
  for (let i = 0; i < SEGMENTATION_CASES; i++) {
    const random = mulberry32(SEED + i);
    const first = DELIMITED[Math.floor(random() * DELIMITED.length)]!;
    const second = SAMPLES[Math.floor(random() * SAMPLES.length)]!;
    const wire = first.wire + second.wire;
    const where = replay("segmentation", i, wire);
    const stream = new ScriptedStream(wire, {
      segment: randomSegmenter(random),
      readBudget: wire.length + 8,
    });
    const connection = new Http1Connection(stream);
    const one = await readExchange(connection, first.method, wire.length, []);
    assert.deepEqual(one, alone.get(first), where);
    // The first body ended exactly where the second response begins.
    assert.equal(
      connection.buffered + stream.undelivered,
      second.wire.length,
      where,
    );
    const two = await readExchange(connection, second.method, wire.length, []);
    assert.deepEqual(two, alone.get(second), where);
    assert.equal(connection.buffered + stream.undelivered, 0, where);
    assert.equal(stream.overBudget, false, where);
  }
});

/** Bytes a mutation inserts or writes over: line ends, NUL, list and value syntax, obs-text. */
const SPECIAL = [
  "\r",
  "\n",
  "\r\n",
  "\r\n\r\n",
  "\0",
  ",",
  " ",
  "\t",
  ":",
  ";",
  "-",
  "0",
  "9",
  "f",
  "\x7f",
  "\x80",
  "\xa0",
  "\xff",
];

/** Whole lines a mutation inserts after a line end: framing and connection fields that conflict. */
const LINES = [
  "Content-Length: 0\r\n",
  "Content-Length: 5\r\n",
  "Content-Length: 5, 6\r\n",
  "Transfer-Encoding: chunked\r\n",
  "Transfer-Encoding: gzip, chunked\r\n",
  "Connection: close\r\n",
  "Connection: keep-alive\r\n",
  "Keep-Alive: timeout=1\r\n",
  " folded\r\n",
  "\r\n",
  "0\r\n",
  "5\r\nhello\r\n",
  "HTTP/1.1 200 OK\r\n",
];

function mutate(wire: string, random: () => number): string {
  const pick = (n: number) => Math.floor(random() * n);
  const byte = () =>
    random() < 0.5
      ? SPECIAL[pick(SPECIAL.length)]!
      : String.fromCharCode(random() < 0.5 ? 0x80 + pick(0x80) : pick(0x100));
  let out = wire;
  for (let n = 1 + pick(4); n > 0; n--) {
    const at = pick(out.length + 1);
    switch (pick(8)) {
      case 0: { // flip one bit
        if (at === out.length) break;
        const flipped = out.charCodeAt(at) ^ (1 << pick(8));
        out = out.slice(0, at) + String.fromCharCode(flipped) +
          out.slice(at + 1);
        break;
      }
      case 1: // insert
        out = out.slice(0, at) + byte() + out.slice(at);
        break;
      case 2: // overwrite
        out = out.slice(0, at) + byte() + out.slice(at + 1);
        break;
      case 3: // delete a few bytes
        out = out.slice(0, at) + out.slice(at + 1 + pick(4));
        break;
      case 4: { // duplicate a span
        const span = out.slice(at, at + 1 + pick(16));
        out = out.slice(0, at) + span + out.slice(at);
        break;
      }
      case 5: { // insert a whole line after a line end
        const lineEnd = out.indexOf("\r\n", at);
        if (lineEnd < 0) break;
        out = out.slice(0, lineEnd + 2) + LINES[pick(LINES.length)]! +
          out.slice(lineEnd + 2);
        break;
      }
      case 6: // swap the HTTP version of a status line
        out = out.replace(
          /HTTP\/1\.[01]/g,
          (v) =>
            random() < 0.5 ? v : v === "HTTP/1.1" ? "HTTP/1.0" : "HTTP/1.1",
        );
        break;
      default: // change a digit, where lengths and sizes live
        out = out.replace(/\d/g, (d) => random() < 0.1 ? String(pick(10)) : d);
    }
  }
  return out;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** The invariants of a head and body that parsed. */
function checkInvariants(exchange: Exchange, where: string): void {
  const { heads, body, finishes } = exchange;
  assert.deepEqual(finishes, [true], where);
  for (const [index, head] of heads.entries()) {
    const final = index === heads.length - 1;
    assert.ok(
      Number.isInteger(head.status) && head.status >= 100 &&
        head.status <= 599,
      `status ${head.status}: ${where}`,
    );
    assert.equal(head.status >= 200 || head.status === 101, final, where);
    assert.match(head.statusText, FIELD_VALUE, where);
    for (const [name, value] of head.headers) {
      assert.match(name, TOKEN, where);
      assert.ok(
        name !== "content-length" && name !== "transfer-encoding",
        where,
      );
      assert.match(value, FIELD_VALUE, where);
      assert.doesNotMatch(value, /^[ \t]|[ \t]$/, where);
    }
    assert.ok(
      head.contentLength === null ||
        (Number.isSafeInteger(head.contentLength) && head.contentLength >= 0),
      `contentLength ${head.contentLength}: ${where}`,
    );
    assert.ok(
      head.keepAliveTimeout === null ||
        (Number.isSafeInteger(head.keepAliveTimeout) &&
          head.keepAliveTimeout >= 0),
      where,
    );
    if (head.framing.kind === "length") {
      assert.ok(Number.isSafeInteger(head.framing.length), where);
      assert.equal(head.framing.length, head.contentLength, where);
      if (final) assert.equal(body.length, head.framing.length, where);
    }
    if (head.framing.kind === "close") assert.equal(head.keepAlive, false);
    const connection = head.headers.filter(([name]) => name === "connection")
      .flatMap(([, value]) => value.toLowerCase().split(","))
      .map((token) => token.replace(/^[ \t]+|[ \t]+$/g, ""));
    if (connection.includes("close")) {
      assert.equal(head.keepAlive, false, `close ignored: ${where}`);
    }
    if (final && head.framing.kind === "none") assert.equal(body, "", where);
    if (!final) assert.equal(head.framing.kind, "none", where);
  }
}

/** How reading `wire` as up to two exchanges ends: what parsed, then the error kind if any. */
async function outcome(
  wire: string,
  method: string,
  segment: Segmenter,
  where: string,
): Promise<{ exchanges: Exchange[]; error: string | null }> {
  const budget = wire.length + 8;
  const stream = new ScriptedStream(wire, { segment, readBudget: budget });
  const connection = new Http1Connection(stream);
  const exchanges: Exchange[] = [];
  let error: string | null = null;
  while (exchanges.length < 2) {
    const finishes: boolean[] = [];
    let exchange: Exchange;
    try {
      exchange = await readExchange(connection, method, budget, finishes);
    } catch (caught) {
      assert.ok(
        caught instanceof ProxyError,
        `threw ${Deno.inspect(caught)}: ${where}`,
      );
      assert.ok(
        finishes.length === 0 || (finishes.length === 1 && !finishes[0]),
        `finish calls ${Deno.inspect(finishes)} after ${caught}: ${where}`,
      );
      error = caught.kind;
      break;
    }
    checkInvariants(exchange, where);
    exchanges.push(exchange);
    if (connection.buffered + stream.undelivered === 0) break;
  }
  assert.equal(stream.overBudget, false, `read without bound: ${where}`);
  return { exchanges, error };
}

Deno.test(`mutated responses fail only with a ProxyError, keep every invariant, and end the same in any segmentation (seed ${SEED}, ${MUTATION_CASES} cases)`, async () => {
  for (let i = 0; i < MUTATION_CASES; i++) {
    const random = mulberry32(SEED + i);
    const first = SAMPLES[Math.floor(random() * SAMPLES.length)]!;
    const base = random() < 0.3 && first.delimited
      ? first.wire + SAMPLES[Math.floor(random() * SAMPLES.length)]!.wire
      : first.wire;
    const wire = mutate(base, random);
    const where = replay("mutation", i, wire);
    const whole = await outcome(wire, first.method, (r) => r, where);
    const split = await outcome(
      wire,
      first.method,
      randomSegmenter(random),
      where,
    );
    assert.deepEqual(split, whole, `segmented differently: ${where}`);
  }
});

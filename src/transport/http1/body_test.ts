/**
 * Body framing on a fake socket: response bodies delimited by length,
 * chunked framing or the close, read to exactly their end (never a byte
 * past it, never waiting for one), and request bodies framed on the way up.
 *
 * `finish(clean)` decides whether a connection may carry another exchange,
 * so every test checks it is called once, and with `true` only when the body
 * ended exactly at its framing end.
 */
import assert from "node:assert/strict";
import { ProxyError } from "../errors.ts";
import { IdleTimer } from "../idle_timer.ts";
import {
  ScriptedStream,
  type ScriptedStreamOptions,
  text,
} from "./_scripted_stream.ts";
import { responseBodyStream, writeRequestBody } from "./body.ts";
import { Http1Connection } from "./connection.ts";
import { parseResponseHead } from "./parse.ts";

const isKind = (kind: string) => (error: unknown) =>
  error instanceof ProxyError && error.kind === kind;

/** Segment sizes every framing test runs with: bytes one at a time up to all at once. */
const SEGMENTS = [1, 2, 3, 5, 8, 13, Infinity];

/** Reads a response head and then its body from `response`, as client.ts does. */
async function exchange(
  response: string,
  options: ScriptedStreamOptions & { method?: string } = {},
) {
  // A read past the scripted bytes fails: a framed body must end without one.
  const stream = new ScriptedStream(response, { afterEnd: "fail", ...options });
  const connection = new Http1Connection(stream);
  const head = parseResponseHead(
    await connection.readHead(),
    options.method ?? "GET",
  );
  const finishes: boolean[] = [];
  const body = responseBodyStream(
    connection,
    head.framing,
    60_000,
    "GET http://upstream",
    (clean) => finishes.push(clean),
  );
  let received = "";
  let error: unknown;
  const reader = body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      received += text(value);
    }
  } catch (caught) {
    error = caught;
  }
  return { head, body: received, error, finishes, connection, stream };
}

/** `segment` option for reads of `size` bytes. */
const inSegments = (size: number) => ({
  segment: (remaining: number) => Math.min(size, remaining),
});

Deno.test("reads a Content-Length body to its end and finishes clean", async () => {
  for (const size of SEGMENTS) {
    const r = await exchange(
      "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
      inSegments(size),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.body, "hello world");
    assert.deepEqual(r.finishes, [true]);
    assert.equal(r.connection.buffered, 0);
  }
});

Deno.test("reads a Content-Length: 0 body as empty without reading", async () => {
  const r = await exchange("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assert.equal(r.body, "");
  assert.deepEqual(r.finishes, [true]);
});

Deno.test("leaves bytes after a Content-Length body buffered, where client.ts sees them and refuses reuse", async () => {
  const r = await exchange(
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
  );
  assert.equal(r.body, "hello");
  assert.deepEqual(r.finishes, [true]);
  assert.equal(r.connection.buffered, "EXTRA".length);
});

Deno.test("never reads bytes after a Content-Length body that were not yet buffered", async () => {
  for (const size of SEGMENTS) {
    const r = await exchange(
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n",
      inSegments(size),
    );
    assert.equal(r.body, "hello");
    assert.equal(
      r.connection.buffered + r.stream.undelivered,
      "HTTP/1.1 200 OK\r\n\r\n".length,
    );
  }
});

Deno.test("fails a truncated Content-Length body with connection_terminated, finishing unclean", async () => {
  for (const size of SEGMENTS) {
    const r = await exchange(
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
      { ...inSegments(size), afterEnd: "eof" },
    );
    assert.ok(isKind("connection_terminated")(r.error), String(r.error));
    assert.equal(r.body, "hello");
    assert.deepEqual(r.finishes, [false]);
  }
});

Deno.test("fails a body far shorter than the largest Content-Length without allocating it", async () => {
  const r = await exchange(
    "HTTP/1.1 200 OK\r\nContent-Length: 9007199254740991\r\n\r\nabc",
    { afterEnd: "eof" },
  );
  assert.ok(isKind("connection_terminated")(r.error), String(r.error));
  assert.deepEqual(r.finishes, [false]);
});

const CHUNKED_HEAD = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

Deno.test("reads a chunked body with extensions and trailers and finishes clean", async () => {
  const body = "5;ext=1\r\nhello\r\n" +
    '1;a;b="c d"\r\n \r\n' +
    "0005\r\nworld\r\n" +
    "A \t;x\r\n0123456789\r\n" +
    "0;last=yes\r\n" +
    "X-Checksum: abc\r\nX-Other: \x80\xff\r\n\r\n";
  for (const size of SEGMENTS) {
    const r = await exchange(CHUNKED_HEAD + body, inSegments(size));
    assert.equal(r.error, undefined, `segments of ${size}: ${r.error}`);
    assert.equal(r.body, "hello world0123456789");
    assert.deepEqual(r.finishes, [true]);
    assert.equal(r.connection.buffered, 0);
    assert.equal(r.stream.undelivered, 0);
  }
});

Deno.test("reads a chunked body with uppercase hex sizes", async () => {
  const r = await exchange(
    `${CHUNKED_HEAD}1A\r\n${"z".repeat(26)}\r\n0\r\n\r\n`,
  );
  assert.equal(r.body, "z".repeat(26));
  assert.deepEqual(r.finishes, [true]);
});

Deno.test("reads an empty chunked body", async () => {
  const r = await exchange(`${CHUNKED_HEAD}0\r\n\r\n`);
  assert.equal(r.body, "");
  assert.deepEqual(r.finishes, [true]);
});

Deno.test("reads a chunk whose data holds CRLF and what looks like a response", async () => {
  const data = "\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
  const r = await exchange(
    `${CHUNKED_HEAD}${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`,
  );
  assert.equal(r.body, data);
  assert.deepEqual(r.finishes, [true]);
});

Deno.test("leaves bytes after the end of a chunked body buffered", async () => {
  const r = await exchange(
    `${CHUNKED_HEAD}5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n`,
  );
  assert.equal(r.body, "hello");
  assert.deepEqual(r.finishes, [true]);
  assert.equal(r.connection.buffered, "HTTP/1.1 200 OK\r\n\r\n".length);
});

const BROKEN_CHUNKED: [string, string, string][] = [
  [
    "a trailer that is a fake status line",
    "5\r\nhello\r\n0\r\nHTTP/1.1 200 OK\r\n\r\n",
    "http_protocol_error",
  ],
  [
    "an obs-folded trailer",
    "0\r\nX-A: 1\r\n folded\r\n\r\n",
    "http_protocol_error",
  ],
  [
    "chunk data longer than its size",
    "5\r\nhelloX\r\n0\r\n\r\n",
    "http_protocol_error",
  ],
  [
    "chunk data shorter than its size",
    "6\r\nhello\r\n0\r\n\r\n",
    "http_protocol_error",
  ],
  ["a bare LF after the size", "5\nhello\r\n0\r\n\r\n", "http_protocol_error"],
  ["a bare LF after the data", "5\r\nhello\n0\r\n\r\n", "http_protocol_error"],
  ["a bare CR after the data", "5\r\nhello\r0\r\n\r\n", "http_protocol_error"],
  ["a bare LF ending the body", "0\r\n\n", "http_protocol_error"],
  ["a negative size", "-5\r\nhello\r\n0\r\n\r\n", "http_protocol_error"],
  ["a 0x size", "0x5\r\nhello\r\n0\r\n\r\n", "http_protocol_error"],
  ["an empty size line", "\r\nhello\r\n0\r\n\r\n", "http_protocol_error"],
  [
    "a size of 14 significant digits",
    "10000000000000\r\nhello\r\n",
    "http_protocol_error",
  ],
  ["the end inside a size line", "5", "connection_terminated"],
  ["the end inside chunk data", "5\r\nhel", "connection_terminated"],
  ["the end before the CRLF after data", "5\r\nhello", "connection_terminated"],
  [
    "the end inside the CRLF after data",
    "5\r\nhello\r",
    "connection_terminated",
  ],
  ["the end before the last chunk", "5\r\nhello\r\n", "connection_terminated"],
  ["the end inside the trailers", "0\r\nX-A: 1\r\n", "connection_terminated"],
  ["the end before the final CRLF", "0\r\n", "connection_terminated"],
  [
    "a huge size and the end",
    "fffffffffffff\r\nhello",
    "connection_terminated",
  ],
];

for (const [what, body, kind] of BROKEN_CHUNKED) {
  Deno.test(`fails a chunked body with ${what} (${kind}), finishing unclean`, async () => {
    for (const size of SEGMENTS) {
      const r = await exchange(CHUNKED_HEAD + body, {
        ...inSegments(size),
        afterEnd: "eof",
      });
      assert.ok(isKind(kind)(r.error), `segments of ${size}: ${r.error}`);
      assert.deepEqual(r.finishes, [false]);
    }
  });
}

Deno.test("fails a trailer section over 64 KiB", async () => {
  const trailers = `X-T: ${"t".repeat(1000)}\r\n`.repeat(70);
  const r = await exchange(`${CHUNKED_HEAD}0\r\n${trailers}\r\n`);
  assert.ok(isKind("http_protocol_error")(r.error), String(r.error));
  assert.deepEqual(r.finishes, [false]);
});

Deno.test("reads a body without framing to the close and finishes clean", async () => {
  const body = "until the end\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
  for (const size of SEGMENTS) {
    const r = await exchange(`HTTP/1.1 200 OK\r\n\r\n${body}`, {
      ...inSegments(size),
      afterEnd: "eof",
    });
    assert.equal(r.body, body);
    assert.equal(r.head.keepAlive, false);
    assert.deepEqual(r.finishes, [true]);
  }
});

Deno.test("ends a body-less response at once, leaving the next bytes unread", async () => {
  for (
    const [response, method] of [
      ["HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET"],
      ["HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET"],
      ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"],
      ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD"],
    ]
  ) {
    const r = await exchange(`${response}hello`, { method: method! });
    assert.equal(r.body, "", response);
    assert.deepEqual(r.finishes, [true]);
    assert.equal(r.connection.buffered, 5);
  }
});

Deno.test("finishes unclean exactly once when the reader cancels mid-body, and not again", async () => {
  const stream = new ScriptedStream(
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    { afterEnd: "fail" },
  );
  const connection = new Http1Connection(stream);
  const head = parseResponseHead(await connection.readHead(), "GET");
  const finishes: boolean[] = [];
  const body = responseBodyStream(
    connection,
    head.framing,
    60_000,
    "test",
    (clean) => finishes.push(clean),
  );
  const reader = body.getReader();
  assert.equal(text((await reader.read()).value!), "hello");
  await reader.cancel();
  await reader.cancel();
  assert.deepEqual(finishes, [false]);
});

Deno.test("finishes once when a finished body is cancelled afterwards", async () => {
  const stream = new ScriptedStream(
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  );
  const connection = new Http1Connection(stream);
  const head = parseResponseHead(await connection.readHead(), "GET");
  const finishes: boolean[] = [];
  const body = responseBodyStream(
    connection,
    head.framing,
    60_000,
    "test",
    (clean) => finishes.push(clean),
  );
  const reader = body.getReader();
  while (!(await reader.read()).done);
  await reader.cancel();
  assert.deepEqual(finishes, [true]);
});

Deno.test("reads one chunk of a response body ahead of its reader, and no more", async () => {
  const head = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n";
  let segments = 0;
  const stream = new ScriptedStream(`${head}aaaaabbbbbccccc`, {
    // The head in one read, then the body 5 bytes a read.
    segment: (remaining) =>
      segments++ === 0 ? head.length : Math.min(5, remaining),
    afterEnd: "fail",
  });
  const connection = new Http1Connection(stream);
  const parsed = parseResponseHead(await connection.readHead(), "GET");
  const body = responseBodyStream(
    connection,
    parsed.framing,
    60_000,
    "test",
    () => {},
  );
  const turns = async () => {
    for (let turn = 0; turn < 5; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  };
  await turns();
  assert.equal(stream.reads, 2, "the head, and one chunk ahead of the reader");
  const reader = body.getReader();
  assert.equal(text((await reader.read()).value!), "aaaaa");
  await turns();
  assert.equal(stream.reads, 3, "the next chunk, once the first was taken");
  assert.equal(text((await reader.read()).value!), "bbbbb");
  assert.equal(text((await reader.read()).value!), "ccccc");
  assert.equal((await reader.read()).done, true);
});

/** Writes `chunks` as a request body and returns the bytes on the wire. */
async function uploaded(
  chunks: (string | Uint8Array)[],
  length: number | null,
  maxWrite = Infinity,
): Promise<{ wire: string; writes: number }> {
  const stream = new ScriptedStream("", { maxWrite });
  const body = ReadableStream.from(
    chunks.map((c) =>
      typeof c === "string" ? Uint8Array.from(c, (x) => x.charCodeAt(0)) : c
    ),
  );
  const progress = new IdleTimer(60_000, () => {});
  try {
    await writeRequestBody(
      new Http1Connection(stream),
      body,
      length,
      progress,
    );
  } finally {
    progress.stop();
  }
  return { wire: stream.written, writes: stream.writes };
}

/**
 * The body a chunked wire carries, checking its framing strictly: lowercase
 * hex sizes, CRLF after each size and each chunk's data, no empty chunk but
 * the last, and nothing after the last chunk's empty trailer section.
 */
function dechunk(wire: string): string {
  let body = "";
  let at = 0;
  while (true) {
    const eol = wire.indexOf("\r\n", at);
    const size = wire.slice(at, eol);
    assert.match(size, /^(0|[1-9a-f][0-9a-f]*)$/, `chunk size at ${at}`);
    const n = parseInt(size, 16);
    at = eol + 2;
    if (n === 0) break;
    body += wire.slice(at, at + n);
    at += n;
    assert.equal(wire.slice(at, at + 2), "\r\n", `CRLF after data at ${at}`);
    at += 2;
  }
  assert.equal(wire.slice(at), "\r\n", "an empty trailer section ends it");
  return body;
}

Deno.test("writes a chunked request body in well-formed chunks and ends it with 0 CRLF CRLF", async () => {
  for (const maxWrite of [1, 3, Infinity]) {
    const { wire } = await uploaded(
      ["hello", " ", "x".repeat(26), "world"],
      null,
      maxWrite,
    );
    assert.equal(
      dechunk(wire),
      `hello ${"x".repeat(26)}world`,
      `writes of at most ${maxWrite}`,
    );
  }
});

Deno.test("skips an empty chunk of a chunked request body instead of ending it early", async () => {
  const { wire } = await uploaded(["a", "", new Uint8Array(0), "b"], null);
  assert.equal(dechunk(wire), "ab");
  assert.ok(!wire.startsWith("0\r\n"));
});

Deno.test("writes an empty chunked request body as the last chunk alone", async () => {
  assert.equal((await uploaded([], null)).wire, "0\r\n\r\n");
});

Deno.test("frames later, smaller chunks correctly in the reused framing buffer", async () => {
  const { wire } = await uploaded(["a".repeat(300), "bb", "c"], null, 7);
  assert.equal(dechunk(wire), `${"a".repeat(300)}bbc`);
});

/** A socket whose writes wait until `release()`: an upstream that reads slowly. */
class HeldWrites extends ScriptedStream {
  #held = Promise.withResolvers<void>();
  /** Every write, as given. */
  readonly wire: Uint8Array[] = [];
  release(): void {
    this.#held.resolve();
  }
  override async write(data: Uint8Array): Promise<number> {
    await this.#held.promise;
    this.wire.push(data.slice());
    this.writes++;
    return data.length;
  }
}

Deno.test("reads ahead while a write is on its way, at most 2 MiB, and sends what gathered as one chunk", async () => {
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  let pulled = 0;
  const thirtyThree = Promise.withResolvers<void>();
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled === 64) return controller.close();
      if (++pulled === 33) thirtyThree.resolve();
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  const stream = new HeldWrites("");
  const progress = new IdleTimer(60_000, () => {});
  try {
    const upload = writeRequestBody(
      new Http1Connection(stream),
      body,
      null,
      progress,
    );
    // The first chunk is being written; the next 32 (2 MiB) are read while
    // it waits, and then reading waits too.
    await thirtyThree.promise;
    for (let turn = 0; turn < 5; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.equal(pulled, 33, "no read past the read-ahead while writes wait");
    stream.release();
    assert.equal(await upload, 64 * chunk.length);
  } finally {
    progress.stop();
  }
  const writes = stream.wire.map((w) => new TextDecoder().decode(w));
  assert.equal(dechunk(writes.join("")).length, 64 * chunk.length);
  // the first write is one chunk; the 32 read behind it go out as one
  assert.ok(writes[0]!.startsWith("10000\r\n"));
  assert.ok(writes[1]!.startsWith(`${(32 * chunk.length).toString(16)}\r\n`));
  assert.ok(stream.writes < 64, `${stream.writes} writes`);
});

Deno.test("writes a request body with a known length as it is, without framing", async () => {
  const { wire } = await uploaded(["hello", "", " world"], 11, 4);
  assert.equal(wire, "hello world");
});

Deno.test("refuses a request body longer or shorter than its length, before the excess is written", async () => {
  await assert.rejects(
    () => uploaded(["hello", " world"], 5),
    isKind("http_request_error"),
  );
  await assert.rejects(
    () => uploaded(["hello"], 11),
    isKind("http_request_error"),
  );
  // Nothing past the declared length reaches the wire.
  const stream = new ScriptedStream("");
  const progress = new IdleTimer(60_000, () => {});
  try {
    await assert.rejects(() =>
      writeRequestBody(
        new Http1Connection(stream),
        ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3, 4])]),
        3,
        progress,
      )
    );
  } finally {
    progress.stop();
  }
  assert.equal(stream.written, "\x01\x02");
});

Deno.test("fails with client_gone when the client's body fails", async () => {
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new Error("client reset"));
    },
  });
  const stream = new ScriptedStream("");
  const progress = new IdleTimer(60_000, () => {});
  try {
    await assert.rejects(
      () => writeRequestBody(new Http1Connection(stream), body, null, progress),
      isKind("client_gone"),
    );
  } finally {
    progress.stop();
  }
  assert.equal(stream.written, "");
});

/** Uploads `body` to an upstream whose writes fail, expecting that failure as it is. */
async function assertWriteFailurePassedOn(
  body: ReadableStream<Uint8Array>,
): Promise<void> {
  const progress = new IdleTimer(60_000, () => {});
  try {
    await assert.rejects(
      () =>
        writeRequestBody(
          new Http1Connection(new BrokenPipe("")),
          body,
          null,
          progress,
        ),
      Deno.errors.BrokenPipe,
    );
  } finally {
    progress.stop();
  }
}

/** A socket whose every write fails: an upstream that went away. */
class BrokenPipe extends ScriptedStream {
  override write(): Promise<number> {
    return Promise.reject(new Deno.errors.BrokenPipe("upstream went away"));
  }
}

Deno.test("passes a write failure on as it is and cancels the client's body", async () => {
  let cancelled: unknown;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array([1, 2, 3]));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  await assertWriteFailurePassedOn(body);
  assert.ok(cancelled instanceof Deno.errors.BrokenPipe);
});

Deno.test("fails at once when a write fails while the client's body is silent", async () => {
  let cancelled: unknown;
  let pulls = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      // one chunk, then silence: a client that stopped sending
      if (pulls++ === 0) controller.enqueue(new Uint8Array([1, 2, 3]));
      else return new Promise(() => {});
    },
    cancel(reason) {
      cancelled = reason;
    },
  }, { highWaterMark: 0 });
  await assertWriteFailurePassedOn(body);
  assert.ok(cancelled instanceof Deno.errors.BrokenPipe);
});

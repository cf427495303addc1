/**
 * Where a head and a line end, on a fake socket: `readHead`, `readLine` and
 * `readExactly` of {@linkcode Http1Connection} must find the same boundaries
 * however the bytes are split into reads.
 */
import assert from "node:assert/strict";
import { ProxyError } from "../errors.ts";
import { bytes, ScriptedStream, text } from "./_scripted_stream.ts";
import { Http1Connection } from "./connection.ts";
import { MAX_HEAD_BYTES } from "./parse.ts";

const isKind = (kind: string) => (error: unknown) =>
  error instanceof ProxyError && error.kind === kind;

/** A connection over `data` split into segments of `size` bytes. */
function over(data: string | Uint8Array, size = Infinity) {
  const stream = new ScriptedStream(data, {
    segment: (remaining) => Math.min(size, remaining),
  });
  return { stream, connection: new Http1Connection(stream) };
}

const SEGMENTS = [1, 2, 3, 4, 5, 7, 16, Infinity];

Deno.test("readHead returns the head without its blank line and keeps the rest buffered", async () => {
  const response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
  for (const size of SEGMENTS) {
    const { stream, connection } = over(response, size);
    const head = await connection.readHead();
    assert.equal(text(head), "HTTP/1.1 200 OK\r\nContent-Length: 2");
    assert.equal(
      connection.buffered + stream.undelivered,
      "okHTTP/1.1".length,
      `segments of ${size}`,
    );
  }
});

Deno.test("readHead finds the blank line split at every position across two reads", async () => {
  const response = "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\nNEXT";
  for (let cut = 1; cut < response.length; cut++) {
    let first = true;
    const stream = new ScriptedStream(response, {
      segment: (remaining) => first ? (first = false, cut) : remaining,
    });
    const connection = new Http1Connection(stream);
    assert.equal(
      text(await connection.readHead()),
      "HTTP/1.1 204 No Content\r\nX-A: 1",
      `cut at ${cut}`,
    );
    assert.equal(text(await connection.readExactly(4)), "NEXT");
  }
});

Deno.test("readHead reads two heads back to back from one read", async () => {
  const { connection } = over(
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
  );
  assert.equal(text(await connection.readHead()), "HTTP/1.1 100 Continue");
  assert.equal(text(await connection.readHead()), "HTTP/1.1 200 OK");
  assert.equal(connection.buffered, 0);
});

Deno.test("readHead does not end a head at LF LF or CR LF LF", async () => {
  for (const ending of ["\n\n", "\r\n\n", "\n\r\n"]) {
    const { connection } = over(`HTTP/1.1 200 OK${ending}body`);
    await assert.rejects(
      () => connection.readHead(),
      (error: unknown) =>
        isKind("connection_terminated")(error) &&
        /inside the response headers/.test((error as Error).message),
      JSON.stringify(ending),
    );
  }
});

Deno.test("readHead says the upstream closed without responding when no byte came", async () => {
  const { connection } = over("");
  await assert.rejects(
    () => connection.readHead(),
    (error: unknown) =>
      isKind("connection_terminated")(error) &&
      /without responding/.test((error as Error).message),
  );
  assert.equal(connection.receivedAny, false);
});

Deno.test("readHead refuses a head longer than 64 KiB however it arrives", async () => {
  const long = `HTTP/1.1 200 OK\r\nX-A: ${"a".repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
  for (const size of [1000, 4096, Infinity]) {
    const { connection } = over(long, size);
    await assert.rejects(
      () => connection.readHead(),
      isKind("http_protocol_error"),
    );
  }
});

Deno.test("readHead refuses a stream of bytes that never ends a head, without reading it all", async () => {
  const endless = "HTTP/1.1 200 OK\r\n" + "X: y\r\n".repeat(100_000);
  const { stream, connection } = over(endless, 4096);
  await assert.rejects(
    () => connection.readHead(),
    isKind("http_protocol_error"),
  );
  assert.ok(stream.undelivered > endless.length / 2);
});

/** A head of exactly 64 KiB, the largest legate reads. */
const LARGEST_HEAD = (() => {
  const start = "HTTP/1.1 200 OK\r\nX-A: ";
  return start + "a".repeat(MAX_HEAD_BYTES - start.length);
})();

Deno.test("readHead accepts a head of exactly 64 KiB arriving at once", async () => {
  const { connection } = over(`${LARGEST_HEAD}\r\n\r\n`);
  assert.equal((await connection.readHead()).length, MAX_HEAD_BYTES);
});

Deno.test("readHead accepts a head of exactly 64 KiB however it is segmented", async () => {
  // The first read stops one byte into the blank line: 64 KiB + 1 bytes are
  // buffered, the blank line is not complete, and the size check fires
  // before the rest arrives. All at once, the same bytes are accepted.
  const data = `${LARGEST_HEAD}\r\n\r\n`;
  let first = true;
  const stream = new ScriptedStream(data, {
    segment: (remaining) =>
      first ? (first = false, MAX_HEAD_BYTES + 1) : remaining,
  });
  const connection = new Http1Connection(stream);
  assert.equal((await connection.readHead()).length, MAX_HEAD_BYTES);
});

Deno.test("readLine returns lines without their CRLF, however they are split", async () => {
  const input = "5;a=b\r\n\r\nX-T: \xe9\x80\r\nrest";
  for (const size of SEGMENTS) {
    const { stream, connection } = over(input, size);
    assert.equal(await connection.readLine(), "5;a=b");
    assert.equal(await connection.readLine(), "");
    assert.equal(await connection.readLine(), "X-T: \xe9\x80");
    assert.equal(connection.buffered + stream.undelivered, 4);
  }
});

Deno.test("readLine refuses a line ended by a bare LF", async () => {
  for (const input of ["5\nhello", "\n", "abc\r\ndef\n"]) {
    const { connection } = over(input);
    await assert.rejects(
      async () => {
        while ((await connection.readLine()) !== null);
      },
      isKind("http_protocol_error"),
      JSON.stringify(input),
    );
  }
});

Deno.test("readLine refuses a bare CR inside a line", async () => {
  for (const input of ["5\r;a\r\n", "\r\r\n", "a\rb\r\n"]) {
    const { connection } = over(input);
    await assert.rejects(
      () => connection.readLine(),
      isKind("http_protocol_error"),
      JSON.stringify(input),
    );
  }
});

Deno.test("readLine returns null at EOF, also after part of a line", async () => {
  assert.equal(await over("").connection.readLine(), null);
  assert.equal(await over("5;ext").connection.readLine(), null);
  assert.equal(await over("5\r").connection.readLine(), null);
});

Deno.test("readLine refuses a line longer than 64 KiB arriving in small reads", async () => {
  const { connection } = over(`1;${"a".repeat(70_000)}\r\n`, 1000);
  await assert.rejects(
    () => connection.readLine(),
    isKind("http_protocol_error"),
  );
});

Deno.test("readLine refuses a line longer than 64 KiB arriving at once", async () => {
  // The length check only runs while no LF has been found, so the outcome
  // depends on how the bytes were segmented (the previous test refuses it).
  const { connection } = over(`1;${"a".repeat(70_000)}\r\n`);
  await assert.rejects(
    () => connection.readLine(),
    isKind("http_protocol_error"),
  );
});

Deno.test("readExactly reads across segments and leaves the rest buffered", async () => {
  const { stream, connection } = over("helloworld", 3);
  assert.equal(text(await connection.readExactly(5)), "hello");
  assert.equal(connection.buffered + stream.undelivered, 5);
});

Deno.test("readExactly fails with connection_terminated when the upstream ends first", async () => {
  const { connection } = over("hell", 2);
  await assert.rejects(
    () => connection.readExactly(5),
    isKind("connection_terminated"),
  );
});

Deno.test("readChunk never reads past what it is asked for", async () => {
  const stream = new ScriptedStream(bytes("hello"), { afterEnd: "fail" });
  const connection = new Http1Connection(stream);
  assert.equal(text((await connection.readChunk(3))!), "hel");
  assert.equal(text((await connection.readChunk(2))!), "lo");
  assert.equal(stream.undelivered, 0);
});

Deno.test("readChunk reads more at a time while reads come back full, and copies out a small read after large ones", async () => {
  const KiB = 1024;
  // Four full reads (64 KiB, 256 KiB, 1 MiB, 1 MiB), 100 bytes, then 128 KiB
  // at once, which the next read takes in 64 KiB again.
  const segments = [64, 256, 1024, 1024, 100 / KiB, 128].map((k) => k * KiB);
  let next = 0;
  const total = segments.reduce((sum, size) => sum + size, 0);
  const stream = new ScriptedStream(new Uint8Array(total), {
    segment: (remaining) => Math.min(segments[next++] ?? remaining, remaining),
  });
  const connection = new Http1Connection(stream);
  const chunks: Uint8Array[] = [];
  for (let chunk; (chunk = await connection.readChunk(Infinity)) !== null;) {
    chunks.push(chunk);
  }
  const expected = [64, 256, 1024, 1024, 100 / KiB, 64, 64].map((k) => k * KiB);
  assert.deepEqual(chunks.map((c) => c.length), expected);
  assert.deepEqual(
    chunks.map((c) => c.buffer.byteLength),
    expected,
    "each chunk holds only its own bytes",
  );
});

Deno.test("close closes the socket once", () => {
  const { stream, connection } = over("");
  connection.close();
  connection.close();
  assert.equal(stream.closes, 1);
  assert.equal(connection.closed, true);
});

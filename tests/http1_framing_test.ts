/**
 * The HTTP/1.1 upstream transport against upstreams that frame responses in
 * every way RFC 9112 allows, and in some ways it does not.
 */
import assert from "node:assert/strict";
import { startLegate, startTcpServer } from "./_helpers.ts";

const encoder = new TextEncoder();

/** Reads one request head (the tests send no request bodies). */
async function readRequest(conn: Deno.Conn): Promise<string | null> {
  const buffer = new Uint8Array(8192);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return null;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text;
}

/** An upstream that answers every request on a connection with `response(request)`. */
function upstream(
  response: (request: string) => string | Uint8Array,
  closeAfter = false,
) {
  let connections = 0;
  const server = startTcpServer(async (conn) => {
    connections++;
    while (true) {
      const request = await readRequest(conn);
      if (request === null) return;
      const answer = response(request);
      await conn.write(
        typeof answer === "string" ? encoder.encode(answer) : answer,
      );
      if (closeAfter) return;
    }
  });
  return Object.assign(server, { connections: () => connections });
}

async function through(
  target: { httpUrl: string },
  requests: { method?: string; path?: string }[],
) {
  await using l = await startLegate({
    "svc.yaml": `listen: 127.0.0.1:0\nupstreams: [${target.httpUrl}]\n`,
  });
  const results = [];
  for (const { method = "GET", path = "/" } of requests) {
    const response = await fetch(`http://${l.address("svc")}${path}`, {
      method,
    });
    results.push({
      status: response.status,
      body: await response.text(),
      headers: response.headers,
    });
  }
  return results;
}

Deno.test("a response without length is read to EOF and its connection not reused", async () => {
  await using up = upstream(
    () => "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
    true,
  );
  const results = await through(up, [{}, {}]);
  assert.deepEqual(results.map((r) => r.body), [
    "until the end",
    "until the end",
  ]);
  assert.equal(up.connections(), 2);
});

Deno.test("chunked responses with extensions and trailers arrive whole; the connection is reused", async () => {
  await using up = upstream(() =>
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" +
    "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: dropped\r\n\r\n"
  );
  const results = await through(up, [{}, {}, {}]);
  assert.deepEqual(results.map((r) => r.body), [
    "hello world",
    "hello world",
    "hello world",
  ]);
  assert.equal(up.connections(), 1);
});

Deno.test("204, 304 and HEAD responses have no body, whatever their headers say", async () => {
  await using up = upstream((request) =>
    request.startsWith("GET /204")
      ? "HTTP/1.1 204 No Content\r\n\r\n"
      : request.startsWith("GET /304")
      ? 'HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n'
      : "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
  );
  const results = await through(up, [
    { path: "/204" },
    { path: "/304" },
    { method: "HEAD", path: "/head" },
    { path: "/204" },
  ]);
  assert.deepEqual(results.map((r) => [r.status, r.body]), [
    [204, ""],
    [304, ""],
    [200, ""],
    [204, ""],
  ]);
  assert.equal(
    up.connections(),
    1,
    "bodiless responses keep the connection reusable",
  );
});

Deno.test("interim 1xx responses are consumed and the final response forwarded", async () => {
  await using up = upstream(() =>
    "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" +
    "HTTP/1.1 100 Continue\r\n\r\n" +
    "HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone"
  );
  const [result] = await through(up, [{}]);
  assert.equal(result!.status, 201);
  assert.equal(result!.body, "done");
});

Deno.test("Connection: close and HTTP/1.0 responses are not reused", async () => {
  await using closing = upstream(() =>
    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
  );
  assert.deepEqual((await through(closing, [{}, {}])).map((r) => r.body), [
    "ok",
    "ok",
  ]);
  assert.equal(closing.connections(), 2);
  await using old = upstream(() =>
    "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
  );
  assert.deepEqual((await through(old, [{}, {}])).map((r) => r.body), [
    "ok",
    "ok",
  ]);
  assert.equal(old.connections(), 2);
});

Deno.test("malformed responses are 502 http_protocol_error, never passed on", async () => {
  const cases: [string, string | Uint8Array, RegExp][] = [
    [
      "conflicting lengths",
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
      /invalid Content-Length/,
    ],
    [
      "a bad header name",
      "HTTP/1.1 200 OK\r\nbad header: x\r\ncontent-length: 0\r\n\r\n",
      /invalid header line/,
    ],
    [
      "folded header",
      "HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n",
      /invalid header line/,
    ],
    [
      "headers over 64 KiB",
      `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70_000)}\r\n\r\n`,
      /exceed 64 KiB/,
    ],
    [
      "a status out of range",
      "HTTP/1.1 999 Odd\r\ncontent-length: 0\r\n\r\n",
      /status 999/,
    ],
    [
      "a protocol switch",
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
      /switched protocols/,
    ],
  ];
  for (const [what, answer, message] of cases) {
    await using up = upstream(() => answer, true);
    const [result] = await through(up, [{}]);
    assert.equal(result!.status, 502, what);
    assert.equal(
      result!.headers.get("proxy-status"),
      "legate; error=http_protocol_error",
      what,
    );
    assert.match(result!.body, message, what);
  }
});

Deno.test("a bad chunk size cuts the client's response instead of passing garbage", async () => {
  await using up = upstream(
    () => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\noops\r\n",
    true,
  );
  await using l = await startLegate({
    "svc.yaml": `listen: 127.0.0.1:0\nupstreams: [${up.httpUrl}]\n`,
  });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.equal(response.status, 200);
  await assert.rejects(response.text());
});

Deno.test("header bytes above 0x7f pass through unchanged, as in a UTF-8 file name", async () => {
  // "–" (en dash) in UTF-8 is E2 80 93; windows-1252, which WHATWG calls
  // "latin1", would turn 0x80 and 0x93 into characters no header can carry.
  const disposition = [
    ...encoder.encode('attachment; filename="'),
    0xe2,
    0x80,
    0x93,
    ...encoder.encode('.pdf"'),
  ];
  await using up = upstream(() =>
    new Uint8Array([
      ...encoder.encode("HTTP/1.1 200 OK\r\ncontent-disposition: "),
      ...disposition,
      ...encoder.encode("\r\ncontent-length: 2\r\n\r\nok"),
    ])
  );
  const [result] = await through(up, [{}]);
  assert.equal(result!.status, 200);
  assert.equal(result!.body, "ok");
  // fetch gives header bytes back one character per byte.
  assert.equal(
    result!.headers.get("content-disposition"),
    String.fromCharCode(...disposition),
  );
});

Deno.test("a 205 is forwarded without content, and an odd reason phrase is dropped, not fatal", async () => {
  const answers = [
    "HTTP/1.1 205 Reset Content\r\ncontent-length: 0\r\n\r\n",
    "HTTP/1.1 205 Reset Content\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 O\x01K\r\ncontent-length: 2\r\n\r\nok",
  ];
  let next = 0;
  await using up = upstream(() => answers[next++]!);
  const results = await through(up, answers.map(() => ({})));
  assert.deepEqual(
    results.map((r) => [r.status, r.body]),
    [[205, ""], [205, ""], [200, "ok"]],
  );
  // The chunked 205's stream is cancelled, closing its connection.
  assert.equal(up.connections(), 2);
});

Deno.test("an answer sent before the upload is read (413) reaches the client, not a 502", async () => {
  await using up = upstream(
    () =>
      "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
    true,
  );
  await using l = await startLegate({
    "svc.yaml": `listen: 127.0.0.1:0\nupstreams: [${up.httpUrl}]\n`,
  });
  for (let i = 0; i < 3; i++) {
    // 16 MiB: far more than the upstream's socket buffers take before it closes.
    const response = await fetch(`http://${l.address("svc")}/upload`, {
      method: "POST",
      body: new Uint8Array(16 * 1024 * 1024),
    });
    assert.equal(response.status, 413);
    assert.equal(await response.text(), "too large");
  }
  assert.ok(
    !l.lines.some((line) => line.includes("unreachable")),
    l.lines.join("\n"),
  );
});

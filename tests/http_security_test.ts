/**
 * What a malicious or careless client can and cannot make legate send:
 * request targets and hosts are checked and normalised before routing, the
 * forwarding headers cannot be stripped, and a request that must not be
 * sent twice never reaches the origin twice. Clients speak raw bytes (HTTP/1.1
 * and HTTP/2 frames) so that nothing a client library would tidy up is lost.
 */
import assert from "node:assert/strict";
import {
  connectTo,
  rawHttp,
  startLegate,
  startTcpServer,
  type TestTcpServer,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One request as the origin read it. */
interface SeenRequest {
  /** The request line, exactly. */
  readonly line: string;
  /** Header lines, names lowercased. */
  readonly headers: [string, string][];
  /** Which connection carried it, from 1. */
  readonly connection: number;
}

/**
 * A raw HTTP/1.1 origin that records every request head and answers each
 * with `200 ok` on a keep-alive connection, or does what `answer` says.
 */
function recordingOrigin(
  answer: (request: SeenRequest) => "ok" | "close" = () => "ok",
): TestTcpServer & { readonly seen: SeenRequest[] } {
  const seen: SeenRequest[] = [];
  let connections = 0;
  const server = startTcpServer(async (conn) => {
    const connection = ++connections;
    const buffer = new Uint8Array(65536);
    let pending = "";
    while (true) {
      const end = pending.indexOf("\r\n\r\n");
      if (end < 0) {
        const n = await conn.read(buffer);
        if (n === null) return;
        pending += decoder.decode(buffer.subarray(0, n));
        continue;
      }
      const [line, ...fields] = pending.slice(0, end).split("\r\n");
      pending = pending.slice(end + 4);
      const headers = fields.map((field): [string, string] => {
        const colon = field.indexOf(":");
        return [
          field.slice(0, colon).toLowerCase(),
          field.slice(colon + 1).trim(),
        ];
      });
      const length = Number(
        headers.find(([name]) => name === "content-length")?.[1] ?? 0,
      );
      while (encoder.encode(pending).length < length) {
        const n = await conn.read(buffer);
        if (n === null) return;
        pending += decoder.decode(buffer.subarray(0, n));
      }
      pending = pending.slice(length);
      const request = { line: line!, headers, connection };
      seen.push(request);
      if (answer(request) === "close") return;
      await conn.write(
        encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
      );
    }
  });
  return Object.assign(server, { seen });
}

const route = (upstream: string, extra = "") =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\n${extra}`;

/** Status line and body of a raw response. */
function parsed(response: string): { status: number; body: string } {
  return {
    status: Number(response.slice(9, 12)),
    body: response.slice(response.indexOf("\r\n\r\n") + 4),
  };
}

Deno.test("a Host that is not host[:port] is a 400 and reaches no origin: it cannot move into the path", async () => {
  await using origin = recordingOrigin();
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  for (
    const host of ["a/x", "a/../../admin?", "u@a", "a b", "a#x", "a\\x", "\xe9"]
  ) {
    const response = parsed(
      await rawHttp(
        l.address("svc"),
        `GET /echo HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`,
      ),
    );
    assert.equal(response.status, 400, host);
    assert.match(response.body, /not a valid host\[:port\]/, host);
  }
  assert.deepEqual(origin.seen, []);
});

Deno.test("an HTTP/2 request whose :path holds non-ASCII characters is a 400 and reaches no origin", async () => {
  await using origin = recordingOrigin();
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  // U+010D U+010A written with their low bytes would be CR LF: a second
  // request line. Sent as UTF-8, as the attacker did.
  const request = (path: string) =>
    h2cStatus(l.address("svc"), [
      [":method", "GET"],
      [":scheme", "http"],
      [":authority", "a"],
      [":path", path],
    ]);
  for (
    const path of [
      "/ok\u010d\u010aHost:x\u010d\u010a\u010d\u010aGET\u0120/slow",
      "/caf\u00e9",
    ]
  ) {
    assert.equal(await request(path), 400, path);
  }
  // With a space, Deno's HTTP/2 server resets the stream before legate sees it.
  assert.equal(await request("/ok\u010d\u010aHost: x"), "reset");
  assert.deepEqual(origin.seen, []);
});

Deno.test("routes and forwards the normalised path: dot segments and encoded unreserved characters", async () => {
  await using api = recordingOrigin();
  await using rest = recordingOrigin();
  await using l = await startLegate({
    "api.yaml": route(
      api.httpUrl,
      "match: { path_prefix: /api }\nstrip_prefix: true\n",
    ),
    "rest.yaml": route(rest.httpUrl),
  });
  const send = async (target: string) =>
    parsed(
      await rawHttp(
        l.address("api"),
        `GET ${target} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`,
      ),
    ).status;
  for (
    const target of [
      "/api/../internal/admin",
      "/api/%2e%2e/internal/admin",
      "/api/.%2E/internal/admin",
      "/%61pi/./users/%7Ebob?x=/../",
      "/api/users/..%2F..%2Fadmin",
      "/api/users/..",
    ]
  ) {
    assert.equal(await send(target), 200, target);
  }
  assert.deepEqual(rest.seen.map((r) => r.line), [
    "GET /internal/admin HTTP/1.1",
    "GET /internal/admin HTTP/1.1",
    "GET /internal/admin HTTP/1.1",
  ]);
  // Other percent-encodings, %2F among them, and the query stay as sent.
  assert.deepEqual(api.seen.map((r) => r.line), [
    "GET /users/~bob?x=/../ HTTP/1.1",
    "GET /users/..%2F..%2Fadmin HTTP/1.1",
    "GET / HTTP/1.1",
  ]);
});

Deno.test("a fragment, a backslash or CONNECT is refused; OPTIONS * goes out as OPTIONS *", async () => {
  await using origin = recordingOrigin();
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  const send = async (requestLine: string) =>
    parsed(
      await rawHttp(
        l.address("svc"),
        `${requestLine}\r\nhost: a:1\r\nconnection: close\r\n\r\n`,
      ),
    );
  assert.equal((await send("GET /a#frag HTTP/1.1")).status, 400);
  assert.equal((await send("GET /a\\..\\admin HTTP/1.1")).status, 400);
  const connect = await send("CONNECT a:443 HTTP/1.1");
  assert.equal(connect.status, 501);
  assert.match(connect.body, /use a TCP route/);
  assert.equal(origin.seen.length, 0);
  assert.equal((await send("OPTIONS * HTTP/1.1")).status, 200);
  assert.equal(origin.seen[0]!.line, "OPTIONS * HTTP/1.1");
});

Deno.test("an absolute-form target is routed by its own authority and forwarded in origin form", async () => {
  await using users = recordingOrigin();
  await using other = recordingOrigin();
  await using l = await startLegate({
    "users.yaml": route(users.httpUrl, "match: { host: users.local }\n"),
    "other.yaml": route(other.httpUrl),
  });
  const response = parsed(
    await rawHttp(
      l.address("users"),
      "GET http://users.local/p?q HTTP/1.1\r\nhost: other.local\r\nconnection: close\r\n\r\n",
    ),
  );
  assert.equal(response.status, 200);
  assert.deepEqual(other.seen, []);
  assert.equal(users.seen[0]!.line, "GET /p?q HTTP/1.1");
  assert.deepEqual(
    users.seen[0]!.headers.find(([name]) => name === "x-forwarded-host"),
    ["x-forwarded-host", "users.local"],
  );
});

Deno.test("h2c requests are routed by their :authority", async () => {
  await using users = recordingOrigin();
  await using other = recordingOrigin();
  await using l = await startLegate({
    "users.yaml": route(users.httpUrl, "match: { host: users.local }\n"),
    "other.yaml": route(other.httpUrl),
  });
  const port = l.address("users").split(":")[1];
  const curl = await new Deno.Command("curl", {
    args: [
      "--silent",
      "--http2-prior-knowledge",
      "--resolve",
      `users.local:${port}:127.0.0.1`,
      "--write-out",
      "%{http_version} %{http_code}",
      "--output",
      "/dev/null",
      `http://users.local:${port}/h2`,
    ],
  }).output();
  assert.equal(decoder.decode(curl.stdout), "2 200");
  assert.equal(users.seen[0]?.line, "GET /h2 HTTP/1.1");
  assert.deepEqual(other.seen, []);
});

Deno.test("a client's Connection header cannot strip the forwarding headers legate adds, nor Host", async () => {
  await using origin = recordingOrigin();
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  const response = parsed(
    await rawHttp(
      l.address("svc"),
      "GET / HTTP/1.1\r\nhost: app.local\r\n" +
        "connection: close, x-forwarded-for, via, x-forwarded-proto, x-forwarded-host, host, x-hop\r\n" +
        "x-forwarded-for: 203.0.113.9\r\nvia: 1.0 spoofed\r\nx-hop: 1\r\n" +
        "authorization: Bearer t\r\n\r\n",
    ),
  );
  assert.equal(response.status, 200);
  const headers = Object.fromEntries(origin.seen[0]!.headers);
  assert.equal(headers["host"], `127.0.0.1:${origin.port}`);
  assert.equal(headers["authorization"], "Bearer t");
  // Named in Connection, the client's own values are hop-by-hop: dropped.
  assert.equal(headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(headers["via"], "1.1 legate");
  assert.equal(headers["x-forwarded-proto"], "http");
  assert.equal(headers["x-forwarded-host"], "app.local");
  assert.equal(headers["x-hop"], undefined);
  assert.equal(origin.seen[0]!.headers.filter(([n]) => n === "host").length, 1);
});

Deno.test("a POST the origin read and closed on is not sent again; a GET is", async () => {
  // The second request on the first connection is read, then the connection
  // closes without an answer: the origin may have acted on it.
  let requests = 0;
  await using origin = recordingOrigin(() => ++requests === 2 ? "close" : "ok");
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  const address = l.address("svc");
  // No Content-Length: a request without a body, as curl -X POST sends it.
  const send = async (method: string) =>
    parsed(
      await rawHttp(
        address,
        `${method} /${method} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`,
      ),
    ).status;
  assert.equal(await send("GET"), 200);
  assert.equal(await send("POST"), 502);
  assert.deepEqual(origin.seen.map((r) => [r.line, r.connection]), [
    ["GET /GET HTTP/1.1", 1],
    ["POST /POST HTTP/1.1", 1],
  ]);

  requests = 0;
  await using again = recordingOrigin(() => ++requests === 2 ? "close" : "ok");
  await using l2 = await startLegate({ "svc.yaml": route(again.httpUrl) });
  const get = () =>
    fetch(`http://${l2.address("svc")}/x`).then(async (r) => {
      await r.body?.cancel();
      return r.status;
    });
  assert.equal(await get(), 200);
  assert.equal(await get(), 200);
  assert.deepEqual(again.seen.map((r) => r.connection), [1, 1, 2]);
});

Deno.test("POSTs sent right after the origin closed its idle connection all succeed", async () => {
  let closeNow = Promise.withResolvers<void>();
  let closed = Promise.withResolvers<void>();
  await using origin = startTcpServer(async (conn) => {
    const buffer = new Uint8Array(4096);
    if (await conn.read(buffer) === null) return;
    await conn.write(
      encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    );
    await closeNow.promise;
    conn.close();
    closed.resolve();
  });
  await using l = await startLegate({ "svc.yaml": route(origin.httpUrl) });
  const statuses: number[] = [];
  for (let i = 0; i < 50; i++) {
    const response = await fetch(`http://${l.address("svc")}/`, {
      method: "POST",
      body: "x",
    });
    await response.body?.cancel();
    statuses.push(response.status);
    // The origin closes the idle connection; the next POST follows at once.
    closeNow.resolve();
    if (response.status === 200) await closed.promise;
    closeNow = Promise.withResolvers();
    closed = Promise.withResolvers();
  }
  assert.deepEqual(statuses.filter((s) => s !== 200), []);
});

Deno.test("a connection is not reused past the origin's Keep-Alive timeout", async () => {
  await using origin = startTcpServer(async (conn) => {
    const buffer = new Uint8Array(4096);
    while (await conn.read(buffer) !== null) {
      // timeout=1 leaves no time to reuse the connection safely.
      await conn.write(
        encoder.encode(
          "HTTP/1.1 200 OK\r\nkeep-alive: timeout=1, max=100\r\ncontent-length: 2\r\n\r\nok",
        ),
      );
    }
  });
  let connections = 0;
  await using counting = startTcpServer(async (client) => {
    connections++;
    const upstream = await connectTo(`127.0.0.1:${origin.port}`);
    await Promise.all([
      client.readable.pipeTo(upstream.writable).catch(() => {}),
      upstream.readable.pipeTo(client.writable).catch(() => {}),
    ]);
  });
  await using l = await startLegate({ "svc.yaml": route(counting.httpUrl) });
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`http://${l.address("svc")}/`, {
      method: "POST",
      body: "x",
    });
    assert.equal(await response.text(), "ok");
  }
  assert.equal(connections, 3);
});

/**
 * Sends one HTTP/2 request with prior knowledge, its header block written
 * by hand (HPACK literals, no Huffman coding) so that any byte can be sent,
 * and returns the response's :status, or "reset" when the stream was reset.
 */
async function h2cStatus(
  address: string,
  headers: [string, string][],
): Promise<number | "reset"> {
  const conn = await connectTo(address);
  try {
    const block: number[] = [];
    for (const [name, value] of headers) {
      const nameBytes = encoder.encode(name);
      const valueBytes = encoder.encode(value);
      // Literal without indexing, new name (RFC 7541 6.2.2).
      block.push(0x00, ...hpackLength(nameBytes.length), ...nameBytes);
      block.push(...hpackLength(valueBytes.length), ...valueBytes);
    }
    await conn.write(encoder.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    await conn.write(frame(0x4, 0, 0, [])); // SETTINGS
    // HEADERS on stream 1: END_STREAM | END_HEADERS.
    await conn.write(frame(0x1, 0x5, 1, block));
    const received: number[] = [];
    const buffer = new Uint8Array(65536);
    while (true) {
      // Frames: 3-byte length, type, flags, 4-byte stream id, payload.
      for (let at = 0; at + 9 <= received.length;) {
        const length = (received[at]! << 16) | (received[at + 1]! << 8) |
          received[at + 2]!;
        const type = received[at + 3]!;
        const stream = received[at + 8]!;
        if (at + 9 + length > received.length) break;
        if (type === 0x3 && stream === 1) return "reset"; // RST_STREAM
        if (type === 0x1 && stream === 1) {
          // hyper sends :status first, indexed from the static table.
          const first = received[at + 9]! & 0x7f;
          const statuses: Record<number, number> = {
            8: 200,
            9: 204,
            10: 206,
            11: 304,
            12: 400,
            13: 404,
            14: 500,
          };
          return statuses[first] ?? -first;
        }
        at += 9 + length;
      }
      const n = await conn.read(buffer);
      if (n === null) throw new Error("connection closed before a response");
      received.push(...buffer.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}

function hpackLength(length: number): number[] {
  if (length < 127) return [length];
  const bytes = [127];
  for (length -= 127; length >= 128; length >>= 7) {
    bytes.push((length & 0x7f) | 0x80);
  }
  bytes.push(length);
  return bytes;
}

function frame(
  type: number,
  flags: number,
  stream: number,
  payload: number[],
): Uint8Array {
  return new Uint8Array([
    payload.length >> 16,
    (payload.length >> 8) & 0xff,
    payload.length & 0xff,
    type,
    flags,
    0,
    0,
    0,
    stream,
    ...payload,
  ]);
}

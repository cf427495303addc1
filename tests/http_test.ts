import assert from "node:assert/strict";
import {
  connectTo,
  drainGenerated,
  freePort,
  generatedStream,
  rawHttp,
  startLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";
import { assertNoDelayOnBothSides } from "./_socket_options.ts";

const encoder = new TextEncoder();

/** fetch drops a caller-set Host unless its client allows it. */
const hostClient = Deno.createHttpClient({ allowHost: true });

const route = (upstream: string, extra = "") =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\n${extra}`;

Deno.test("forwards every method with its body and status", async () => {
  await using upstream = startServer(async (req) =>
    new Response(
      req.method === "HEAD" ? null : `${req.method} ${await req.text()}`,
      {
        status: req.method === "POST" ? 201 : 200,
        headers: { "x-method": req.method },
      },
    )
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  for (
    const method of ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
  ) {
    const hasBody = ["POST", "PUT", "PATCH"].includes(method);
    const response = await fetch(`http://${l.address("svc")}/x`, {
      method,
      ...(hasBody ? { body: "payload" } : {}),
    });
    assert.equal(response.status, method === "POST" ? 201 : 200, method);
    assert.equal(response.headers.get("x-method"), method);
    assert.equal(
      await response.text(),
      method === "HEAD" ? "" : `${method} ${hasBody ? "payload" : ""}`,
    );
  }
});

Deno.test("HEAD keeps the upstream's Content-Length and sends no body", async () => {
  await using upstream = startServer(() =>
    new Response(null, { headers: { "content-length": "12345" } })
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const text = await rawHttp(
    l.address("svc"),
    "HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
  );
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.match(text, /content-length: 12345\r\n/i);
  assert.ok(text.endsWith("\r\n\r\n"), "no body after the head");
});

Deno.test("streams a request body of unknown length without buffering it", async () => {
  const total = 64 * 1024 * 1024;
  let sawChunked = false;
  await using upstream = startServer(async (req) => {
    sawChunked = req.headers.get("transfer-encoding") === "chunked";
    const { bytes, intact } = await drainGenerated(req.body!);
    return Response.json({ bytes, intact });
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const response = await fetch(`http://${l.address("svc")}/upload`, {
    method: "POST",
    body: generatedStream(total),
  });
  assert.deepEqual(await response.json(), { bytes: total, intact: true });
  assert.ok(sawChunked, "unknown length goes upstream chunked");
});

Deno.test("streams a response body of unknown length and delivers the first bytes before the last are made", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  await using upstream = startServer(() =>
    new Response(
      new ReadableStream({
        async start(controller) {
          controller.enqueue(new TextEncoder().encode("first;"));
          await gate;
          controller.enqueue(new TextEncoder().encode("last"));
          controller.close();
        },
      }),
    )
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const response = await fetch(`http://${l.address("svc")}/`);
  const reader = response.body!.getReader();
  const first = await reader.read();
  assert.equal(new TextDecoder().decode(first.value), "first;");
  release();
  let rest = "";
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    rest += new TextDecoder().decode(r.value);
  }
  assert.equal(rest, "last");
});

Deno.test("streams a large download intact", async () => {
  const total = 64 * 1024 * 1024;
  await using upstream = startServer(() =>
    new Response(generatedStream(total))
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.deepEqual(await drainGenerated(response.body!), {
    bytes: total,
    intact: true,
  });
});

Deno.test("passes a gzip response through byte-identical with its Content-Encoding", async () => {
  const compressed = new Uint8Array(
    await new Response(
      new Blob(["legate ".repeat(1000)]).stream().pipeThrough(
        new CompressionStream("gzip"),
      ),
    ).arrayBuffer(),
  );
  let acceptEncoding: string | null = null;
  await using upstream = startServer((req) => {
    acceptEncoding = req.headers.get("accept-encoding");
    return new Response(compressed, {
      headers: { "content-encoding": "gzip", "content-type": "text/plain" },
    });
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const conn = await connectTo(l.address("svc"));
  await conn.write(
    new TextEncoder().encode(
      "GET / HTTP/1.1\r\nhost: a\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n",
    ),
  );
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for await (const chunk of conn.readable) chunks.push(new Uint8Array(chunk));
  const raw = new Uint8Array(await new Blob(chunks).arrayBuffer());
  const headEnd = raw.findIndex((_, i) =>
    raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10
  );
  const head = new TextDecoder().decode(raw.subarray(0, headEnd));
  assert.match(head, /content-encoding: gzip/i);
  assert.match(head, new RegExp(`content-length: ${compressed.length}`, "i"));
  assert.deepEqual(raw.subarray(headEnd + 4), compressed);
  assert.equal(
    acceptEncoding,
    "gzip",
    "the client's Accept-Encoding goes upstream unchanged",
  );
});

Deno.test("passes a redirect through instead of following it", async () => {
  await using upstream = startServer(() =>
    new Response(null, {
      status: 302,
      headers: { location: "http://127.0.0.1:1/elsewhere" },
    })
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const response = await fetch(`http://${l.address("svc")}/`, {
    redirect: "manual",
  });
  await response.body?.cancel();
  assert.equal(response.status, 302);
  assert.equal(
    response.headers.get("location"),
    "http://127.0.0.1:1/elsewhere",
  );
});

Deno.test("drops hop-by-hop headers both ways and sets X-Forwarded-* and Via", async () => {
  let seen: Headers = new Headers();
  await using upstream = startServer((req) => {
    seen = req.headers;
    return new Response("ok", {
      headers: {
        connection: "x-hop-response",
        "x-hop-response": "1",
        "keep-alive": "timeout=5",
        "x-end": "1",
      },
    });
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const text = await rawHttp(
    l.address("svc"),
    "GET / HTTP/1.1\r\nhost: app.local:8080\r\nconnection: close, x-hop\r\nx-hop: 1\r\nkeep-alive: 300\r\n" +
      "proxy-authorization: secret\r\nte: trailers\r\nupgrade: websocket\r\nx-forwarded-for: 10.1.1.1\r\nx-end-to-end: kept\r\n\r\n",
  );
  for (
    const name of [
      "x-hop",
      "keep-alive",
      "proxy-authorization",
      "te",
      "upgrade",
    ]
  ) {
    assert.equal(seen.get(name), null, `${name} must not reach the upstream`);
  }
  assert.equal(seen.get("x-end-to-end"), "kept");
  assert.equal(seen.get("x-forwarded-for"), "10.1.1.1, 127.0.0.1");
  assert.equal(seen.get("x-forwarded-proto"), "http");
  assert.equal(seen.get("x-forwarded-host"), "app.local:8080");
  assert.equal(seen.get("via"), "1.1 legate");
  assert.doesNotMatch(text, /x-hop-response/i);
  assert.doesNotMatch(text, /keep-alive: timeout/i);
  assert.match(text, /x-end: 1/i);
  assert.match(text, /via: 1.1 legate/i);
});

Deno.test("sets Host to the upstream's authority unless preserve_host is true", async () => {
  const hosts: string[] = [];
  await using upstream = startServer((req) => {
    hosts.push(req.headers.get("host")!);
    return new Response("ok");
  });
  await using l = await startLegate({
    "plain.yaml": route(upstream.url, "match: { path_prefix: /plain }\n"),
    "kept.yaml": route(
      upstream.url,
      "match: { path_prefix: /kept }\npreserve_host: true\n",
    ),
  });
  for (const path of ["/plain", "/kept"]) {
    await (await fetch(`http://${l.address("plain")}${path}`, {
      headers: { host: "app.local" },
      client: hostClient,
    })).text();
  }
  assert.deepEqual(hosts, [`127.0.0.1:${upstream.port}`, "app.local"]);
});

Deno.test("preserves query strings and percent-encoded paths exactly, dot segments aside", async () => {
  const targets: string[] = [];
  await using upstream = startServer((req) => {
    targets.push(req.url.slice(req.url.indexOf("/", 8)));
    return new Response("ok");
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const target = "/a%2Fb/c%20d%3B.txt?q=%26x&empty=&plus=a+b&up=/../";
  await rawHttp(
    l.address("svc"),
    `GET ${target} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`,
  );
  assert.deepEqual(targets, [target]);
});

Deno.test("routes by exact host, then *.suffix, then longest path prefix, and strips only the matched prefix", async () => {
  const seen: string[] = [];
  const server = (name: string) =>
    startServer((req) => {
      seen.push(`${name} ${req.url.slice(req.url.indexOf("/", 8))}`);
      return new Response(name);
    });
  await using web = server("web");
  await using api = server("api");
  await using apiV2 = server("api-v2");
  await using wild = server("wild");
  await using exact = server("exact");
  await using l = await startLegate({
    "web.yaml": route(web.url),
    "api.yaml": route(
      api.url,
      "match: { path_prefix: /api }\nstrip_prefix: true\n",
    ),
    "api-v2.yaml": route(
      apiV2.url,
      "match: { path_prefix: /api/v2/ }\nstrip_prefix: true\n",
    ),
    "wild.yaml": route(wild.url, "match: { host: '*.example.com' }\n"),
    "exact.yaml": route(exact.url, "match: { host: a.example.com }\n"),
  });
  const address = l.address("web");
  const get = async (host: string, path: string) =>
    await (await fetch(`http://${address}${path}`, {
      headers: { host },
      client: hostClient,
    })).text();
  assert.equal(await get("other", "/"), "web");
  assert.equal(await get("other", "/api"), "api");
  assert.equal(await get("other", "/api/users?x=1"), "api");
  assert.equal(await get("other", "/apis"), "web");
  assert.equal(await get("other", "/api/v2/items"), "api-v2");
  assert.equal(await get("b.example.com:8080", "/api"), "wild");
  assert.equal(await get("A.Example.com", "/"), "exact");
  assert.deepEqual(seen, [
    "web /",
    "api /",
    "api /users?x=1",
    "web /apis",
    "api-v2 /items",
    "wild /api",
    "exact /",
  ]);
});

Deno.test("answers 404 naming the listener's services when nothing matches", async () => {
  await using upstream = startServer(() => new Response("ok"));
  await using l = await startLegate({
    "api.yaml": route(upstream.url, "match: { path_prefix: /api }\n"),
  });
  const response = await fetch(`http://${l.address("api")}/other`);
  assert.equal(response.status, 404);
  assert.equal(
    response.headers.get("proxy-status"),
    "legate; error=destination_not_found",
  );
  assert.match(await response.text(), /api \(host \*, path \/api\)/);
});

Deno.test("answers 502 when the upstream refuses the connection", async () => {
  await using l = await startLegate({
    "svc.yaml": route(`http://127.0.0.1:${freePort()}`),
  });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.equal(response.status, 502);
  assert.equal(
    response.headers.get("proxy-status"),
    "legate; error=connection_refused",
  );
  assert.match(response.headers.get("content-type")!, /^text\/plain/);
  assert.match(await response.text(), /connection refused/);
  await (await fetch(`http://${l.address("svc")}/`)).text();
  assert.equal(
    l.lines.filter((line) => line.includes("upstream unreachable")).length,
    1,
    "a down upstream is logged once, not per request",
  );
});

Deno.test("answers 504 when the upstream sends no headers within timeouts.request", async () => {
  // Accepts and reads, never answers.
  await using hung = startTcpServer(async (conn) => {
    while (await conn.read(new Uint8Array(4096)) !== null) { /* ignore */ }
  });
  await using l = await startLegate({
    "svc.yaml": route(hung.httpUrl, "timeouts: { request: 300ms }\n"),
  });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.equal(response.status, 504);
  assert.equal(
    response.headers.get("proxy-status"),
    "legate; error=http_response_timeout",
  );
  await response.text();
});

Deno.test("cuts the client's response when the upstream resets mid-body", async () => {
  await using upstream = startTcpServer(async (conn) => {
    await conn.read(new Uint8Array(4096));
    await conn.write(
      encoder.encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\npartial",
      ),
    );
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.httpUrl) });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.equal(response.status, 200);
  await assert.rejects(response.text());
});

Deno.test("a client that stops reading holds the upstream back, and the download goes on when it reads again", async () => {
  const total = 256 * 1024 * 1024;
  let made = 0;
  await using upstream = startServer(() =>
    new Response(
      generatedStream(total).pipeThrough(
        new TransformStream({
          transform(chunk, controller) {
            made += chunk.length;
            controller.enqueue(chunk);
          },
        }),
      ),
    )
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const client = await connectTo(l.address("svc"));
  try {
    await client.write(
      encoder.encode(
        "GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
      ),
    );
    // The client reads nothing: the upstream must come to a stop, once the
    // sockets' buffers and legate's (a chunk of at most 1 MiB and one read
    // ahead) are full.
    let last = -1;
    let still = 0;
    for (let poll = 0; poll < 300 && still < 5; poll++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      still = made === last ? still + 1 : 0;
      last = made;
    }
    assert.equal(still, 5, `the upstream never stopped (${made} bytes made)`);
    assert.ok(made < 64 * 1024 * 1024, `${made} bytes left the upstream`);
    // Reading again takes the whole body, which ends with the last chunk.
    const buffer = new Uint8Array(1024 * 1024);
    let received = 0;
    let tail = "";
    for (
      let n = await client.read(buffer);
      n !== null;
      n = await client.read(buffer)
    ) {
      received += n;
      tail = (tail +
        new TextDecoder().decode(buffer.subarray(Math.max(0, n - 7), n)))
        .slice(-7);
    }
    assert.equal(made, total);
    assert.ok(received > total, `${received} bytes received`);
    assert.equal(tail, "\r\n0\r\n\r\n");
  } finally {
    client.close();
  }
});

Deno.test("a client that goes away mid-download cancels the upstream body", async () => {
  let cancelled = false;
  await using upstream = startServer(() =>
    new Response(
      new ReadableStream({
        pull(controller) {
          controller.enqueue(new Uint8Array(64 * 1024));
          return new Promise((resolve) => setTimeout(resolve, 5));
        },
        cancel() {
          cancelled = true;
        },
      }),
    )
  );
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const response = await fetch(`http://${l.address("svc")}/`);
  const reader = response.body!.getReader();
  await reader.read();
  await reader.cancel();
  await waitFor(() => cancelled, "the upstream body to be cancelled");
});

Deno.test("reuses upstream connections and never fails a request on one the upstream closed", async () => {
  let connections = 0;
  // Answers two requests on each connection, then closes it as an idle upstream would.
  await using upstream = startTcpServer(async (conn) => {
    connections++;
    const buffer = new Uint8Array(4096);
    for (let i = 0; i < 2; i++) {
      if (await conn.read(buffer) === null) break;
      await conn.write(
        encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
      );
    }
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.httpUrl) });
  for (let i = 0; i < 6; i++) {
    const response = await fetch(`http://${l.address("svc")}/`);
    assert.equal(response.status, 200, `request ${i}`);
    assert.equal(await response.text(), "ok");
  }
  assert.equal(connections, 3, "two requests per upstream connection");
});

Deno.test("spreads requests over weighted upstreams and moves on when one refuses", async () => {
  const counts = { a: 0, b: 0 };
  await using a = startServer(() => (counts.a++, new Response("a")));
  await using b = startServer(() => (counts.b++, new Response("b")));
  const downPort = freePort();
  await using l = await startLegate({
    "svc.yaml": `listen: 127.0.0.1:0
upstreams:
  - url: ${a.url}
    weight: 3
  - ${b.url}
  - http://127.0.0.1:${downPort}
`,
  });
  for (let i = 0; i < 50; i++) {
    const response = await fetch(`http://${l.address("svc")}/`);
    assert.equal(response.status, 200);
    await response.text();
  }
  assert.equal(counts.a + counts.b, 50);
  assert.ok(
    counts.a > counts.b * 2,
    `weights 3:1 give ${JSON.stringify(counts)}`,
  );
});

Deno.test("answers 502 when the upstream does not speak HTTP", async () => {
  await using upstream = startTcpServer(async (conn) => {
    await conn.read(new Uint8Array(4096));
    await conn.write(encoder.encode("SSH-2.0-OpenSSH_9.6\r\n\r\n"));
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.httpUrl) });
  const response = await fetch(`http://${l.address("svc")}/`);
  assert.equal(response.status, 502);
  assert.equal(
    response.headers.get("proxy-status"),
    "legate; error=http_protocol_error",
  );
  assert.match(
    await response.text(),
    /invalid status line: "SSH-2\.0-OpenSSH_9\.6"/,
  );
});

Deno.test("a client that goes away mid-upload ends the upstream's request body", async () => {
  let upstreamOutcome = "";
  await using upstream = startServer(async (req) => {
    try {
      await drainGenerated(req.body!);
      upstreamOutcome = "complete";
    } catch {
      upstreamOutcome = "cut";
    }
    return new Response("done");
  });
  await using l = await startLegate({ "svc.yaml": route(upstream.url) });
  const conn = await connectTo(l.address("svc"));
  await conn.write(
    new TextEncoder().encode(
      "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1000000\r\n\r\n",
    ),
  );
  await conn.write(new Uint8Array(1000));
  await waitFor(
    () => l.legate.listeners[0]!.listener.active() === 1,
    "the upload to be in flight",
  );
  conn.close();
  await waitFor(
    () => upstreamOutcome !== "",
    "the upstream to see the upload end",
  );
  assert.equal(upstreamOutcome, "cut");
});

Deno.test("a request body sent after its headers is not held back by Nagle's algorithm", async () => {
  // With Nagle's algorithm on, a body written after its headers waits for the
  // peer's delayed ACK of the headers: 40 ms or more per request. Both of
  // legate's sockets must have it off; reading the option says so exactly,
  // where timing requests on a busy machine can only guess.
  const legateEnd = Promise.withResolvers<Deno.NetAddr>();
  const probed = Promise.withResolvers<void>();
  await using upstream = startServer(async (_req, info) => {
    legateEnd.resolve(info.remoteAddr as Deno.NetAddr);
    // Both connections stay open while they are probed.
    await probed.promise;
    return new Response("ok");
  });
  await using l = await startLegate({ "body.yaml": route(upstream.url) });
  using conn = await connectTo(l.address("body"));
  await conn.write(encoder.encode(
    "POST /echo HTTP/1.1\r\nhost: legate.test\r\ncontent-length: 2\r\n\r\nhi",
  ));
  await assertNoDelayOnBothSides(
    conn,
    (await legateEnd.promise).port,
    upstream.port,
  ).finally(() => probed.resolve());
  const received = new Uint8Array(4096);
  let text = "";
  while (!text.endsWith("\r\n\r\nok")) {
    const n = await conn.read(received);
    assert.ok(n !== null, `legate closed the connection after: ${text}`);
    text += new TextDecoder().decode(received.subarray(0, n));
  }
});

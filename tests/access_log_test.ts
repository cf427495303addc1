import assert from "node:assert/strict";
import { AccessLog } from "../src/server/access_log.ts";
import {
  echoBytes,
  echoedThrough,
  freePort,
  legateCommand,
  rawHttp,
  spawnLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";

const BODY = "x".repeat(1234);

/** Routes of every kind of line: served, retried and refused, unmatched, TCP. */
function startRoutes() {
  const web = startServer(async (request) => {
    const received = (await request.arrayBuffer()).byteLength;
    return new Response(request.method === "POST" ? `got ${received}` : BODY, {
      status: request.method === "POST" ? 201 : 200,
    });
  });
  const echo = startTcpServer(echoBytes);
  const ports = { web: freePort(), down: freePort(), echo: freePort() };
  const files = {
    "web.yaml":
      `listen: 127.0.0.1:${ports.web}\nupstreams: [${web.url}]\nmatch: { path_prefix: /api }\n`,
    "down.yaml":
      `listen: 127.0.0.1:${ports.down}\nupstreams: [http://127.0.0.1:${freePort()}]\nretries: { attempts: 3 }\n`,
    "echo.yaml":
      `listen: 127.0.0.1:${ports.echo}\nupstreams: [${echo.tcpUrl}]\n`,
  };
  return { web, echo, ports, files };
}

/** Sends one of each: GET, POST with a body, unmatched path, refused upstream, TCP. */
async function sendTraffic(ports: { web: number; down: number; echo: number }) {
  const web = `127.0.0.1:${ports.web}`;
  const get = await fetch(`http://${web}/api/users/42?q=%22a%22`, {
    headers: { "x-request-id": "app-7f3a" },
  });
  assert.equal((await get.text()).length, BODY.length);
  const post = await fetch(`http://${web}/api/orders`, {
    method: "POST",
    body: "y".repeat(500),
  });
  assert.equal(await post.text(), "got 500");
  const unmatched = await fetch(`http://${web}/other`);
  await unmatched.body?.cancel();
  assert.equal(unmatched.status, 404);
  const down = await fetch(`http://127.0.0.1:${ports.down}/x`);
  await down.body?.cancel();
  assert.equal(down.status, 502);
  assert.equal(await echoedThrough(`127.0.0.1:${ports.echo}`, 777), 777);
  // Each client learns its request's ID, legate's own answers included.
  return [get, post, unmatched, down].map((r) => r.headers.get("x-request-id"));
}

Deno.test("--access-log json writes one JSON line per request and per TCP connection to standard output, with every field", async () => {
  const { web, echo, ports, files } = startRoutes();
  await using _web = web;
  await using _echo = echo;
  const legate = await spawnLegate(files, ["--access-log", "json"]);
  let ids: (string | null)[];
  try {
    ids = await sendTraffic(ports);
    await waitFor(() => legate.output.length >= 5, "five access log lines");
  } finally {
    legate.child.kill("SIGTERM");
  }
  assert.equal(await legate.exit(), 0);
  const lines = legate.output.map((line) => JSON.parse(line));
  for (const line of lines) {
    assert.ok(!Number.isNaN(Date.parse(line.time)), line.time);
    assert.equal(typeof line.duration_ms, "number");
    assert.equal(line.client, "127.0.0.1");
  }
  const strip = (
    { time: _t, duration_ms: _d, upstream_ms, ...rest }: Record<
      string,
      unknown
    >,
  ) => ({ ...rest, upstream_ms: typeof upstream_ms });
  const http = lines.filter((l) => "method" in l);
  assert.equal(ids[0], "app-7f3a");
  for (const id of ids.slice(1)) assert.match(id!, /^[0-9a-f-]{36}$/);
  assert.deepEqual(http.map(strip), [
    {
      service: "web",
      client: "127.0.0.1",
      method: "GET",
      target: "/api/users/42?q=%22a%22",
      status: 200,
      bytes_in: 0,
      bytes_out: BODY.length,
      upstream: web.url.slice("http://".length),
      upstream_ms: "number",
      attempts: 1,
      request_id: ids[0],
      trace_id: null,
      error: null,
    },
    {
      service: "web",
      client: "127.0.0.1",
      method: "POST",
      target: "/api/orders",
      status: 201,
      bytes_in: 500,
      bytes_out: "got 500".length,
      upstream: web.url.slice("http://".length),
      upstream_ms: "number",
      attempts: 1,
      request_id: ids[1],
      trace_id: null,
      error: null,
    },
    {
      service: null,
      client: "127.0.0.1",
      method: "GET",
      target: "/other",
      status: 404,
      bytes_in: 0,
      bytes_out: http[2].bytes_out,
      upstream: null,
      upstream_ms: "object",
      attempts: 0,
      request_id: ids[2],
      trace_id: null,
      error: "destination_not_found",
    },
    {
      service: "down",
      client: "127.0.0.1",
      method: "GET",
      target: "/x",
      status: 502,
      bytes_in: 0,
      bytes_out: http[3].bytes_out,
      upstream: null,
      upstream_ms: "object",
      attempts: 3,
      request_id: ids[3],
      trace_id: null,
      error: "connection_refused",
    },
  ]);
  // Error bodies are counted as sent.
  assert.ok(http[2].bytes_out > 0 && http[3].bytes_out > 0);
  const tcp = lines.filter((l) => !("method" in l));
  assert.deepEqual(tcp.map(({ time: _t, duration_ms: _d, ...rest }) => rest), [
    {
      service: "echo",
      client: "127.0.0.1",
      upstream: echo.tcpUrl.slice("tcp://".length),
      bytes_in: 777,
      bytes_out: 777,
      error: null,
    },
  ]);
  // The access log is on standard output only; legate's own log, on
  // standard error, has none of it.
  assert.ok(!legate.events.some((e) => e.msg === "stderr"));
  assert.ok(!legate.events.some((e) => "bytes_out" in e));
});

Deno.test("--access-log text writes one readable line per request and per connection, in a fixed order", async () => {
  const { web, echo, ports, files } = startRoutes();
  await using _web = web;
  await using _echo = echo;
  const legate = await spawnLegate(files, [], { LEGATE_ACCESS_LOG: "text" });
  try {
    await sendTraffic(ports);
    await waitFor(() => legate.output.length >= 5, "five access log lines");
  } finally {
    legate.child.kill("SIGTERM");
  }
  assert.equal(await legate.exit(), 0);
  const time = String.raw`\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\]`;
  const ms = String.raw`\d+(\.\d+)?ms`;
  const host = web.url.slice("http://".length);
  const id = String.raw`[0-9a-f-]{36}`;
  const expected = [
    `127\\.0\\.0\\.1 ${time} "GET /api/users/42\\?q=%22a%22" 200 ${BODY.length} in=0 ${ms} service=web upstream=${host} upstream_ms=[\\d.]+ attempts=1 request_id=app-7f3a trace_id=- error=-`,
    `127\\.0\\.0\\.1 ${time} "POST /api/orders" 201 7 in=500 ${ms} service=web upstream=${host} upstream_ms=[\\d.]+ attempts=1 request_id=${id} trace_id=- error=-`,
    `127\\.0\\.0\\.1 ${time} "GET /other" 404 \\d+ in=0 ${ms} service=- upstream=- upstream_ms=- attempts=0 request_id=${id} trace_id=- error=destination_not_found`,
    `127\\.0\\.0\\.1 ${time} "GET /x" 502 \\d+ in=0 ${ms} service=down upstream=- upstream_ms=- attempts=3 request_id=${id} trace_id=- error=connection_refused`,
    `127\\.0\\.0\\.1 ${time} TCP 777 in=777 ${ms} service=echo upstream=${
      echo.tcpUrl.slice("tcp://".length)
    } error=-`,
  ];
  assert.equal(legate.output.length, expected.length, legate.output.join("\n"));
  legate.output.forEach((line, i) =>
    assert.match(line, new RegExp(`^${expected[i]}$`))
  );
});

Deno.test("the access log is off by default: standard output stays empty", async () => {
  const { web, echo, ports, files } = startRoutes();
  await using _web = web;
  await using _echo = echo;
  const legate = await spawnLegate(files);
  try {
    await sendTraffic(ports);
  } finally {
    legate.child.kill("SIGTERM");
  }
  assert.equal(await legate.exit(), 0);
  assert.deepEqual(legate.output, []);
});

Deno.test("an access log line is written once the response body has been sent, with its full size", async () => {
  const size = 3 * 1024 * 1024;
  await using upstream = startServer(() =>
    new Response(
      new ReadableStream({
        pull(controller) {
          controller.enqueue(new Uint8Array(64 * 1024));
          if (--pieces === 0) controller.close();
        },
      }),
    )
  );
  let pieces = size / (64 * 1024);
  const port = freePort();
  const legate = await spawnLegate({
    "big.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n`,
  }, ["--access-log", "json"]);
  try {
    const response = await fetch(`http://127.0.0.1:${port}/`);
    const reader = response.body!.getReader();
    const first = await reader.read();
    assert.ok(!first.done);
    // Headers and some of the body are here; the request is not over.
    assert.deepEqual(legate.output, []);
    let received = first.value.length;
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      received += r.value.length;
    }
    assert.equal(received, size);
    await waitFor(() => legate.output.length === 1, "the access log line");
    assert.equal(JSON.parse(legate.output[0]!).bytes_out, size);
  } finally {
    legate.child.kill("SIGTERM");
  }
  assert.equal(await legate.exit(), 0);
});

Deno.test("a target with a quote cannot forge a text access log line: it is escaped", async () => {
  await using upstream = startServer(() => new Response("ok"));
  const port = freePort();
  const legate = await spawnLegate({
    "svc.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n`,
  }, ["--access-log", "text"]);
  try {
    // Deno's parser lets a raw quote and a backslash through in a request
    // target (control bytes and spaces it refuses); legate refuses the
    // backslash and logs the target as sent, where a quote must not end
    // the field.
    const reply = await rawHttp(
      `127.0.0.1:${port}`,
      'GET /a"b\\"c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    assert.match(reply, /^HTTP\/1.1 400 /);
    await waitFor(() => legate.output.length >= 1, "the access log line");
  } finally {
    legate.child.kill("SIGTERM");
  }
  assert.equal(await legate.exit(), 0);
  assert.equal(legate.output.length, 1, legate.output.join("\n"));
  assert.ok(
    legate.output[0]!.includes(String.raw`"GET /a\"b\\\"c" 400 `),
    legate.output[0],
  );
});

Deno.test("AccessLog never waits for a stuck reader: past its buffer it drops and counts lines", async () => {
  const writes: Uint8Array[] = [];
  let unblock!: () => void;
  const blocked = new Promise<void>((resolve) => unblock = resolve);
  const log = new AccessLog("json", {
    maxBuffered: 10_000,
    flushMs: 1,
    writer: {
      async write(bytes) {
        writes.push(bytes.slice());
        await blocked;
        return bytes.length;
      },
    },
  });
  const line = (n: number) => ({
    startedAt: 0,
    service: "svc",
    client: "127.0.0.1",
    endpoint: null,
    bytesIn: n,
    bytesOut: 0,
    durationMs: 1,
    error: null,
  });
  // The first line starts a write that never ends; the rest pile up.
  log.connection(line(0));
  await waitFor(() => writes.length === 1, "the first write");
  const logged = 1000;
  for (let i = 1; i < logged; i++) log.connection(line(i));
  assert.ok(log.dropped > 0, "some lines are dropped");
  assert.ok(log.dropped < logged - 1, "not all of them");
  unblock();
  await log.flush();
  const text = new TextDecoder().decode(
    new Uint8Array(writes.flatMap((w) => [...w])),
  );
  const written = text.trimEnd().split("\n").map((l) => JSON.parse(l).bytes_in);
  // What was written is whole, in order, and exactly what was not dropped.
  assert.equal(written.length + log.dropped, logged);
  assert.deepEqual(written, [...written].sort((a, b) => a - b));
  assert.deepEqual(written.slice(0, 3), [0, 1, 2]);
});

Deno.test("--access-log refuses anything but off, text and json", async () => {
  const output = await legateCommand(["serve", "--access-log", "yes"])
    .output();
  assert.equal(output.code, 2);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /--access-log: "yes": use off, text or json/,
  );
});

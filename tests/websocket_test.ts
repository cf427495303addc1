import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import WebSocketClient from "ws";
import { makeCa } from "./_certificates.ts";
import {
  freePort,
  rawHttp,
  spawnLegate,
  startLegate,
  startServer,
  waitFor,
} from "./_helpers.ts";

const route = (upstream: string, extra = "") =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\n${extra}`;

Deno.test("a service without websocket: refuses WebSocket with 501 saying how to enable it; other upgrades get 501, and h2c is ignored", async () => {
  await using upstream = startServer(() => new Response("plain"));
  await using l = await startLegate({ "svc.yaml": route(upstream.url, "") });
  const websocket = await rawHttp(
    l.address("svc"),
    "GET /chat HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  assert.match(websocket, /^HTTP\/1\.1 501 /);
  assert.match(websocket, /proxy-status: legate; error=http_request_error/i);
  assert.match(
    websocket,
    /service "svc" does not forward WebSocket; add "websocket: \{\}" to its route file to enable it/,
  );
  // Deno's own client sees the handshake fail.
  const ws = new WebSocket(`ws://${l.address("svc")}/chat`);
  const failed = await new Promise<string>((resolve) => {
    ws.onerror = (event) => resolve((event as ErrorEvent).message);
  });
  assert.match(failed, /501/);
  const other = await rawHttp(
    l.address("svc"),
    "GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: IRC/6.9\r\n\r\n",
  );
  assert.match(other, /^HTTP\/1\.1 501 /);
  assert.match(other, /not upgrade HTTP to "IRC\/6\.9"; use a TCP route/);
  // An Upgrade that Connection does not name is no upgrade request.
  const unnamed = await rawHttp(
    l.address("svc"),
    "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\nupgrade: websocket\r\n\r\n",
  );
  assert.match(unnamed, /^HTTP\/1\.1 200 /);
  // curl --http2 on http:// asks for h2c: served over HTTP/1.1 instead.
  const curl = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--http2",
      "-w",
      " %{http_version}",
      `http://${l.address("svc")}/`,
    ],
  }).output();
  assert.equal(new TextDecoder().decode(curl.stdout), "plain 1.1");
});

Deno.test("a TCP route carries WebSocket: subprotocol, messages both ways, close code", async () => {
  let seen: Request | undefined;
  await using upstream = startServer((req) => {
    seen = req;
    const { socket, response } = Deno.upgradeWebSocket(req, {
      protocol: "chat.v1",
    });
    socket.onmessage = (event) =>
      socket.send(
        typeof event.data === "string"
          ? `echo ${event.data}`
          : new Uint8Array(event.data).reverse(),
      );
    socket.onclose = (event) => closed.resolve([event.code, event.reason]);
    return response;
  });
  const closed = Promise.withResolvers<[number, string]>();
  await using l = await startLegate({
    "chat.yaml": route(`tcp://127.0.0.1:${upstream.port}`),
  });
  const ws = new WebSocket(`ws://${l.address("chat")}/room/1`, [
    "chat.v2",
    "chat.v1",
  ]);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve) => ws.onopen = resolve);
  assert.equal(ws.protocol, "chat.v1");
  assert.equal(new URL(seen!.url).pathname, "/room/1");
  const messages: unknown[] = [];
  const all = Promise.withResolvers<void>();
  ws.onmessage = (event) => {
    messages.push(
      typeof event.data === "string"
        ? event.data
        : [...new Uint8Array(event.data)],
    );
    if (messages.length === 3) all.resolve();
  };
  ws.send("one");
  ws.send(new Uint8Array([1, 2, 3]));
  ws.send("two");
  await all.promise;
  assert.deepEqual(messages, ["echo one", [3, 2, 1], "echo two"]);
  ws.close(4001, "done here");
  assert.deepEqual(await closed.promise, [4001, "done here"]);
});

/** What an upstream WebSocket server saw. */
interface Seen {
  /** The handshake's URL and headers. */
  request?: { url: string; headers: Headers };
  /** Messages received, as text or byte arrays, in order. */
  readonly messages: unknown[];
  /** The close code and reason it got. */
  readonly closed: PromiseWithResolvers<[number, string]>;
}

/**
 * A Deno WebSocket server that picks subprotocol `chat.v1` when offered,
 * echoes text as "echo TEXT" and bytes reversed, and on "bye" closes with
 * 4100 "server done"; plain requests get "plain".
 */
function echoUpstream(): {
  server: ReturnType<typeof startServer>;
  seen: Seen;
} {
  const seen: Seen = { messages: [], closed: Promise.withResolvers() };
  const server = startServer((req) => {
    if (req.headers.get("upgrade") !== "websocket") {
      return new Response("plain");
    }
    seen.request = { url: req.url, headers: new Headers(req.headers) };
    const offered = req.headers.get("sec-websocket-protocol") ?? "";
    const { socket, response } = Deno.upgradeWebSocket(
      req,
      offered.split(", ").includes("chat.v1") ? { protocol: "chat.v1" } : {},
    );
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      const data = typeof event.data === "string"
        ? event.data
        : [...new Uint8Array(event.data)];
      seen.messages.push(data);
      if (data === "bye") socket.close(4100, "server done");
      else if (typeof event.data === "string") {
        socket.send(`echo ${event.data}`);
      } else socket.send(new Uint8Array(event.data).reverse());
    };
    socket.onclose = (event) => seen.closed.resolve([event.code, event.reason]);
    return response;
  });
  return { server, seen };
}

/** Resolves when `ws` opens; rejects with the error's message when it fails. */
function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (event) => reject(new Error((event as ErrorEvent).message));
  });
}

function closedWith(ws: WebSocket): Promise<[number, string]> {
  return new Promise((resolve) =>
    ws.onclose = (event) => resolve([event.code, event.reason])
  );
}

/** The next `count` messages `ws` receives, text as is and bytes as arrays. */
function nextMessages(ws: WebSocket, count: number): Promise<unknown[]> {
  ws.binaryType = "arraybuffer";
  const got: unknown[] = [];
  return new Promise((resolve) => {
    ws.onmessage = (event) => {
      got.push(
        typeof event.data === "string"
          ? event.data
          : [...new Uint8Array(event.data)],
      );
      if (got.length === count) resolve(got);
    };
  });
}

const WS_ROUTE = (upstream: string, extra = "") =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\nwebsocket: {}\n${extra}`;

Deno.test("Deno's WebSocket through an HTTP route: path after prefix stripping, end-to-end and forwarding headers, header rules, subprotocol, messages in order both ways, close codes both ways", async () => {
  const { server, seen } = echoUpstream();
  await using _upstream = server;
  await using l = await startLegate({
    "chat.yaml": WS_ROUTE(
      server.url,
      "match: { path_prefix: /chat }\nstrip_prefix: true\nrequest_headers: { set: { x-tenant: acme }, remove: [x-debug] }\nresponse_headers: { add: { x-served-by: legate } }\n",
    ),
  });
  const ws = new WebSocket(`ws://${l.address("chat")}/chat/room/1?x=2`, {
    protocols: ["chat.v2", "chat.v1"],
    headers: {
      cookie: "session=abc",
      authorization: "Bearer t0ken",
      "x-debug": "1",
    },
  });
  await opened(ws);
  assert.equal(ws.protocol, "chat.v1");
  const request = seen.request!;
  const url = new URL(request.url);
  assert.equal(url.pathname + url.search, "/room/1?x=2");
  assert.equal(request.headers.get("cookie"), "session=abc");
  assert.equal(request.headers.get("authorization"), "Bearer t0ken");
  assert.equal(request.headers.get("x-forwarded-for"), "127.0.0.1");
  assert.equal(request.headers.get("x-forwarded-proto"), "http");
  assert.equal(request.headers.get("x-tenant"), "acme");
  assert.equal(request.headers.get("x-debug"), null);
  assert.equal(
    request.headers.get("sec-websocket-protocol"),
    "chat.v2, chat.v1",
  );
  const replies = nextMessages(ws, 4);
  const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
  ws.send("one");
  ws.send(new Uint8Array([1, 2, 3]));
  ws.send("two ✓");
  ws.send(big);
  assert.deepEqual(await replies, [
    "echo one",
    [3, 2, 1],
    "echo two ✓",
    [...big].reverse(),
  ]);
  // The upstream closes: the client gets its code and reason.
  const clientClosed = closedWith(ws);
  ws.send("bye");
  assert.deepEqual(await clientClosed, [4100, "server done"]);
  assert.deepEqual(await seen.closed.promise, [4100, "server done"]);
});

Deno.test("npm:ws through an HTTP route: subprotocol offers written as \"a,b\", the 101's headers, text and binary, the client's close code and reason reach the upstream", async () => {
  const { server, seen } = echoUpstream();
  await using _upstream = server;
  await using l = await startLegate({
    "chat.yaml": WS_ROUTE(
      server.url,
      "response_headers: { add: { x-served-by: legate } }\n",
    ),
  });
  const ws = new WebSocketClient(`ws://${l.address("chat")}/`, [
    "chat.v2",
    "chat.v1",
  ]);
  const upgrade = new Promise<Record<string, unknown>>((resolve) =>
    ws.on(
      "upgrade",
      (response: { headers: Record<string, unknown> }) =>
        resolve(response.headers),
    )
  );
  await new Promise((resolve, reject) => {
    ws.on("open", resolve);
    ws.on("error", reject);
  });
  assert.equal(ws.protocol, "chat.v1");
  const headers = await upgrade;
  assert.equal(headers["x-served-by"], "legate");
  assert.match(String(headers["x-request-id"]), /^[0-9a-f-]{36}$/);
  const got: unknown[] = [];
  const all = new Promise<void>((resolve) =>
    ws.on("message", (data: Buffer, binary: boolean) => {
      got.push(binary ? [...new Uint8Array(data)] : String(data));
      if (got.length === 2) resolve();
    })
  );
  ws.send("hello");
  ws.send(new Uint8Array([9, 8]));
  await all;
  assert.deepEqual(got, ["echo hello", [8, 9]]);
  ws.close(4001, "client done");
  assert.deepEqual(await seen.closed.promise, [4001, "client done"]);
});

Deno.test("a refused upstream handshake is a 502 with error=http_upgrade_failed and the upstream's status; an unreachable upstream is a 502 too", async () => {
  await using upstream = startServer(() =>
    new Response("members only", { status: 403 })
  );
  const unused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (unused.addr as Deno.NetAddr).port;
  unused.close();
  await using l = await startLegate({ "a.yaml": WS_ROUTE(upstream.url) });
  await using down = await startLegate({
    "b.yaml": WS_ROUTE(`http://127.0.0.1:${closedPort}`),
  });
  const head =
    "GET /x HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  const refused = await rawHttp(l.address("a"), head);
  assert.match(refused, /^HTTP\/1\.1 502 /);
  assert.match(
    refused,
    /proxy-status: legate; error=http_upgrade_failed; received-status=403/i,
  );
  const unreachable = await rawHttp(down.address("b"), head);
  assert.match(unreachable, /^HTTP\/1\.1 502 /);
  assert.match(unreachable, /proxy-status: legate; error=connection_refused/i);
  // Deno's client sees the handshake fail.
  const ws = new WebSocket(`ws://${l.address("a")}/`);
  await assert.rejects(opened(ws), /502/);
});

Deno.test("a message over max_message closes both sides with 1009, from either side", async () => {
  const { server, seen } = echoUpstream();
  await using _upstream = server;
  await using l = await startLegate({
    "chat.yaml": WS_ROUTE(server.url).replace(
      "websocket: {}",
      "websocket: { max_message: 1KiB }",
    ),
  });
  // From the client: 1025 bytes.
  const ws = new WebSocket(`ws://${l.address("chat")}/`);
  await opened(ws);
  const echoed = nextMessages(ws, 1);
  ws.send("x".repeat(1024 - 5)); // its echo is exactly 1 KiB
  assert.deepEqual(await echoed, ["echo " + "x".repeat(1019)]);
  const clientClosed = closedWith(ws);
  ws.send(new Uint8Array(1025));
  assert.equal((await clientClosed)[0], 1009);
  assert.equal((await seen.closed.promise)[0], 1009);
  // From the upstream: the echo of 1020 bytes is 1025.
  const { server: second, seen: seen2 } = echoUpstream();
  await using _second = second;
  await using l2 = await startLegate({
    "chat.yaml": WS_ROUTE(second.url).replace(
      "websocket: {}",
      "websocket: { max_message: 1KiB }",
    ),
  });
  const ws2 = new WebSocket(`ws://${l2.address("chat")}/`);
  await opened(ws2);
  const closed2 = closedWith(ws2);
  ws2.send("y".repeat(1020));
  assert.equal((await closed2)[0], 1009);
  assert.equal((await seen2.closed.promise)[0], 1009);
});

/** legate's resident memory, in bytes, as ps reports it. */
async function residentBytes(pid: number): Promise<number> {
  const ps = await new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
  }).output();
  return Number(new TextDecoder().decode(ps.stdout).trim()) * 1024;
}

Deno.test("a WebSocket survives a reload that keeps its route, is counted in /metrics, and SIGTERM closes it with 1001 on both sides", async () => {
  const { server, seen } = echoUpstream();
  await using _upstream = server;
  const port = freePort();
  const legate = await spawnLegate({
    "chat.yaml":
      `listen: 127.0.0.1:${port}\nupstreams: [${server.url}]\nwebsocket: {}\n`,
  }, ["--drain-timeout", "1s"]);
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    await opened(ws);
    const first = nextMessages(ws, 1);
    ws.send("before");
    assert.deepEqual(await first, ["echo before"]);
    await Deno.writeTextFile(
      `${legate.dir}/chat.yaml`,
      `listen: 127.0.0.1:${port}\nupstreams: [${server.url}]\nwebsocket: { max_message: 1MiB }\nresponse_headers: { add: { x-v: "2" } }\n`,
    );
    legate.child.kill("SIGHUP");
    await waitFor(
      () => legate.events.some((e) => e.msg === "routes reloaded"),
      "the reload",
    );
    const second = nextMessages(ws, 1);
    ws.send("after");
    assert.deepEqual(await second, ["echo after"]);
    const metrics = await (await fetch(`http://${legate.admin}/metrics`))
      .text();
    assert.match(
      metrics,
      /legate_websocket_connections_total\{service="chat"\} 1\n/,
    );
    assert.match(
      metrics,
      /legate_websocket_connections_open\{service="chat"\} 1\n/,
    );
    assert.match(
      metrics,
      /legate_websocket_messages_total\{service="chat",direction="upstream"\} 2\n/,
    );
    assert.match(
      metrics,
      /legate_websocket_messages_total\{service="chat",direction="downstream"\} 2\n/,
    );
    const clientClosed = closedWith(ws);
    legate.child.kill("SIGTERM");
    assert.deepEqual(await clientClosed, [1001, "legate is shutting down"]);
    assert.deepEqual(await seen.closed.promise, [
      1001,
      "legate is shutting down",
    ]);
    assert.equal(await legate.exit(), 0);
  } finally {
    if (!legate.exited) {
      legate.child.kill("SIGKILL");
      await legate.exit();
    }
  }
});

Deno.test("a client that stops reading holds the upstream back: legate's memory stays bounded, and every message arrives in order once it reads again", async () => {
  const MESSAGE = 64 * 1024;
  const TOTAL = 2048; // 128 MiB offered
  let sent = 0;
  const upstream = startServer((req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = async () => {
      const message = new Uint8Array(MESSAGE);
      while (sent < TOTAL && socket.readyState === WebSocket.OPEN) {
        // The upstream's own backpressure: it sends while its buffer is short.
        if (socket.bufferedAmount > 4 * MESSAGE) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        new DataView(message.buffer).setUint32(0, sent);
        socket.send(message);
        sent++;
      }
    };
    return response;
  });
  await using _upstream = upstream;
  const port = freePort();
  const legate = await spawnLegate({
    "bulk.yaml":
      `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\nwebsocket: {}\n`,
  });
  try {
    const before = await residentBytes(legate.child.pid);
    const ws = new WebSocketClient(`ws://127.0.0.1:${port}/`);
    await new Promise((resolve, reject) => {
      ws.on("open", resolve);
      ws.on("error", reject);
    });
    ws.pause();
    // Wait until the upstream is held back: nothing more sent for a while.
    let last = -1;
    await waitFor(
      async () => {
        const now = sent;
        const still = now === last && now > 0;
        last = now;
        await new Promise((resolve) => setTimeout(resolve, 200));
        return still;
      },
      "the upstream to be held back",
      20_000,
    );
    const held = sent;
    const grown = (await residentBytes(legate.child.pid)) - before;
    assert.ok(held < TOTAL / 4, `the upstream sent ${held} of ${TOTAL}`);
    assert.ok(grown < 48 * 1024 * 1024, `legate grew by ${grown} bytes`);
    console.log(
      `held at ${held * MESSAGE / 2 ** 20} MiB sent; legate RSS grew ${
        (grown / 2 ** 20).toFixed(1)
      } MiB`,
    );
    let received = 0;
    let inOrder = true;
    const all = new Promise<void>((resolve) =>
      ws.on("message", (data: Buffer) => {
        const bytes = data;
        if (bytes.readUInt32BE(0) !== received || bytes.length !== MESSAGE) {
          inOrder = false;
        }
        if (++received === TOTAL) resolve();
      })
    );
    ws.resume();
    await all;
    assert.ok(inOrder);
    ws.close(1000);
  } finally {
    legate.child.kill("SIGTERM");
    await legate.exit();
  }
});

Deno.test("wss:// on a TLS listener: npm:ws trusting the listener's CA reaches a plain upstream, and plain HTTPS requests still work there", async () => {
  const { server, seen } = echoUpstream();
  await using _upstream = server;
  await using ca = await makeCa();
  const leaf = await ca.issue("server");
  await using l = await startLegate({
    "chat.yaml": WS_ROUTE(
      server.url,
      `tls: { cert: ${leaf.cert}, key: ${leaf.key} }\n`,
    ),
  });
  const port = l.address("chat").split(":")[1];
  const ws = new WebSocketClient(`wss://localhost:${port}/secure`, {
    ca: await Deno.readTextFile(ca.ca),
  });
  await new Promise((resolve, reject) => {
    ws.on("open", resolve);
    ws.on("error", reject);
  });
  const reply = new Promise((resolve) =>
    ws.on("message", (data: Buffer) => resolve(String(data)))
  );
  ws.send("over tls");
  assert.equal(await reply, "echo over tls");
  assert.equal(seen.request!.headers.get("x-forwarded-proto"), "https");
  ws.close(1000);
  assert.equal((await seen.closed.promise)[0], 1000);
  const client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(ca.ca)],
  });
  const response = await fetch(`https://localhost:${port}/`, { client });
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "plain");
  client.close();
});

Deno.test("out of file descriptors, a WebSocket listener's inner server is replaced and the listener serves again once descriptors free up", async () => {
  const { server } = echoUpstream();
  await using _upstream = server;
  const port = freePort();
  const address = `127.0.0.1:${port}`;
  const legate = await spawnLegate(
    {
      "chat.yaml":
        `listen: ${address}\nupstreams: [${server.url}]\nwebsocket: {}\n`,
    },
    ["--no-watch"],
    {},
    { fdLimit: 128 },
  );
  const held: Deno.Conn[] = [];
  try {
    // Each connection takes three of legate's descriptors: the accepted one
    // and both ends of its hop. Some accept runs out.
    for (
      let i = 0;
      i < 200 && !legate.logged("inner HTTP server restarted");
      i++
    ) {
      held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    await waitFor(
      () => legate.logged("inner HTTP server restarted") !== undefined,
      "the inner server to be replaced",
      10_000,
    );
    assert.ok(!legate.exited);
    assert.match(
      String(legate.logged("inner HTTP server restarted")!.reason),
      /too many open files/i,
    );
    for (const conn of held) conn.close();
    held.length = 0;
    await waitFor(
      async () => {
        try {
          const response = await fetch(`http://${address}/`);
          return (await response.text()) === "plain";
        } catch {
          return false;
        }
      },
      "the listener to serve again",
      10_000,
    );
    const ws = new WebSocket(`ws://${address}/`);
    await opened(ws);
    const reply = nextMessages(ws, 1);
    ws.send("again");
    assert.deepEqual(await reply, ["echo again"]);
    ws.close();
  } finally {
    for (const conn of held) conn.close();
    legate.child.kill("SIGTERM");
    await legate.exit();
  }
});

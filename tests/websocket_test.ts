import assert from "node:assert/strict";
import { rawHttp, startLegate, startServer } from "./_helpers.ts";

const route = (upstream: string, extra = "") =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\n${extra}`;

Deno.test("refuses WebSocket and other upgrades with 501, and ignores h2c", async () => {
  await using upstream = startServer(() => new Response("plain"));
  await using l = await startLegate({ "svc.yaml": route(upstream.url, "") });
  const websocket = await rawHttp(
    l.address("svc"),
    "GET /chat HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  assert.match(websocket, /^HTTP\/1\.1 501 /);
  assert.match(websocket, /proxy-status: legate; error=http_request_error/i);
  assert.match(websocket, /use a TCP route for WebSocket/);
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

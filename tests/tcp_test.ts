import assert from "node:assert/strict";
import { join } from "node:path";
import {
  connectTo,
  freePort,
  startLegate,
  startTcpServer,
  untilAccepting,
  waitFor,
} from "./_helpers.ts";
import { assertNoDelayOnBothSides } from "./_socket_options.ts";

const encoder = new TextEncoder();

async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    for (let i = 0; i < n; i++) chunks.push(buffer[i]!);
  }
  return new Uint8Array(chunks);
}

/** Reads until the client half-closes, then answers with what it got. */
async function halfCloseEcho(conn: Deno.Conn): Promise<void> {
  const received = await readAll(conn);
  await conn.write(encoder.encode(`got ${received.length} bytes`));
}

async function startRedis(): Promise<
  { port: number; stop: () => Promise<void> }
> {
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await untilAccepting(port, "redis-server to accept connections");
  return {
    port,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function redisCli(
  port: number,
  args: string[],
  stdin?: Uint8Array,
): Promise<string> {
  const child = new Deno.Command("redis-cli", {
    args: ["-h", "127.0.0.1", "-p", String(port), ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
  }
  const output = await child.output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout);
}

Deno.test("forwards redis-server to redis-cli: PING and a multi-megabyte SET/GET", async () => {
  const redis = await startRedis();
  try {
    await using l = await startLegate({
      "redis.yaml":
        `listen: 127.0.0.1:0\nupstreams: [tcp://127.0.0.1:${redis.port}]\n`,
    });
    const port = Number(l.address("redis").split(":")[1]);
    assert.equal(await redisCli(port, ["PING"]), "PONG\n");
    const value = "legate-".repeat(600_000); // 4.2 MB
    assert.equal(
      await redisCli(port, ["-x", "SET", "big"], encoder.encode(value)),
      "OK\n",
    );
    assert.equal(await redisCli(port, ["GET", "big"]), `${value}\n`);
  } finally {
    await redis.stop();
  }
});

Deno.test("respects half-close: the upstream sees EOF and its reply still comes back", async () => {
  await using upstream = startTcpServer(halfCloseEcho);
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0\nupstreams: [${upstream.tcpUrl}]\n`,
  });
  const conn = await connectTo(l.address("echo"));
  await conn.write(new Uint8Array(3 * 1024 * 1024));
  await conn.closeWrite();
  assert.equal(
    new TextDecoder().decode(await readAll(conn)),
    `got ${3 * 1024 * 1024} bytes`,
  );
  conn.close();
});

Deno.test("listens on and connects to Unix sockets, replacing a stale socket file", async () => {
  const dir = await Deno.makeTempDir();
  const upstreamPath = join(dir, "upstream.sock");
  const listenPath = join(dir, "legate.sock");
  // A socket file left behind by a process that is gone.
  Deno.listen({ transport: "unix", path: listenPath }).close();
  const upstream = Deno.listen({ transport: "unix", path: upstreamPath });
  const serving = (async () => {
    for await (const conn of upstream) {
      halfCloseEcho(conn).finally(() => conn.close());
    }
  })().catch(() => {});
  {
    await using _l = await startLegate({
      "local.yaml":
        `listen: unix:${listenPath}\nupstreams: [unix:${upstreamPath}]\n`,
    });
    const conn = await Deno.connect({ transport: "unix", path: listenPath });
    await conn.write(encoder.encode("hello"));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn)), "got 5 bytes");
    conn.close();
  }
  upstream.close();
  await serving;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("refuses to replace a file that is not a socket", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "important.txt");
  await Deno.writeTextFile(path, "keep me");
  await assert.rejects(
    startLegate({
      "local.yaml": `listen: unix:${path}\nupstreams: [tcp://127.0.0.1:1]\n`,
    }),
    /Cannot listen on unix:\S+important\.txt: the path exists and is not a socket; legate will not remove it; it is the listen address of "local"/,
  );
  assert.equal(await Deno.readTextFile(path), "keep me");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("closes the client's connection promptly when the upstream is down, and logs it once", async () => {
  const down = freePort();
  await using l = await startLegate({
    "down.yaml": `listen: 127.0.0.1:0\nupstreams: [tcp://127.0.0.1:${down}]\n`,
  });
  for (let i = 0; i < 3; i++) {
    const conn = await connectTo(l.address("down"));
    assert.equal((await readAll(conn)).length, 0);
    conn.close();
  }
  assert.equal(
    l.lines.filter((line) => line.includes("upstream unreachable")).length,
    1,
  );
});

Deno.test("closes both sides when a connection is idle for timeouts.idle", async () => {
  let upstreamSawEof = false;
  await using upstream = startTcpServer(async (conn) => {
    upstreamSawEof = (await readAll(conn)).length === 0;
  });
  await using l = await startLegate({
    "idle.yaml":
      `listen: 127.0.0.1:0\nupstreams: [${upstream.tcpUrl}]\ntimeouts: { idle: 200ms }\n`,
  });
  const conn = await connectTo(l.address("idle"));
  assert.equal(
    (await readAll(conn)).length,
    0,
    "legate closed the idle connection",
  );
  conn.close();
  await waitFor(() => upstreamSawEof, "the upstream to see the connection end");
});

Deno.test("keeps accepting after clients reset their connections before they are accepted", async () => {
  await using upstream = startTcpServer(halfCloseEcho);
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0\nupstreams: [${upstream.tcpUrl}]\n`,
  });
  const port = l.address("echo").split(":")[1]!;
  // SO_LINGER 0 makes close() send a reset; Deno cannot, so Python does.
  const reset = await new Deno.Command("python3", {
    args: [
      "-c",
      `import socket, struct
for _ in range(300):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect(("127.0.0.1", ${port}))
    s.close()`,
    ],
  }).output();
  assert.equal(reset.code, 0, new TextDecoder().decode(reset.stderr));
  const conn = await connectTo(l.address("echo"));
  // A listener that stopped accepting would leave this connection waiting forever.
  const deadline = setTimeout(() => conn.close(), 10_000);
  await conn.write(encoder.encode("still here"));
  await conn.closeWrite();
  const reply = await readAll(conn).catch(() => new Uint8Array());
  clearTimeout(deadline);
  assert.equal(new TextDecoder().decode(reply), "got 10 bytes");
  conn.close();
});

Deno.test("a client that goes away mid-stream ends the upstream connection", async () => {
  let upstreamEnded = false;
  // Streams until its writes fail, as a server pushing data to a gone client would.
  await using upstream = startTcpServer(async (conn) => {
    const chunk = new Uint8Array(64 * 1024);
    try {
      for (let i = 0; i < 100_000; i++) await conn.write(chunk);
    } catch {
      upstreamEnded = true;
    }
  });
  await using l = await startLegate({
    "stream.yaml": `listen: 127.0.0.1:0\nupstreams: [${upstream.tcpUrl}]\n`,
  });
  const conn = await connectTo(l.address("stream"));
  assert.ok((await conn.read(new Uint8Array(65536)))! > 0);
  conn.close();
  await waitFor(() => upstreamEnded, "the upstream's writes to fail");
});

Deno.test("a message written in two parts is not held back by Nagle's algorithm, either way", async () => {
  // With Nagle's algorithm on, the second part of a message waits for the
  // peer's delayed ACK of the first: 40 ms or more. Both of legate's sockets
  // must have it off; reading the option says so exactly, where timing
  // round trips on a busy machine can only guess.
  const legateEnd = Promise.withResolvers<Deno.NetAddr>();
  await using upstream = startTcpServer(async (conn) => {
    // legate relays only once its upstream socket is set up.
    await conn.read(new Uint8Array(1));
    legateEnd.resolve(conn.remoteAddr as Deno.NetAddr);
    await conn.read(new Uint8Array(1));
  });
  await using l = await startLegate({
    "parts.yaml": `listen: 127.0.0.1:0\nupstreams: [${upstream.tcpUrl}]\n`,
  });
  using conn = await connectTo(l.address("parts"));
  await conn.write(encoder.encode("a"));
  await assertNoDelayOnBothSides(
    conn,
    (await legateEnd.promise).port,
    upstream.port,
  );
});

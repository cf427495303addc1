/**
 * HTTP listeners holding their own client connections: running out
 * of file descriptors is survived, a connection must send a request head
 * within the header timeout, idle connections are capped per listener, a
 * drain lets uploads finish, and a malformed chunked upload ends only its
 * own connection without framing anything for the origin.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Legate, type LegateOptions } from "../mod.ts";
import {
  connectTo,
  echoBytes,
  freePort,
  memoryLogger,
  type SpawnedLegate,
  spawnLegate,
  startServer,
  startTcpServer,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

const encoder = new TextEncoder();

/** Bytes as latin1 text, one character per byte. */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return text;
}

/**
 * How long a test waits for legate to close a connection: a header timeout
 * of 300 ms, checked by a sweep at most a second apart, on a busy machine.
 */
const CLOSE_DEADLINE_MS = 5_000;

/** A client connection read by hand, for what fetch would hide. */
class RawClient {
  readonly conn: Deno.TcpConn;
  #buffered = "";
  #eof = false;
  #closedHere = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  static async open(address: string): Promise<RawClient> {
    return new RawClient(await connectTo(address));
  }

  async send(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    let written = 0;
    while (written < bytes.length) {
      written += await this.conn.write(bytes.subarray(written));
    }
  }

  /**
   * Reads one response, its body framed by Content-Length or chunked.
   *
   * @throws {Error} When the connection ends first, or nothing complete
   * arrives within `deadlineMs` (the connection is closed then).
   */
  async response(
    deadlineMs = 10_000,
  ): Promise<{ status: number; head: string; body: string }> {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      this.close();
    }, deadlineMs);
    try {
      return await this.#response();
    } catch (error) {
      if (late) throw new Error(`No response within ${deadlineMs} ms`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async #response(): Promise<{ status: number; head: string; body: string }> {
    const head = await this.#until("\r\n\r\n");
    const status = Number(head.slice(9, 12));
    const length = /^content-length:\s*(\d+)/im.exec(head);
    if (length) {
      return { status, head, body: await this.#take(Number(length[1])) };
    }
    if (!/^transfer-encoding:\s*chunked/im.test(head)) {
      throw new Error(`A response without framing: ${head}`);
    }
    let body = "";
    while (true) {
      const size = parseInt(await this.#until("\r\n"), 16);
      if (size === 0) {
        await this.#until("\r\n");
        return { status, head, body };
      }
      body += await this.#take(size);
      await this.#take(2);
    }
  }

  /** Reads until `text` has arrived ("echoed"), or the peer closed first. */
  async echo(text: string): Promise<"echoed" | "closed"> {
    try {
      while (!this.#buffered.includes(text)) {
        if (!await this.#fill()) return "closed";
      }
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return "closed";
      throw error;
    }
    const at = this.#buffered.indexOf(text) + text.length;
    this.#buffered = this.#buffered.slice(at);
    return "echoed";
  }

  /**
   * Reads until the peer closes the connection, `deadlineMs` passes, or
   * {@linkcode close} is called here; says whether the peer closed it (a
   * reset counts), with what was read.
   */
  async closedWithin(
    deadlineMs: number,
  ): Promise<{ closed: boolean; text: string }> {
    const timer = setTimeout(() => this.close(), deadlineMs);
    let closed = true;
    try {
      while (await this.#fill()) { /* until EOF */ }
    } catch (error) {
      if (this.#closedHere) closed = false;
      else if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
    } finally {
      clearTimeout(timer);
    }
    this.close();
    const text = this.#buffered;
    this.#buffered = "";
    return { closed, text };
  }

  close(): void {
    if (this.#closedHere) return;
    this.#closedHere = true;
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }

  async #until(delimiter: string): Promise<string> {
    while (true) {
      const at = this.#buffered.indexOf(delimiter);
      if (at >= 0) {
        const text = this.#buffered.slice(0, at);
        this.#buffered = this.#buffered.slice(at + delimiter.length);
        return text;
      }
      if (!await this.#fill()) {
        throw new Error(
          `Connection closed before "${JSON.stringify(delimiter)}"; got ${
            JSON.stringify(this.#buffered)
          }`,
        );
      }
    }
  }

  async #take(n: number): Promise<string> {
    while (this.#buffered.length < n) {
      if (!await this.#fill()) {
        throw new Error(
          `Connection closed ${n - this.#buffered.length} bytes short`,
        );
      }
    }
    const text = this.#buffered.slice(0, n);
    this.#buffered = this.#buffered.slice(n);
    return text;
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const buffer = new Uint8Array(65536);
    const n = await this.conn.read(buffer);
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#buffered += latin1(buffer.subarray(0, n));
    return true;
  }
}

/** A request head for `path` (routes in these tests match any host; the admin listener wants an IP). */
function get(path: string, host = "legate.test"): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
}

/** legate started in-process with the HTTP listener options the test needs. */
async function startWith(
  files: Record<string, string>,
  options: Partial<LegateOptions>,
) {
  const routesDir = await writeRoutes(files);
  const { log, lines } = memoryLogger();
  const legate = await Legate.start({
    routesDir,
    admin: "127.0.0.1:0",
    log,
    watch: false,
    ...options,
  });
  return {
    legate,
    lines,
    routesDir,
    admin: `127.0.0.1:${(legate.admin.addr as Deno.NetAddr).port}`,
    logged: (msg: string) =>
      lines.map((l) => JSON.parse(l)).filter((e) => e.msg === msg),
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
      await Deno.remove(routesDir, { recursive: true });
    },
  };
}

const httpRoute = (port: number, upstream: string) =>
  `listen: 127.0.0.1:${port}\nupstreams: [${upstream}]\n`;

// ---------------------------------------------------------------------------
// Running out of file descriptors

/** The descriptor limit legate runs under: Deno itself takes about 30. */
const FD_LIMIT = 128;
/**
 * Polling the routes directory takes a descriptor for a moment (and fails
 * while there is none): off, so that legate's descriptors are its connections.
 */
const NO_WATCH = ["--no-watch"];

/** legate as a child process with at most {@linkcode FD_LIMIT} open files. */
function spawnFdLimited(
  routes: Record<string, string>,
  flags: string[],
): Promise<SpawnedLegate> {
  return spawnLegate(routes, flags, {}, { fdLimit: FD_LIMIT });
}

function acceptFailures(legate: SpawnedLegate, listener?: string) {
  return legate.events.filter((e) =>
    e.msg === "accept failed" &&
    (listener === undefined || e.listener === listener)
  );
}

/** Fails at once, with its log, when legate has exited. */
function assertRunning(legate: SpawnedLegate, when: string): void {
  assert.ok(
    !legate.exited,
    `legate exited ${when}: ${JSON.stringify(legate.events.slice(-5))}`,
  );
}

/**
 * Connects to `address` and sends `request`; a refusal or reset because
 * legate has died says so.
 */
async function openWhileRunning(
  legate: SpawnedLegate,
  address: string,
  request?: string,
): Promise<RawClient> {
  try {
    const client = await RawClient.open(address);
    if (request !== undefined) await client.send(request);
    return client;
  } catch (error) {
    await waitFor(() => legate.exited, "legate to exit", 2_000).catch(() => {});
    assertRunning(legate, `when a connection failed (${error})`);
    throw error;
  }
}

/** Sends SIGTERM unless legate has exited, and waits for it to exit. */
async function stop(legate: SpawnedLegate): Promise<void> {
  if (!legate.exited) legate.child.kill("SIGTERM");
  await legate.exit();
}

/** legate exited 0 after draining, with no error logged and nothing uncaught. */
function assertStoppedCleanly(legate: SpawnedLegate): void {
  assert.equal(
    legate.code,
    0,
    `exit code; last events: ${JSON.stringify(legate.events.slice(-5))}`,
  );
  assert.ok(legate.events.some((e) => e.msg === "stopped"));
  assert.deepEqual(
    legate.events.filter((e) => e.level === "error" || e.msg === "stderr"),
    [],
  );
}

async function fetchText(
  url: string,
): Promise<{ status: number; text: string }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, text: await response.text() };
}

Deno.test("an HTTP listener out of file descriptors closes its longest-idle connections and keeps serving", async () => {
  await using upstream = startServer(() => new Response("fresh"));
  const port = freePort();
  const address = `127.0.0.1:${port}`;
  const legate = await spawnFdLimited({
    "svc.yaml": httpRoute(port, upstream.url),
  }, NO_WATCH);
  const idle: RawClient[] = [];
  try {
    // One request first, so that legate holds a pooled upstream connection:
    // the fresh request below needs no descriptor but its own.
    const warm = await RawClient.open(address);
    await warm.send(
      "GET /warm HTTP/1.1\r\nHost: legate.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal((await warm.response()).status, 200);
    warm.close();
    // Twice as many idle connections as legate may hold descriptors.
    for (let i = 0; i < 2 * FD_LIMIT; i++) {
      idle.push(await openWhileRunning(legate, address));
    }
    await waitFor(
      () => legate.exited || acceptFailures(legate, address).length > 0,
      "an accept to fail",
    );
    assertRunning(legate, "when it ran out of descriptors");
    assert.match(
      String(acceptFailures(legate, address)[0]!.reason),
      /too many open files/i,
    );

    // A fresh request is served: an idle connection makes room for it.
    assert.deepEqual(await fetchText(`http://${address}/`), {
      status: 200,
      text: "fresh",
    });
    // The longest idle connections were closed; the newest is still served.
    assert.ok(
      (await idle[0]!.closedWithin(CLOSE_DEADLINE_MS)).closed,
      "the first idle connection was not closed",
    );
    const newest = idle.at(-1)!;
    await newest.send(get("/newest"));
    const response = await newest.response();
    assert.equal(response.status, 200);
    assert.equal(response.body, "fresh");
    assertRunning(legate, "after serving");

    for (const client of idle) client.close();
    assert.deepEqual(await fetchText(`http://${legate.admin}/healthz`), {
      status: 200,
      text: "ok\n",
    });
    assert.deepEqual(await fetchText(`http://${address}/`), {
      status: 200,
      text: "fresh",
    });
  } finally {
    for (const client of idle) client.close();
    await stop(legate);
  }
  assertStoppedCleanly(legate);
});

/** Connections that hold legate's descriptors, as {@linkcode fillWithRelays} leaves them. */
interface Filled {
  /** TCP connections relayed to the echo upstream: two descriptors each. */
  readonly relayed: RawClient[];
  /** The connection legate could not accept, and an idle admin connection when one was needed. */
  readonly held: RawClient[];
}

/**
 * Opens TCP connections to `tcpAddress` (a route to an echo upstream) one at
 * a time until legate has no descriptor left: each relayed connection takes
 * two, so an odd count is evened out by one idle admin connection, opened
 * first and closed when a connection is accepted but its upstream cannot be
 * connected for want of a second descriptor. The last connection is left
 * unaccepted: the TCP listener fails to accept it again and again.
 */
async function fillWithRelays(
  legate: SpawnedLegate,
  tcpAddress: string,
): Promise<Filled> {
  const relayed: RawClient[] = [];
  const held: RawClient[] = [];
  const spare = await RawClient.open(legate.admin);
  held.push(spare);
  await spare.send(get("/healthz", legate.admin));
  assert.equal((await spare.response()).status, 200);
  for (let i = 0;; i++) {
    assert.ok(i < FD_LIMIT, "legate never ran out of descriptors");
    const failuresBefore = acceptFailures(legate, tcpAddress).length;
    // One failed accept can follow an accept that took the last descriptor;
    // the backoff retries a connection it cannot accept again and again.
    const unaccepted = () =>
      acceptFailures(legate, tcpAddress).length >= failuresBefore + 3;
    const client = await RawClient.open(tcpAddress);
    const ping = `ping ${i}\n`;
    await client.send(ping);
    let outcome: "echoed" | "closed" | undefined;
    client.echo(ping).then((o) => outcome = o, () => outcome = "closed");
    await waitFor(
      () => outcome !== undefined || unaccepted() || legate.exited,
      `connection ${i} to be relayed, closed, or left unaccepted`,
    );
    assertRunning(legate, "while TCP connections filled its descriptors");
    if (outcome === "echoed") {
      relayed.push(client);
    } else if (outcome === "closed") {
      assert.match(
        String(
          legate.events.findLast((e) => e.msg === "upstream unreachable")
            ?.reason,
        ),
        /too many open files/i,
      );
      spare.close(); // one descriptor more: the next relay takes two
    } else {
      held.push(client);
      assert.match(
        String(acceptFailures(legate, tcpAddress).at(-1)!.reason),
        /too many open files/i,
      );
      assert.ok(relayed.length > 10, `only ${relayed.length} relayed`);
      return { relayed, held };
    }
  }
}

/** Sends new bytes on every relayed connection and gets them back. */
async function assertRelaying(relayed: RawClient[]): Promise<void> {
  for (const [i, client] of relayed.entries()) {
    const again = `again ${i}\n`;
    await client.send(again);
    assert.equal(await client.echo(again), "echoed", `connection ${i}`);
  }
}

function tcpAndHttpRoutes(echo: string, upstream: string) {
  const tcpAddress = `127.0.0.1:${freePort()}`;
  const httpPort = freePort();
  return {
    tcpAddress,
    httpAddress: `127.0.0.1:${httpPort}`,
    routes: {
      "echo.yaml":
        `listen: ${tcpAddress}\nprotocol: tcp\nupstreams: [${echo}]\n`,
      "web.yaml": httpRoute(httpPort, upstream),
    },
  };
}

Deno.test("descriptors filled through a TCP listener: the HTTP listener waits, TCP connections keep relaying, HTTP resumes once they close", async () => {
  await using echo = startTcpServer(echoBytes);
  await using upstream = startServer(() => new Response("http"));
  const { tcpAddress, httpAddress, routes } = tcpAndHttpRoutes(
    echo.tcpUrl,
    upstream.url,
  );
  const legate = await spawnFdLimited(routes, NO_WATCH);
  let filled: Filled = { relayed: [], held: [] };
  try {
    filled = await fillWithRelays(legate, tcpAddress);

    const pending = fetchText(`http://${httpAddress}/`).catch((e) => e);
    await waitFor(
      () => legate.exited || acceptFailures(legate, httpAddress).length > 0,
      "the HTTP listener's accept to fail",
    );
    assertRunning(legate, "when its HTTP listener ran out of descriptors");
    assert.match(
      String(acceptFailures(legate, httpAddress)[0]!.reason),
      /too many open files/i,
    );
    await assertRelaying(filled.relayed);
    assertRunning(legate, "while relaying");

    for (const client of [...filled.relayed, ...filled.held]) client.close();
    // The pending request is answered: 200, or, should the TCP listener's
    // backlog take the freed descriptors first, a 503 that says why (legate's
    // own limit, not the upstream's fault).
    const answer = await pending;
    if (answer.status !== 200) {
      assert.equal(answer.status, 503, JSON.stringify(answer));
      assert.match(answer.text, /Too many open files/);
    }
    // Once that backlog is through, HTTP is served again.
    await waitFor(
      async () =>
        (await fetchText(`http://${httpAddress}/`).catch(() => null))
          ?.text === "http",
      "HTTP to be served again",
    );
    assert.deepEqual(await fetchText(`http://${legate.admin}/healthz`), {
      status: 200,
      text: "ok\n",
    });
  } finally {
    for (const client of [...filled.relayed, ...filled.held]) client.close();
    await stop(legate);
  }
  assertStoppedCleanly(legate);
});

Deno.test("out of descriptors, the connection an idle connection made room for gets its response", async () => {
  await using echo = startTcpServer(echoBytes);
  await using upstream = startServer(() => new Response("http"));
  const { tcpAddress, httpAddress, routes } = tcpAndHttpRoutes(
    echo.tcpUrl,
    upstream.url,
  );
  const legate = await spawnFdLimited(routes, NO_WATCH);
  let filled: Filled = { relayed: [], held: [] };
  // An idle keep-alive connection, and a pooled upstream connection that
  // the next request can use without a new descriptor.
  const idle = await RawClient.open(httpAddress);
  const fresh: RawClient[] = [];
  try {
    await idle.send(get("/"));
    assert.equal((await idle.response()).status, 200);
    filled = await fillWithRelays(legate, tcpAddress);

    // Accepting it fails until the idle connection is closed to make room.
    const client = await openWhileRunning(legate, httpAddress, get("/fresh"));
    fresh.push(client);
    await waitFor(
      () => legate.exited || acceptFailures(legate, httpAddress).length > 0,
      "the HTTP listener's accept to fail",
    );
    assertRunning(legate, "when its HTTP listener ran out of descriptors");
    const closedIdle = await idle.closedWithin(CLOSE_DEADLINE_MS);
    assert.ok(closedIdle.closed, "the idle connection was not closed");
    const answer = await client.response().catch((error: Error) => error);
    assert.deepEqual(
      answer instanceof Error ? answer.message : [answer.status, answer.body],
      [200, "http"],
      `the new connection got ${
        answer instanceof Error ? answer.message : JSON.stringify(answer)
      }; last events: ${JSON.stringify(legate.events.slice(-6))}`,
    );
    await assertRelaying(filled.relayed);
  } finally {
    for (const c of [idle, ...fresh, ...filled.relayed, ...filled.held]) {
      c.close();
    }
    await stop(legate);
  }
  assertStoppedCleanly(legate);
});

// ---------------------------------------------------------------------------
// The header timeout

const HEADER_TIMEOUT_MS = 300;

Deno.test("the header timeout closes a connection that sends nothing", async () => {
  await using upstream = startServer(() => new Response("ok"));
  const port = freePort();
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, upstream.url) },
    { headerTimeout: HEADER_TIMEOUT_MS },
  );
  const opened = Date.now();
  const client = await RawClient.open(`127.0.0.1:${port}`);
  const { closed, text } = await client.closedWithin(CLOSE_DEADLINE_MS);
  assert.ok(closed, "the silent connection is still open");
  assert.ok(
    Date.now() - opened >= HEADER_TIMEOUT_MS,
    `closed after ${Date.now() - opened} ms, before the timeout`,
  );
  assert.equal(text, "");
});

Deno.test("the header timeout closes a connection that sends half a request head, also when it keeps trickling header lines", async () => {
  await using upstream = startServer(() => new Response("ok"));
  const port = freePort();
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, upstream.url) },
    { headerTimeout: HEADER_TIMEOUT_MS },
  );
  const opened = Date.now();
  const half = await RawClient.open(`127.0.0.1:${port}`);
  await half.send("GET / HTTP/1.1\r\nHost: legate.test\r\n");
  const trickling = await RawClient.open(`127.0.0.1:${port}`);
  await trickling.send("GET / HTTP/1.1\r\nHost: legate.test\r\n");
  let stopped = false;
  const trickled = trickling.closedWithin(CLOSE_DEADLINE_MS).finally(() =>
    stopped = true
  );
  // One header line every 50 ms: the head is never complete.
  for (let i = 0; i < CLOSE_DEADLINE_MS / 50 && !stopped; i++) {
    await trickling.send(`x-slow-${i}: 1\r\n`).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (
    const [name, result] of Object.entries({
      half: await half.closedWithin(CLOSE_DEADLINE_MS),
      trickling: await trickled,
    })
  ) {
    assert.ok(result.closed, `the ${name} connection is still open`);
    assert.doesNotMatch(result.text, /^HTTP\/1\.1 2/, name);
  }
  assert.ok(Date.now() - opened >= HEADER_TIMEOUT_MS);
});

Deno.test("the header timeout closes a keep-alive connection that stays silent after its response", async () => {
  await using upstream = startServer(() => new Response("ok"));
  const port = freePort();
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, upstream.url) },
    { headerTimeout: HEADER_TIMEOUT_MS },
  );
  const client = await RawClient.open(`127.0.0.1:${port}`);
  const sent = Date.now();
  await client.send(get("/"));
  const response = await client.response();
  assert.equal(response.status, 200);
  assert.doesNotMatch(response.head, /^connection:\s*close/im);
  const { closed, text } = await client.closedWithin(CLOSE_DEADLINE_MS);
  assert.ok(closed, "the keep-alive connection is still open");
  // The timeout counts from the end of the response, after the request was sent.
  assert.ok(
    Date.now() - sent >= HEADER_TIMEOUT_MS,
    `closed ${Date.now() - sent} ms after the request was sent`,
  );
  assert.equal(text, "");
});

/**
 * An upstream that answers with the request path, holding requests for
 * `/slow` until released; disposing it releases them first.
 */
function startSlowUpstream() {
  const arrived = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  const server = startServer(async (request) => {
    const { pathname } = new URL(request.url);
    if (pathname === "/slow") {
      arrived.resolve();
      await released.promise;
    }
    return new Response(pathname);
  });
  return {
    url: server.url,
    /** Settles when a request for `/slow` has arrived. */
    arrived: arrived.promise,
    release: () => released.resolve(),
    async [Symbol.asyncDispose]() {
      released.resolve();
      await server[Symbol.asyncDispose]();
    },
  };
}

Deno.test("the header timeout leaves a connection alone while its request is in flight", async () => {
  await using upstream = startSlowUpstream();
  const port = freePort();
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, upstream.url) },
    { headerTimeout: HEADER_TIMEOUT_MS },
  );
  const busy = await RawClient.open(`127.0.0.1:${port}`);
  await busy.send(get("/slow"));
  await upstream.arrived;
  // A connection opened after the busy one: once the timeout closed it, the
  // busy one has been open longer than the timeout too.
  const idle = await RawClient.open(`127.0.0.1:${port}`);
  assert.ok(
    (await idle.closedWithin(CLOSE_DEADLINE_MS)).closed,
    "the idle connection opened later is still open",
  );
  upstream.release();
  const response = await busy.response();
  assert.equal(response.status, 200);
  assert.equal(response.body, "/slow");
  // It stays open for more requests: it was never marked for closing.
  await busy.send(get("/again"));
  assert.equal((await busy.response()).body, "/again");
  // Once answered, the connection is idle, and the timeout applies.
  assert.ok((await busy.closedWithin(CLOSE_DEADLINE_MS)).closed);
});

// ---------------------------------------------------------------------------
// The idle connection cap

Deno.test("past --max-idle-connections the longest idle connection is closed; one with a request in flight is not idle", async () => {
  await using upstream = startSlowUpstream();
  const port = freePort();
  const address = `127.0.0.1:${port}`;
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, upstream.url) },
    { maxIdleConnections: 2 },
  );
  // The oldest connection, but busy: not idle, so never the one closed.
  const busy = await RawClient.open(address);
  await busy.send(get("/slow"));
  await upstream.arrived;
  const first = await RawClient.open(address);
  const second = await RawClient.open(address);
  const third = await RawClient.open(address);
  try {
    const { closed, text } = await first.closedWithin(CLOSE_DEADLINE_MS);
    assert.ok(closed, "the first idle connection is still open");
    assert.equal(text, "");
    for (const [name, client] of Object.entries({ second, third })) {
      await client.send(get(`/${name}`));
      const response = await client.response();
      assert.equal(response.status, 200);
      assert.equal(response.body, `/${name}`);
    }
    upstream.release();
    const response = await busy.response();
    assert.equal(response.status, 200);
    assert.equal(response.body, "/slow");
    // Never marked for closing: it serves another request.
    await busy.send(get("/again"));
    assert.equal((await busy.response()).body, "/again");
  } finally {
    for (const client of [busy, first, second, third]) client.close();
  }
});

// ---------------------------------------------------------------------------
// Uploads while draining

const PIECE = 64 * 1024;
const PIECES = 4;
const UPLOAD_BYTES = PIECE * PIECES;

/** Piece `i` of the upload: byte n of the upload is n & 0xff. */
function piece(i: number): Uint8Array {
  const bytes = new Uint8Array(PIECE);
  for (let j = 0; j < PIECE; j++) bytes[j] = (i * PIECE + j) & 0xff;
  return bytes;
}

/** An origin that reads an upload and says how much arrived intact. */
function startUploadOrigin() {
  const state = { received: 0, intact: true, ended: false };
  const server = startServer(async (request) => {
    try {
      for await (const chunk of request.body!) {
        for (let i = 0; i < chunk.length; i++) {
          if (chunk[i] !== ((state.received + i) & 0xff)) state.intact = false;
        }
        state.received += chunk.length;
      }
      return new Response(
        `received ${state.received} bytes, intact ${state.intact}`,
      );
    } catch (error) {
      return new Response(`cut after ${state.received}: ${error}`, {
        status: 500,
      });
    } finally {
      state.ended = true;
    }
  });
  return { server, state };
}

type Framing = "content-length" | "chunked";

/** Frames piece `i` of an upload. */
function framed(framing: Framing, i: number): Uint8Array {
  const bytes = piece(i);
  if (framing === "content-length") return bytes;
  const size = encoder.encode(`${PIECE.toString(16)}\r\n`);
  const out = new Uint8Array(size.length + PIECE + 2);
  out.set(size);
  out.set(bytes, size.length);
  out.set(encoder.encode("\r\n"), size.length + PIECE);
  return out;
}

function uploadHead(framing: Framing): string {
  return `POST /upload HTTP/1.1\r\nHost: legate.test\r\n${
    framing === "chunked"
      ? "Transfer-Encoding: chunked"
      : `Content-Length: ${UPLOAD_BYTES}`
  }\r\n\r\n`;
}

/**
 * Sends the pieces after the first, each once the origin read the one
 * before, then the end of the body; resolves with legate's response.
 */
async function finishUpload(
  client: RawClient,
  framing: Framing,
  origin: ReturnType<typeof startUploadOrigin>,
) {
  for (let i = 1; i < PIECES; i++) {
    await client.send(framed(framing, i));
    await waitFor(
      () => origin.state.received >= (i + 1) * PIECE || origin.state.ended,
      `the origin to read piece ${i}`,
    );
  }
  if (framing === "chunked") await client.send("0\r\n\r\n");
  return await client.response();
}

async function refusesConnections(address: string): Promise<boolean> {
  try {
    (await connectTo(address)).close();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.ConnectionRefused;
  }
}

for (const framing of ["content-length", "chunked"] as const) {
  Deno.test(`SIGTERM during a slow upload (${framing}) lets it complete and be answered, then exits 0`, async () => {
    const origin = startUploadOrigin();
    await using _origin = origin.server;
    const port = freePort();
    const address = `127.0.0.1:${port}`;
    const legate = await spawnLegate({
      "svc.yaml": httpRoute(port, origin.server.url),
    });
    const client = await RawClient.open(address);
    let signalled = false;
    try {
      await client.send(uploadHead(framing));
      await client.send(framed(framing, 0));
      await waitFor(
        () => origin.state.received >= PIECE,
        "the origin to read the first piece",
      );
      legate.child.kill("SIGTERM");
      signalled = true;
      await waitFor(
        () => legate.logged("draining: stopped accepting") !== undefined,
        "the drain to start",
      );
      assert.equal(legate.logged("draining: stopped accepting")!.in_flight, 1);
      await waitFor(
        () => refusesConnections(address),
        "the listener to stop accepting",
      );
      const response = await finishUpload(client, framing, origin);
      assert.equal(response.status, 200, response.body);
      assert.equal(
        response.body,
        `received ${UPLOAD_BYTES} bytes, intact true`,
      );
    } finally {
      client.close();
      if (!signalled) legate.child.kill("SIGTERM");
    }
    assert.equal(await legate.exit(), 0);
    assert.equal(legate.logged("stopped")!.cut, 0);
    assert.deepEqual(
      legate.events.filter((e) => e.level === "error" || e.msg === "stderr"),
      [],
    );
  });

  Deno.test(`removing a route during a slow upload (${framing}) lets it complete and be answered, then closes the listener`, async () => {
    const origin = startUploadOrigin();
    await using _origin = origin.server;
    const port = freePort();
    const address = `127.0.0.1:${port}`;
    const other = freePort();
    await using legate = await startWith({
      "upload.yaml": httpRoute(port, origin.server.url),
      "other.yaml": httpRoute(other, origin.server.url),
    }, { drainTimeout: 15_000 });
    const client = await RawClient.open(address);
    try {
      await client.send(uploadHead(framing));
      await client.send(framed(framing, 0));
      await waitFor(
        () => origin.state.received >= PIECE,
        "the origin to read the first piece",
      );
      await Deno.remove(join(legate.routesDir, "upload.yaml"));
      const reload = await fetch(`http://${legate.admin}/reload`, {
        method: "POST",
      });
      assert.equal(reload.status, 200);
      assert.deepEqual((await reload.json()).removed, [address]);
      await waitFor(
        () => refusesConnections(address),
        "the listener to stop accepting",
      );
      const response = await finishUpload(client, framing, origin);
      assert.equal(response.status, 200, response.body);
      assert.equal(
        response.body,
        `received ${UPLOAD_BYTES} bytes, intact true`,
      );
      assert.ok(
        (await client.closedWithin(CLOSE_DEADLINE_MS)).closed,
        "the connection stays open after its last request",
      );
      await waitFor(
        () =>
          legate.logged("listener drained").some((e) => e.listener === address),
        "the listener to drain",
      );
      assert.equal(
        legate.logged("listener drained").find((e) => e.listener === address)
          .cut,
        0,
      );
    } finally {
      client.close();
    }
  });
}

// ---------------------------------------------------------------------------
// Malformed chunked uploads

/** What one origin connection received, read with strict HTTP/1.1 framing. */
interface OriginExchange {
  /** Every byte received, one character per byte. */
  raw: string;
  /** The request target, once the head arrived. */
  target?: string;
  /** The body so far, chunked framing removed. */
  body: string;
  /** `open` until the request is complete (answered) or the connection ends first. */
  outcome: "open" | "complete" | "truncated" | "invalid";
}

type Decoded = { body: string; end: "incomplete" | "complete" | "invalid" };

/** Decodes a chunked body strictly: hex sizes, CRLF after every line and chunk. */
function decodeChunked(text: string): Decoded {
  let at = 0;
  let body = "";
  while (true) {
    const eol = text.indexOf("\r\n", at);
    const line = eol < 0 ? text.slice(at) : text.slice(at, eol);
    if (!/^[0-9a-fA-F]{0,8}(;[^\r\n]*)?$/.test(line)) {
      return { body, end: "invalid" };
    }
    if (eol < 0) return { body, end: "incomplete" };
    if (line === "" || line.startsWith(";")) return { body, end: "invalid" };
    const size = parseInt(line, 16);
    at = eol + 2;
    if (size === 0) {
      // Trailer lines, then an empty line.
      while (true) {
        const end = text.indexOf("\r\n", at);
        if (end < 0) return { body, end: "incomplete" };
        if (end === at) {
          return at + 2 === text.length
            ? { body, end: "complete" }
            : { body, end: "invalid" }; // bytes after the body: a pipelined request
        }
        at = end + 2;
      }
    }
    body += text.slice(at, at + size);
    if (text.length < at + size + 2) return { body, end: "incomplete" };
    if (text.slice(at + size, at + size + 2) !== "\r\n") {
      return { body, end: "invalid" };
    }
    at += size + 2;
  }
}

/**
 * An origin on raw sockets that reads each connection with strict framing:
 * a complete request gets `200 ok` and the connection is closed.
 */
function startStrictOrigin() {
  const exchanges: OriginExchange[] = [];
  const server = startTcpServer(async (conn) => {
    const exchange: OriginExchange = { raw: "", body: "", outcome: "open" };
    exchanges.push(exchange);
    const buffer = new Uint8Array(65536);
    while (exchange.outcome === "open") {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch {
        n = null;
      }
      if (n === null) {
        exchange.outcome = "truncated";
        break;
      }
      exchange.raw += latin1(buffer.subarray(0, n));
      const headEnd = exchange.raw.indexOf("\r\n\r\n");
      if (headEnd < 0) continue;
      const head = exchange.raw.slice(0, headEnd);
      exchange.target = head.split(" ")[1] ?? "";
      const rest = exchange.raw.slice(headEnd + 4);
      let end: Decoded["end"];
      if (/^transfer-encoding:\s*chunked\s*$/im.test(head)) {
        const decoded = decodeChunked(rest);
        exchange.body = decoded.body;
        end = decoded.end;
      } else {
        const length = Number(
          /^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0,
        );
        exchange.body = rest.slice(0, length);
        end = rest.length < length
          ? "incomplete"
          : rest.length === length
          ? "complete"
          : "invalid";
      }
      if (end === "incomplete") continue;
      exchange.outcome = end;
      if (end === "complete") {
        await conn.write(encoder.encode(
          "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        ));
      }
    }
  });
  return { server, exchanges };
}

const SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: legate.test\r\n\r\n";

/** Chunked bodies Deno's server must refuse; each is followed by a request that must never be seen. */
const MALFORMED_CHUNKS: Record<string, string> = {
  "a negative chunk size": `-5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`,
  "a 0x-prefixed chunk size": `0x5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`,
  "a chunk size past 2^53": `20000000000001\r\nhello\r\n0\r\n\r\n${SMUGGLED}`,
  "a chunk size that wraps to 5 in 64 bits":
    `10000000000000005\r\nhello\r\n0\r\n\r\n${SMUGGLED}`,
  "chunk data not followed by CRLF": `5\r\nhelloXX\r\n0\r\n\r\n${SMUGGLED}`,
};

Deno.test("a malformed chunked upload ends its own connection: the origin never sees a complete body or a request hidden in it, and legate serves on", async (t) => {
  const origin = startStrictOrigin();
  await using _origin = origin.server;
  const port = freePort();
  const address = `127.0.0.1:${port}`;
  await using _legate = await startWith(
    { "svc.yaml": httpRoute(port, origin.server.httpUrl) },
    {},
  );
  const post = (target: string) =>
    `POST ${target} HTTP/1.1\r\nHost: legate.test\r\nTransfer-Encoding: chunked\r\n\r\n`;
  // A keep-alive connection opened before, used again after.
  const before = await RawClient.open(address);
  await before.send(`${post("/before")}5\r\nfirst\r\n0\r\n\r\n`);
  assert.equal((await before.response()).body, "ok");

  let n = 0;
  for (const [name, malformed] of Object.entries(MALFORMED_CHUNKS)) {
    for (
      const when of ["sent whole", "sent after a chunk reached the origin"]
    ) {
      await t.step(`${name}, ${when}`, async () => {
        const target = `/case-${++n}`;
        const ofCase = () =>
          origin.exchanges.filter((e) => e.target === target);
        const client = await RawClient.open(address);
        if (when === "sent whole") {
          await client.send(`${post(target)}5\r\nhello\r\n${malformed}`);
        } else {
          await client.send(`${post(target)}5\r\nhello\r\n`);
          await waitFor(
            () => ofCase().some((e) => e.body === "hello"),
            "the first chunk to reach the origin",
          );
          await client.send(malformed).catch(() => {});
        }
        // Deno closes the connection, or (for a size it can hold) reads the
        // rest as chunk data and waits for more.
        let closed = false;
        const reading = client.closedWithin(CLOSE_DEADLINE_MS).then((r) => {
          closed = true;
          return r;
        });
        await waitFor(
          () => closed || ofCase().some((e) => e.body.includes("smuggled")),
          "the connection to close or the data to reach the origin",
        );
        client.close();
        const { text } = await reading;
        await waitFor(
          () => ofCase().every((e) => e.outcome !== "open"),
          "the origin's connection to end",
        );
        assert.ok(
          ofCase().length <= 1,
          `${ofCase().length} origin requests for one client request`,
        );
        for (const exchange of ofCase()) {
          assert.equal(
            exchange.outcome,
            "truncated",
            `the origin got a ${exchange.outcome} body: ${
              JSON.stringify(exchange.raw)
            }`,
          );
          assert.ok(exchange.body.startsWith("hello"));
        }
        assert.doesNotMatch(text, /^HTTP\/1\.1 2/, "a success for a bad body");
        assert.ok(
          (text.match(/HTTP\/1\.1 \d{3}/g) ?? []).length <= 1,
          `more than one response: ${JSON.stringify(text)}`,
        );
      });
    }
  }

  // Nothing reached the origin as a request of its own.
  assert.deepEqual(
    origin.exchanges.filter((e) =>
      !/^\/(case-\d+|before)$/.test(e.target ?? "")
    ),
    [],
  );
  // The keep-alive connection from before, and a new one, are served.
  await before.send(`${post("/after")}5\r\nafter\r\n0\r\n\r\n`);
  assert.equal((await before.response()).status, 200);
  const after = await RawClient.open(address);
  await after.send(`${post("/after")}4\r\nnext\r\n0\r\n\r\n`);
  assert.equal((await after.response()).body, "ok");
  before.close();
  after.close();
  const complete = origin.exchanges.filter((e) => e.outcome === "complete");
  assert.deepEqual(
    complete.map((e) => [e.target, e.body]),
    [["/before", "first"], ["/after", "after"], ["/after", "next"]],
  );
});

/**
 * Resilience of HTTP services, proven against real peers that misbehave:
 * upstream processes killed with SIGKILL, health checks that start failing,
 * upstreams that accept and never answer, that reset, that answer 503, that
 * are slow; hash policies across a reload; limits; panic mode; and the
 * admin API's view of all of it (`/upstreams`, `/metrics` through
 * `promtool check metrics`).
 *
 * Upstreams that must die are processes of their own
 * (tests/fixtures/named_upstream.ts); the rest run in this process. Timed
 * behaviour runs on short settings (100–300 ms) and is waited for with
 * deadlines, never with sleeps.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Legate } from "../mod.ts";
import {
  assertPromtoolAccepts,
  freePort,
  memoryLogger,
  startTcpServer,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Fixtures

/** The `/upstreams` document, as far as these tests read it. */
interface UpstreamsReport {
  services: {
    name: string;
    balance: string;
    requests_in_flight: number;
    endpoints: EndpointReport[];
  }[];
}

/** One endpoint in `/upstreams`. */
interface EndpointReport {
  address: string;
  url: string;
  source: string;
  weight: number;
  healthy: boolean;
  ejected_until: string | null;
  ejections: number;
  in_flight: number;
  requests: number;
  failures: number;
}

/** legate in-process on a routes directory the test may rewrite. */
interface Proxy extends AsyncDisposable {
  readonly legate: Legate;
  /** `http://127.0.0.1:PORT/` of the listener of service `name`. */
  url(name: string): string;
  /** Log events with message `msg`, of `endpoint` (`127.0.0.1:PORT`) when given. */
  logged(msg: string, endpoint?: string): Record<string, unknown>[];
  /** `GET /upstreams`. */
  upstreams(): Promise<UpstreamsReport>;
  /** The endpoint `address` of service `service` in `/upstreams`. */
  endpoint(service: string, address: string): Promise<EndpointReport>;
  /** `GET /metrics`, as text. */
  metricsText(): Promise<string>;
  /** One sample of `GET /metrics`; 0 when absent. */
  metric(name: string, labels: Record<string, string>): Promise<number>;
  /** Writes `files` over the routes directory and reloads. */
  rewrite(files: Record<string, string>): Promise<void>;
}

/** Starts legate in-process, without a file watcher: the test reloads. */
async function startProxy(files: Record<string, string>): Promise<Proxy> {
  const dir = await writeRoutes(files);
  const { log, lines } = memoryLogger();
  const legate = await Legate.start({
    routesDir: dir,
    admin: "127.0.0.1:0",
    log,
    watch: false,
    drainTimeout: 1_000,
  });
  const admin = `http://127.0.0.1:${(legate.admin.addr as Deno.NetAddr).port}`;
  const events: Record<string, unknown>[] = [];
  const logged = (msg: string, endpoint?: string) => {
    while (events.length < lines.length) {
      events.push(JSON.parse(lines[events.length]!));
    }
    return events.filter((e) =>
      e.msg === msg && (endpoint === undefined || e.endpoint === endpoint)
    );
  };
  const metricsText = async () => {
    const response = await fetch(`${admin}/metrics`);
    assert.equal(response.status, 200);
    return await response.text();
  };
  const upstreams = async () => {
    const response = await fetch(`${admin}/upstreams`);
    assert.equal(response.status, 200);
    return await response.json() as UpstreamsReport;
  };
  return {
    legate,
    url(name) {
      const open = legate.listeners.find((o) =>
        o.plan.services.some((s) => s.name === name)
      );
      if (!open) throw new Error(`No listener for service "${name}"`);
      return `http://127.0.0.1:${(open.listener.addr as Deno.NetAddr).port}/`;
    },
    logged,
    upstreams,
    async endpoint(service, address) {
      const report = await upstreams();
      const found = report.services.find((s) => s.name === service)?.endpoints
        .find((e) => e.address === address);
      if (!found) {
        throw new Error(`No endpoint ${address} of "${service}" in /upstreams`);
      }
      return found;
    },
    metricsText,
    async metric(name, labels) {
      return sampleOf(await metricsText(), name, labels) ?? 0;
    },
    async rewrite(next) {
      for await (const entry of Deno.readDir(dir)) {
        if (!(entry.name in next)) await Deno.remove(join(dir, entry.name));
      }
      for (const [name, text] of Object.entries(next)) {
        await Deno.writeTextFile(join(dir, name), text);
      }
      assert.equal((await legate.reload("test")).outcome, "applied");
    },
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The value of one sample in Prometheus text, or undefined. */
function sampleOf(
  text: string,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found: Record<string, string> = {};
    for (
      const pair of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)
    ) {
      found[pair[1]!] = pair[2]!;
    }
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) {
      return Number(match[3]);
    }
  }
  return undefined;
}

/** A route file of one HTTP service on a free port. */
function route(upstreams: readonly string[], extra = ""): string {
  return `listen: 127.0.0.1:0\nupstreams: [${upstreams.join(", ")}]\n${extra}`;
}

/** An in-process upstream that counts what it serves. */
class Upstream implements AsyncDisposable {
  /** Requests other than health checks. */
  hits = 0;
  /** When each of those arrived (epoch ms). */
  readonly hitTimes: number[] = [];
  /** Health checks (`GET /healthz`) received. */
  checks = 0;
  /** What `GET /healthz` answers. */
  healthStatus = 200;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  /** Answers its name, or what `respond` says, on a free loopback port. */
  constructor(
    readonly name: string,
    respond: (request: Request) => Response | Promise<Response> = () =>
      new Response(name),
  ) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request) => {
        if (new URL(request.url).pathname === "/healthz") {
          this.checks++;
          return new Response(null, { status: this.healthStatus });
        }
        this.hits++;
        this.hitTimes.push(Date.now());
        return respond(request);
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** `127.0.0.1:PORT`, as legate's logs and `/upstreams` name it. */
  get address(): string {
    return `127.0.0.1:${this.#server.addr.port}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

/** An upstream in a process of its own, to kill. */
interface UpstreamProcess extends AsyncDisposable {
  readonly url: string;
  readonly address: string;
  /** Ends it with SIGKILL: no graceful close, the kernel tears its sockets down. */
  kill(): Promise<void>;
}

/** Spawns tests/fixtures/named_upstream.ts answering `name`. */
async function spawnUpstream(name: string): Promise<UpstreamProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      new URL("./fixtures/named_upstream.ts", import.meta.url).pathname,
      name,
    ],
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let exited = false;
  child.status.then(() => exited = true);
  const kill = async () => {
    if (!exited) child.kill("SIGKILL");
    exited = true;
    await child.status;
  };
  // A child that never says where it listens is killed, which ends its stdout.
  const deadline = setTimeout(kill, 10_000);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  clearTimeout(deadline);
  await reader.cancel();
  if (!text.includes("\n")) {
    await kill();
    throw new Error(`Upstream "${name}" did not start listening`);
  }
  const { port } = JSON.parse(text) as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    kill,
    [Symbol.asyncDispose]: kill,
  };
}

/** An upstream that answers the length and SHA-256 of the body it got. */
function digestUpstream(): Upstream {
  return new Upstream("digest", async (request) => {
    const body = new Uint8Array(await request.arrayBuffer());
    return new Response(`${body.length} ${await sha256(body)}`);
  });
}

/** A loopback port nothing listens on: connecting is refused. */
function refusingUrl(): string {
  return `http://127.0.0.1:${freePort()}`;
}

/** Reads one HTTP/1.1 request (Content-Length or chunked body); null at EOF first. */
async function readRequest(
  conn: Deno.Conn,
): Promise<{ head: string; bodyBytes: number } | null> {
  let bytes = new Uint8Array(0);
  const buffer = new Uint8Array(65536);
  const append = async () => {
    const n = await conn.read(buffer);
    if (n === null) return false;
    const next = new Uint8Array(bytes.length + n);
    next.set(bytes);
    next.set(buffer.subarray(0, n), bytes.length);
    bytes = next;
    return true;
  };
  let end = -1;
  while ((end = decoder.decode(bytes).indexOf("\r\n\r\n")) < 0) {
    if (!(await append())) return null;
  }
  const head = decoder.decode(bytes.subarray(0, end));
  const bodyStart = end + 4;
  const length = /\r\ncontent-length: *(\d+)/i.exec(head);
  if (length) {
    while (bytes.length - bodyStart < Number(length[1])) {
      if (!(await append())) break;
    }
  } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    while (!decoder.decode(bytes.subarray(bodyStart)).endsWith("0\r\n\r\n")) {
      if (!(await append())) break;
    }
  }
  return { head, bodyBytes: bytes.length - bodyStart };
}

/**
 * A raw upstream that reads each request whole and closes the connection
 * without a byte of answer: to legate, a reset mid-request.
 */
function startResetter() {
  const seen: { method: string; head: string; bodyBytes: number }[] = [];
  const server = startTcpServer(async (conn) => {
    const request = await readRequest(conn);
    if (request) {
      seen.push({
        method: request.head.split(" ")[0]!,
        head: request.head,
        bodyBytes: request.bodyBytes,
      });
    }
  });
  return { server, seen, url: server.httpUrl };
}

/** One request through legate, with what the tests measure of it. */
interface Result {
  status: number;
  body: string;
  proxyStatus: string | null;
  ms: number;
}

async function send(url: string, init: RequestInit = {}): Promise<Result> {
  const started = performance.now();
  const response = await fetch(url, init);
  const body = await response.text();
  return {
    status: response.status,
    body,
    proxyStatus: response.headers.get("proxy-status"),
    ms: performance.now() - started,
  };
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs `task` over `items` with `concurrency` workers; results in order. */
async function mapConcurrently<T, R>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await task(items[index]!);
      }
    }),
  );
  return results;
}

// ---------------------------------------------------------------------------
// 1. An upstream killed under load

Deno.test("no GET fails when one of three upstreams is killed with SIGKILL under keep-alive load", async () => {
  await using a = await spawnUpstream("a");
  await using b = await spawnUpstream("b");
  await using c = await spawnUpstream("c");
  await using proxy = await startProxy({
    "svc.yaml": route([a.url, b.url, c.url]),
  });
  const url = proxy.url("svc");

  const served = new Map<string, number>();
  const failures: string[] = [];
  let killed = false;
  let afterKill = 0;
  let total = 0;
  const warm = Promise.withResolvers<void>();
  const worker = async () => {
    // Bounded: the loop ends once 600 GETs completed after the kill.
    for (let i = 0; i < 3_000 && afterKill < 600; i++) {
      try {
        const response = await fetch(url);
        const text = await response.text();
        if (response.status === 200) {
          served.set(text, (served.get(text) ?? 0) + 1);
        } else failures.push(`${response.status} ${text}`);
      } catch (error) {
        failures.push(String(error));
      }
      total++;
      if (killed) afterKill++;
      if ((served.get("c") ?? 0) >= 100) warm.resolve();
    }
  };
  // Eight clients at once: more than the retry budget's floor of three.
  const workers = Array.from({ length: 8 }, worker);
  await warm.promise;
  const servedByCBeforeKill = served.get("c")!;
  killed = true;
  await c.kill();
  await Promise.all(workers);

  assert.ok(afterKill >= 600);
  // Responses from c after the kill can only be those already on their way.
  assert.ok((served.get("c") ?? 0) <= servedByCBeforeKill + 8);

  const dead = await proxy.endpoint("svc", c.address);
  assert.ok(dead.failures >= 1, JSON.stringify(dead));
  assert.ok(dead.ejected_until !== null || !dead.healthy, JSON.stringify(dead));
  assert.equal(proxy.logged("upstream unreachable", c.address).length, 1);
  assert.equal(proxy.logged("upstream ejected", c.address).length, 1);
  for (const alive of [a, b]) {
    assert.equal(proxy.logged("upstream unreachable", alive.address).length, 0);
    assert.equal((await proxy.endpoint("svc", alive.address)).failures, 0);
  }
  const counters = (await proxy.metricsText()).split("\n").filter((l) =>
    /^legate_upstream_(retries|overflow|ejections)_total/.test(l)
  );
  assert.deepEqual(
    failures,
    [],
    `${failures.length} of ${total} GETs failed; ${counters.join("; ")}`,
  );
});

// ---------------------------------------------------------------------------
// 2. Active health checks

Deno.test("an upstream whose health check fails gets no traffic within two intervals, and gets it back after healthy_threshold passes", async () => {
  const interval = 200;
  await using a = new Upstream("a");
  await using b = new Upstream("b");
  await using c = new Upstream("c");
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url, c.url],
      `health_check: { path: /healthz, interval: ${interval}ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 1 }\n`,
    ),
  });
  const url = proxy.url("svc");
  await waitFor(() => [a, b, c].every((u) => u.checks > 0), "first checks");
  for (let i = 0; i < 6; i++) assert.equal((await send(url)).status, 200);
  assert.ok([a, b, c].every((u) => u.hits > 0));

  // b starts failing its checks while requests keep coming.
  const failingSince = Date.now();
  b.healthStatus = 503;
  await waitFor(
    async () => {
      assert.equal((await send(url)).status, 200);
      return proxy.logged("upstream unhealthy", b.address).length > 0;
    },
    "b to be found unhealthy",
    3_000,
  );
  const lastHit = b.hitTimes.at(-1)!;
  assert.ok(
    lastHit - failingSince < 2 * interval,
    `b got a request ${
      lastHit - failingSince
    }ms after its checks started failing`,
  );
  const hitsWhileUnhealthy = b.hits;
  for (let i = 0; i < 30; i++) {
    const result = await send(url);
    assert.equal(result.status, 200);
    assert.notEqual(result.body, "b");
  }
  assert.equal(b.hits, hitsWhileUnhealthy);
  assert.equal((await proxy.endpoint("svc", b.address)).healthy, false);
  assert.equal(
    await proxy.metric("legate_upstream_healthy", {
      service: "svc",
      endpoint: b.address,
    }),
    0,
  );

  // b passes again: two passes in a row bring it back.
  const passingSince = Date.now();
  b.healthStatus = 200;
  await waitFor(
    async () => {
      assert.equal((await send(url)).status, 200);
      return b.hits > hitsWhileUnhealthy;
    },
    "b to get traffic again",
    3_000,
  );
  const back = b.hitTimes[hitsWhileUnhealthy]! - passingSince;
  assert.ok(back >= 0.8 * interval, `b was back after ${back}ms, one pass`);
  assert.ok(back <= 3 * 1.1 * interval + 50, `b was back after ${back}ms`);
  assert.equal(proxy.logged("upstream unhealthy", b.address).length, 1);
  assert.equal(proxy.logged("upstream healthy", b.address).length, 1);
});

// ---------------------------------------------------------------------------
// 3. An upstream that accepts and never answers

Deno.test("an upstream that accepts and never answers is ejected after consecutive_failures, and then no request waits for it", async () => {
  let silentConnections = 0;
  await using silent = startTcpServer(async (conn) => {
    silentConnections++;
    const buffer = new Uint8Array(4096);
    while (await conn.read(buffer) !== null) {
      // Reads everything, answers nothing.
    }
  });
  await using a = new Upstream("a");
  await using b = new Upstream("b");
  const perTry = 200;
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url, silent.httpUrl],
      `retries: { attempts: 3, on: [connect_failure, reset, timeout], per_try_timeout: ${perTry}ms }\n` +
        "outlier: { consecutive_failures: 3, base_ejection: 30s }\n",
    ),
  });
  const url = proxy.url("svc");
  const address = `127.0.0.1:${silent.port}`;

  const before: Result[] = [];
  for (
    let i = 0;
    i < 30 && proxy.logged("upstream ejected", address).length === 0;
    i++
  ) {
    before.push(await send(url));
  }
  assert.equal(proxy.logged("upstream ejected", address).length, 1);
  assert.equal(proxy.logged("upstream unreachable", address).length, 1);
  assert.ok(before.every((r) => r.status === 200 && r.body !== ""));
  // Each request that tried the silent one waited one per-try timeout, then
  // was answered by a good endpoint.
  const slow = before.filter((r) => r.ms >= perTry * 0.9);
  assert.equal(slow.length, 3);
  assert.equal(silentConnections, 3);
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "timeout",
    }),
    3,
  );

  const after: Result[] = [];
  for (let i = 0; i < 30; i++) after.push(await send(url));
  assert.ok(after.every((r) => r.status === 200));
  const slowest = Math.max(...after.map((r) => r.ms));
  assert.ok(slowest < perTry / 2, `a request took ${slowest}ms once ejected`);
  assert.equal(silentConnections, 3);
  const ejected = await proxy.endpoint("svc", address);
  assert.notEqual(ejected.ejected_until, null);
  assert.equal(ejected.ejections, 1);
  assert.equal(
    await proxy.metric("legate_upstream_ejections_total", {
      service: "svc",
      endpoint: address,
    }),
    1,
  );
});

// ---------------------------------------------------------------------------
// 4. The retry budget

Deno.test("when every endpoint answers 503, retries in flight stay within the budget", async () => {
  const N = 50;
  const budget = Math.max(3, Math.floor(0.2 * N));
  let arrivals = 0;
  let retriesInFlight = 0;
  let peakRetries = 0;
  const firstWave = Promise.withResolvers<void>();
  const busy = async () => {
    const n = ++arrivals;
    if (n <= N) {
      // Every first try is answered at once, when all of them are in.
      if (n === N) firstWave.resolve();
      await firstWave.promise;
    } else {
      // A retry is answered slowly, so that retries overlap.
      retriesInFlight++;
      peakRetries = Math.max(peakRetries, retriesInFlight);
      await new Promise((resolve) => setTimeout(resolve, 150));
      retriesInFlight--;
    }
    return new Response("busy", { status: 503 });
  };
  await using a = new Upstream("a", busy);
  await using b = new Upstream("b", busy);
  await using c = new Upstream("c", busy);
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url, c.url],
      "retries: { attempts: 3, on: [503], budget: 20% }\noutlier: { consecutive_failures: 0 }\n",
    ),
  });
  const url = proxy.url("svc");
  const results = await Promise.all(
    Array.from({ length: N }, () => send(url)),
  );
  assert.ok(results.every((r) => r.status === 503 && r.body === "busy"));
  const retries = await proxy.metric("legate_upstream_retries_total", {
    service: "svc",
    reason: "503",
  });
  assert.equal(a.hits + b.hits + c.hits, arrivals);
  assert.equal(arrivals - N, retries, "every retry reached an upstream");
  assert.ok(retries >= 1, "the budget allows some retries");
  assert.ok(
    peakRetries <= budget,
    `${peakRetries} retries in flight at once, budget ${budget}`,
  );
  assert.ok(retries <= 2 * budget, `${retries} retries for ${N} requests`);
  // All first tries are answered together: past the budget, they are refused.
  const denied = await proxy.metric("legate_upstream_overflow_total", {
    service: "svc",
    limit: "retry_budget",
  });
  assert.ok(denied >= N - budget, `${denied} retries turned away`);
});

Deno.test("when every endpoint refuses, each request tries at most `attempts` endpoints, outside the budget", async () => {
  // A refused connect reached no upstream, so it is retried at once and
  // holds no share of the budget: `attempts` alone bounds it.
  const N = 50;
  const attempts = 3;
  await using proxy = await startProxy({
    "svc.yaml": route(
      [refusingUrl(), refusingUrl(), refusingUrl()],
      `retries: { attempts: ${attempts}, budget: 20% }\n`,
    ),
  });
  const url = proxy.url("svc");
  const results = await Promise.all(
    Array.from({ length: N }, () => send(url)),
  );
  assert.ok(
    results.every((r) => r.status === 502),
    JSON.stringify(results.map((r) => r.status)),
  );
  const retries = await proxy.metric("legate_upstream_retries_total", {
    service: "svc",
    reason: "connect_failure",
  });
  const denied = await proxy.metric("legate_upstream_overflow_total", {
    service: "svc",
    limit: "retry_budget",
  });
  assert.equal(retries, N * (attempts - 1));
  assert.equal(denied, 0);
});

// ---------------------------------------------------------------------------
// 5. Hash policies through the proxy

for (const balance of ["ring_hash", "maglev"] as const) {
  Deno.test(`${balance}: one key reaches one upstream, and removing one of three moves only its keys`, async () => {
    await using a = new Upstream("a");
    await using b = new Upstream("b");
    await using c = new Upstream("c");
    const hashing = `balance: ${balance}\nhash_on: header:x-user\n`;
    await using proxy = await startProxy({
      "svc.yaml": route([a.url, b.url, c.url], hashing),
    });
    const url = proxy.url("svc");
    const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`);
    const placeAll = async (list: readonly string[]) =>
      new Map(
        await mapConcurrently(list, 16, async (key) => {
          const result = await send(url, { headers: { "x-user": key } });
          assert.equal(result.status, 200);
          return [key, result.body] as const;
        }),
      );

    const first = await placeAll(keys);
    const again = await placeAll(keys.slice(0, 300));
    for (const [key, name] of again) assert.equal(name, first.get(key), key);
    const share = (name: string) =>
      [...first.values()].filter((n) => n === name).length;
    for (const name of ["a", "b", "c"]) {
      assert.ok(share(name) > 150, `${name} got ${share(name)} of 1000 keys`);
    }

    await proxy.rewrite({ "svc.yaml": route([a.url, b.url], hashing) });
    const second = await placeAll(keys);
    const moved = keys.filter((k) => first.get(k) !== second.get(k));
    const ofRemoved = keys.filter((k) => first.get(k) === "c");
    assert.ok(ofRemoved.every((k) => second.get(k) !== "c"));
    // Ring hash moves none of the others' keys; Maglev a few in 10,000.
    const movedOfKept = moved.filter((k) => first.get(k) !== "c").length;
    assert.ok(
      movedOfKept <= (balance === "ring_hash" ? 0 : 7),
      `${movedOfKept} keys of the upstreams that stayed moved`,
    );
    assert.ok(
      Math.abs(moved.length / keys.length - 1 / 3) < 0.1,
      `${moved.length} of 1000 keys moved`,
    );
  });
}

// ---------------------------------------------------------------------------
// 6. Limits

/** An upstream that holds every request until released. */
class HeldUpstream extends Upstream {
  readonly #gate: PromiseWithResolvers<void>;
  constructor(name: string) {
    const gate = Promise.withResolvers<void>();
    super(name, async () => {
      await gate.promise;
      return new Response(name);
    });
    this.#gate = gate;
  }
  /** Answers the requests held and every later one. */
  release(): void {
    this.#gate.resolve();
  }
}

Deno.test("over limits.max_requests, a request gets 503 connection_limit_reached at once", async () => {
  await using a = new HeldUpstream("a");
  await using b = new HeldUpstream("b");
  await using proxy = await startProxy({
    "svc.yaml": route([a.url, b.url], "limits: { max_requests: 2 }\n"),
  });
  const url = proxy.url("svc");
  const held = [send(url), send(url)];
  await waitFor(() => a.hits + b.hits === 2, "two requests upstream");
  const third = await send(url);
  a.release();
  b.release();
  assert.equal(third.status, 503);
  assert.equal(third.proxyStatus, "legate; error=connection_limit_reached");
  assert.ok(third.ms < 100, `the third request took ${third.ms}ms`);
  for (const result of await Promise.all(held)) {
    assert.equal(result.status, 200);
  }
  assert.equal(
    await proxy.metric("legate_upstream_overflow_total", {
      service: "svc",
      limit: "max_requests",
    }),
    1,
  );
});

Deno.test("at limits.max_connections a request waits for room; past max_pending one gets 503 at once", async () => {
  await using slow = new HeldUpstream("slow");
  await using proxy = await startProxy({
    "svc.yaml": route(
      [slow.url],
      "limits: { max_connections: 1, max_pending: 1 }\n",
    ),
  });
  const url = proxy.url("svc");
  const first = send(url);
  await waitFor(() => slow.hits === 1, "the first request upstream");
  let secondSettled = false;
  const second = send(url).finally(() => secondSettled = true);
  await waitFor(
    async () => (await proxy.upstreams()).services[0]!.requests_in_flight === 2,
    "the second request to wait",
  );
  const third = await send(url);
  assert.equal(third.status, 503);
  assert.equal(third.proxyStatus, "legate; error=connection_limit_reached");
  assert.ok(third.ms < 100, `the third request took ${third.ms}ms`);
  assert.equal(secondSettled, false);
  assert.equal(slow.hits, 1, "the waiting request is not upstream yet");
  slow.release();
  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
  assert.equal(slow.hits, 2);
  assert.equal(
    await proxy.metric("legate_upstream_overflow_total", {
      service: "svc",
      limit: "max_pending",
    }),
    1,
  );
});

// ---------------------------------------------------------------------------
// 7. Retries

Deno.test("a GET reset mid-request is retried, each time on an endpoint it did not try", async () => {
  const first = startResetter();
  await using _first = first.server;
  const second = startResetter();
  await using _second = second.server;
  await using good = new Upstream("good");
  await using proxy = await startProxy({
    "svc.yaml": route(
      [first.url, second.url, good.url],
      "retries: { attempts: 3 }\n",
    ),
  });
  const results = [];
  for (let i = 0; i < 6; i++) {
    results.push(await send(proxy.url("svc"), { headers: { "x-id": `${i}` } }));
  }
  assert.ok(results.every((r) => r.status === 200 && r.body === "good"));
  assert.equal(good.hits, 6);
  for (const resetter of [first, second]) {
    assert.ok(resetter.seen.length >= 1);
    const ids = resetter.seen.map((r) => /\r\nx-id: (\d+)/.exec(r.head)![1]);
    assert.equal(new Set(ids).size, ids.length, `one id twice: ${ids}`);
  }
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "reset",
    }),
    first.seen.length + second.seen.length,
  );
});

Deno.test("a connect failure is retried for any method, POST included", async () => {
  await using digest = digestUpstream();
  await using proxy = await startProxy({
    "svc.yaml": route([refusingUrl(), digest.url]),
  });
  for (let i = 0; i < 4; i++) {
    const body = crypto.getRandomValues(new Uint8Array(1024));
    const result = await send(proxy.url("svc"), { method: "POST", body });
    assert.equal(result.status, 200);
    assert.equal(result.body, `${body.length} ${await sha256(body)}`);
  }
  assert.equal(digest.hits, 4);
  assert.ok(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "connect_failure",
    }) >= 1,
  );
});

Deno.test("a response cut mid-body is not retried: it already reached the client", async () => {
  const cut: string[] = [];
  await using cutter = startTcpServer(async (conn) => {
    const request = await readRequest(conn);
    if (!request) return;
    cut.push(request.head);
    // Headers and the first 1,000 of 100,000 body bytes, then the close.
    await conn.write(
      encoder.encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + "x".repeat(1000),
      ),
    );
  });
  await using good = new Upstream("good");
  await using proxy = await startProxy({
    "svc.yaml": route(
      [cutter.httpUrl, good.url],
      "retries: { attempts: 3, on: [connect_failure, reset, timeout, 502, 503, 504] }\n",
    ),
  });
  let truncated = 0;
  for (let i = 0; i < 4; i++) {
    const response = await fetch(proxy.url("svc"));
    assert.equal(response.status, 200);
    const body = await response.text().catch(() => null);
    if (body === null) truncated++;
    else assert.equal(body, "good");
  }
  assert.ok(truncated >= 1);
  assert.equal(truncated, cut.length);
  assert.equal(good.hits, 4 - truncated, "no cut response was sent again");
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "reset",
    }),
    0,
  );
});

Deno.test("a POST reset mid-request is a 502 without retry_non_idempotent", async () => {
  const resetter = startResetter();
  await using _ = resetter.server;
  await using good = new Upstream("good");
  await using proxy = await startProxy({
    "svc.yaml": route([resetter.url, good.url]),
  });
  const results = [];
  for (let i = 0; i < 4; i++) {
    results.push(await send(proxy.url("svc"), { method: "POST", body: "hi" }));
  }
  const failed = results.filter((r) => r.status === 502);
  assert.ok(failed.length >= 1);
  assert.equal(failed.length, resetter.seen.length);
  assert.ok(
    failed.every((r) =>
      r.proxyStatus === "legate; error=connection_terminated"
    ),
  );
  assert.equal(good.hits, results.length - failed.length);
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "reset",
    }),
    0,
  );
});

Deno.test("a 503 is retried when retries.on lists 503", async () => {
  await using busy = new Upstream(
    "busy",
    () => new Response("busy", { status: 503 }),
  );
  await using good = new Upstream("good");
  await using proxy = await startProxy({
    "svc.yaml": route([busy.url, good.url], "retries: { on: [503] }\n"),
  });
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await send(proxy.url("svc")));
  assert.ok(results.every((r) => r.status === 200 && r.body === "good"));
  assert.ok(busy.hits >= 1);
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "503",
    }),
    busy.hits,
  );
});

Deno.test("a POST with a 10 KiB Content-Length body is held and retried intact", async () => {
  const resetter = startResetter();
  await using _ = resetter.server;
  await using digest = digestUpstream();
  await using proxy = await startProxy({
    "svc.yaml": route(
      [resetter.url, digest.url],
      "retries: { retry_non_idempotent: true }\n",
    ),
  });
  for (let i = 0; i < 4; i++) {
    const body = crypto.getRandomValues(new Uint8Array(10 * 1024));
    const result = await send(proxy.url("svc"), { method: "POST", body });
    assert.equal(result.status, 200);
    assert.equal(result.body, `${body.length} ${await sha256(body)}`);
  }
  assert.ok(resetter.seen.length >= 1);
  assert.ok(resetter.seen.every((r) => r.bodyBytes === 10 * 1024));
  assert.ok(
    resetter.seen.every((r) => /\r\ncontent-length: 10240/i.test(r.head)),
  );
  assert.equal(
    await proxy.metric("legate_upstream_retries_total", {
      service: "svc",
      reason: "reset",
    }),
    resetter.seen.length,
  );
});

/** A chunked request body: a stream fetch sends without Content-Length. */
function chunkedBody(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes.slice(0, 4096));
      controller.enqueue(bytes.slice(4096));
      controller.close();
    },
  });
}

Deno.test("a chunked POST is not retried after a reset, only after a connect failure", async () => {
  const resetter = startResetter();
  await using _ = resetter.server;
  await using digest = digestUpstream();
  const options = "retries: { retry_non_idempotent: true }\n";
  await using proxy = await startProxy({
    "reset.yaml": route([resetter.url, digest.url], options),
  });
  const results = [];
  for (let i = 0; i < 4; i++) {
    const body = crypto.getRandomValues(new Uint8Array(10 * 1024));
    results.push(
      await send(proxy.url("reset"), {
        method: "POST",
        body: chunkedBody(body),
      }),
    );
  }
  const failed = results.filter((r) => r.status === 502);
  assert.ok(failed.length >= 1);
  assert.equal(failed.length, resetter.seen.length);
  assert.ok(
    resetter.seen.every((r) =>
      r.method === "POST" && /\r\ntransfer-encoding: chunked/i.test(r.head)
    ),
  );
  assert.equal(digest.hits, results.length - failed.length);

  await proxy.rewrite({
    "refused.yaml": route([refusingUrl(), digest.url], options),
  });
  const hitsBefore = digest.hits;
  for (let i = 0; i < 4; i++) {
    const body = crypto.getRandomValues(new Uint8Array(10 * 1024));
    const result = await send(proxy.url("refused"), {
      method: "POST",
      body: chunkedBody(body),
    });
    assert.equal(result.status, 200);
    assert.equal(result.body, `${body.length} ${await sha256(body)}`);
  }
  assert.equal(digest.hits - hitsBefore, 4);
  assert.ok(
    await proxy.metric("legate_upstream_retries_total", {
      service: "refused",
      reason: "connect_failure",
    }) >= 1,
  );
});

// ---------------------------------------------------------------------------
// 8. Panic mode

Deno.test("panic mode: with every endpoint unhealthy, traffic still flows to all of them, logged once", async () => {
  await using a = new Upstream("a");
  await using b = new Upstream("b");
  a.healthStatus = b.healthStatus = 503;
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url],
      "health_check: { path: /healthz, interval: 100ms, timeout: 80ms, unhealthy_threshold: 1 }\n",
    ),
  });
  await waitFor(
    () => proxy.logged("upstream unhealthy").length === 2,
    "both endpoints to be unhealthy",
  );
  const results = [];
  for (let i = 0; i < 20; i++) results.push(await send(proxy.url("svc")));
  assert.ok(results.every((r) => r.status === 200));
  assert.ok(a.hits >= 5 && b.hits >= 5, `a got ${a.hits}, b ${b.hits}`);
  const panics = proxy.logged(
    "every endpoint is unhealthy or ejected: sending to all of them (panic mode)",
  );
  assert.equal(panics.length, 1);
});

Deno.test("panic mode: with every endpoint ejected, traffic still flows to all of them, logged once", async () => {
  // Each answers its first request with a 503, then recovers.
  const flaky = (name: string) => {
    let first = true;
    return new Upstream(name, () => {
      if (!first) return new Response(name);
      first = false;
      return new Response("busy", { status: 503 });
    });
  };
  await using a = flaky("a");
  await using b = flaky("b");
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url],
      "outlier: { consecutive_failures: 1, base_ejection: 30s, max_ejection_percent: 100 }\n",
    ),
  });
  const results = [];
  for (let i = 0; i < 20; i++) results.push(await send(proxy.url("svc")));
  assert.equal(proxy.logged("upstream ejected").length, 2);
  assert.deepEqual(results.slice(0, 2).map((r) => r.status), [503, 503]);
  assert.ok(results.slice(2).every((r) => r.status === 200));
  assert.ok(a.hits >= 5 && b.hits >= 5, `a got ${a.hits}, b ${b.hits}`);
  const report = await proxy.upstreams();
  assert.ok(report.services[0]!.endpoints.every((e) => e.ejected_until));
  const panics = proxy.logged(
    "every endpoint is unhealthy or ejected: sending to all of them (panic mode)",
  );
  assert.equal(panics.length, 1);
});

// ---------------------------------------------------------------------------
// 9. /metrics through promtool

Deno.test("promtool check metrics accepts /metrics after health, ejection, retry and overflow traffic", async () => {
  await using good = new Upstream("good");
  await using sick = new Upstream("sick");
  sick.healthStatus = 503;
  const resetter = startResetter();
  await using _ = resetter.server;
  await using held = new HeldUpstream("held");
  const listen = `127.0.0.1:${freePort()}`;
  const on = (prefix: string, upstreams: string[], extra: string) =>
    `listen: ${listen}\nupstreams: [${upstreams.join(", ")}]\n` +
    `match: { path_prefix: ${prefix} }\n${extra}`;
  await using proxy = await startProxy({
    "checked.yaml": on(
      "/checked",
      [good.url, sick.url],
      "health_check: { path: /healthz, interval: 100ms, timeout: 80ms, unhealthy_threshold: 1 }\n",
    ),
    "flaky.yaml": on(
      "/flaky",
      [good.url, resetter.url],
      "outlier: { consecutive_failures: 1 }\n",
    ),
    "narrow.yaml": on("/narrow", [held.url], "limits: { max_requests: 1 }\n"),
  });
  const base = `http://${listen}`;
  await waitFor(
    () => proxy.logged("upstream unhealthy", sick.address).length === 1,
    "sick to be unhealthy",
  );
  for (let i = 0; i < 4; i++) {
    assert.equal((await send(`${base}/flaky`)).status, 200);
  }
  const waiting = send(`${base}/narrow`);
  await waitFor(() => held.hits === 1, "a request to hold the service");
  assert.equal((await send(`${base}/narrow`)).status, 503);
  held.release();
  assert.equal((await waiting).status, 200);

  const text = await proxy.metricsText();
  const resetterAddress = `127.0.0.1:${resetter.server.port}`;
  assert.equal(
    sampleOf(text, "legate_upstream_healthy", {
      service: "checked",
      endpoint: sick.address,
    }),
    0,
  );
  assert.equal(
    sampleOf(text, "legate_upstream_ejections_total", {
      service: "flaky",
      endpoint: resetterAddress,
    }),
    1,
  );
  assert.equal(
    sampleOf(text, "legate_upstream_retries_total", {
      service: "flaky",
      reason: "reset",
    }),
    1,
  );
  assert.equal(
    sampleOf(text, "legate_upstream_overflow_total", {
      service: "narrow",
      limit: "max_requests",
    }),
    1,
  );
  assert.equal(
    sampleOf(text, "legate_upstream_requests_in_flight", {
      service: "narrow",
      endpoint: held.address,
    }),
    0,
  );

  await assertPromtoolAccepts(text);
});

// ---------------------------------------------------------------------------
// 10. /upstreams

Deno.test("/upstreams lists each endpoint with its address, source, health, ejection and counters", async () => {
  await using a = new Upstream("a");
  await using b = new Upstream("b");
  const refused = refusingUrl();
  await using proxy = await startProxy({
    "svc.yaml": route(
      [a.url, b.url, refused],
      "outlier: { consecutive_failures: 1, base_ejection: 60s }\n",
    ),
  });
  for (let i = 0; i < 6; i++) {
    assert.equal((await send(proxy.url("svc"))).status, 200);
  }
  const checkedAt = Date.now();
  const report = await proxy.upstreams();
  assert.equal(report.services.length, 1);
  const service = report.services[0]!;
  assert.equal(service.name, "svc");
  assert.equal(service.balance, "round_robin");
  assert.equal(service.requests_in_flight, 0);
  const byAddress = new Map(service.endpoints.map((e) => [e.address, e]));
  const refusedAddress = new URL(refused).host;
  assert.deepEqual(
    [...byAddress.keys()].sort(),
    [a.address, b.address, refusedAddress].sort(),
  );
  for (const up of [a, b]) {
    assert.deepEqual(byAddress.get(up.address), {
      address: up.address,
      url: up.url,
      source: "static",
      weight: 1,
      healthy: true,
      ejected_until: null,
      ejections: 0,
      in_flight: 0,
      requests: up.hits,
      failures: 0,
    });
  }
  assert.equal(a.hits + b.hits, 6);
  const dead = byAddress.get(refusedAddress)!;
  const { ejected_until, ...rest } = dead;
  assert.deepEqual(rest, {
    address: refusedAddress,
    url: refused,
    source: "static",
    weight: 1,
    healthy: true,
    ejections: 1,
    in_flight: 0,
    requests: 1,
    failures: 1,
  });
  const until = Date.parse(ejected_until!);
  assert.ok(until > checkedAt && until <= checkedAt + 60_000, ejected_until!);
});

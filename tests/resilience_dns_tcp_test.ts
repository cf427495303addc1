/**
 * Resilience end to end: legate resolving upstream names itself (A/AAAA and
 * SRV, against dnsmasq on a loopback port), and the resilience of TCP
 * services (health checks, outlier ejection, retries, limits, source-IP
 * hashing), each through a real legate, real upstream servers and real
 * clients on loopback.
 *
 * Upstream servers bind distinct loopback addresses (127.0.0.2, 127.0.0.3,
 * ...) on one port, so that DNS records can point at them; each answers with
 * its own address, so a test sees where a request or connection went.
 * Every legate here names dnsmasq as its resolver: nothing asks the system's.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { join } from "node:path";
import { Legate } from "../mod.ts";
import { type Dnsmasq, type SrvEntry, startDnsmasq } from "./_dnsmasq.ts";
import {
  connectTo,
  freePort,
  memoryLogger,
  spawnLegate,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `dns_refresh` of every DNS service here. */
const REFRESH_MS = 200;
/** How soon a DNS change must show: one refresh plus a second. */
const DNS_CHANGE_MS = REFRESH_MS + 1_000;
/** `health_check.interval` of every checked service here. */
const CHECK_MS = 200;

// ---------------------------------------------------------------------------
// legate in-process, asking dnsmasq

/** One endpoint as `GET /upstreams` shows it. */
interface EndpointState {
  readonly address: string;
  readonly url: string;
  readonly source: string;
  readonly weight: number;
  readonly priority?: number;
  readonly healthy: boolean;
  readonly ejected_until: string | null;
  readonly ejections: number;
  readonly in_flight: number;
  readonly requests: number;
  readonly failures: number;
}

interface RunningLegate extends AsyncDisposable {
  readonly legate: Legate;
  readonly dir: string;
  /** `host:port` of the listener of service `name`. */
  address(name: string): string;
  /** The endpoints of service `name` in `GET /upstreams`; undefined when it is not listed. */
  endpoints(name: string): Promise<EndpointState[] | undefined>;
  /** The value of one `/metrics` sample, 0 when absent. */
  metric(name: string, labels: Record<string, string>): Promise<number>;
  /** Log events with message `msg`. */
  logged(msg: string): Record<string, unknown>[];
}

/**
 * Starts legate in-process on route files, with `dns` as its DNS server, an
 * admin listener on a free port and no directory watch (tests reload).
 */
async function startLegate(
  files: Record<string, string>,
  dns: Dnsmasq | null,
): Promise<RunningLegate> {
  const dir = await writeRoutes(files);
  const { log, lines } = memoryLogger();
  const legate = await Legate.start({
    routesDir: dir,
    admin: "127.0.0.1:0",
    log,
    watch: false,
    // No DNS service here: a resolver that is never asked, never the system's.
    resolver: dns?.resolver ?? { hostname: "127.0.0.1", port: 1 },
  });
  const admin = `http://127.0.0.1:${(legate.admin.addr as Deno.NetAddr).port}`;
  return {
    legate,
    dir,
    address(name) {
      const open = legate.listeners.find((o) =>
        o.plan.services.some((s) => s.name === name)
      );
      if (!open) throw new Error(`No listener for service "${name}"`);
      const addr = open.listener.addr as Deno.NetAddr;
      return `${addr.hostname}:${addr.port}`;
    },
    async endpoints(name) {
      const response = await fetch(`${admin}/upstreams`);
      const report = await response.json() as {
        services: { name: string; endpoints: EndpointState[] }[];
      };
      return report.services.find((s) => s.name === name)?.endpoints;
    },
    async metric(name, labels) {
      const text = await (await fetch(`${admin}/metrics`)).text();
      const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
      for (const line of text.split("\n")) {
        if (!line.startsWith(`${name}{`)) continue;
        const inside = line.slice(line.indexOf("{") + 1, line.indexOf("}"));
        const have = inside.split(",");
        if (wanted.every((label) => have.includes(label))) {
          return Number(line.slice(line.lastIndexOf(" ") + 1));
        }
      }
      return 0;
    },
    logged(msg) {
      return lines.map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((event) => event.msg === msg);
    },
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The `address → requests` of endpoints, for comparing counters. */
function requestsByAddress(
  endpoints: readonly EndpointState[] | undefined,
): Record<string, number> {
  return Object.fromEntries(
    (endpoints ?? []).map((e) => [e.address, e.requests]),
  );
}

/** The sorted addresses of endpoints. */
function addressesOf(
  endpoints: readonly EndpointState[] | undefined,
): string[] {
  return (endpoints ?? []).map((e) => e.address).sort();
}

// ---------------------------------------------------------------------------
// Upstream servers on several loopback addresses, one port

/**
 * Binds `bind(address, port)` for every address on one free port; when some
 * address has that port taken already, tries another port.
 */
function onOnePort<T extends { close(): unknown }>(
  addresses: readonly string[],
  bind: (address: string, port: number) => T,
): { port: number; bound: Map<string, T> } {
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    const bound = new Map<string, T>();
    try {
      for (const address of addresses) bound.set(address, bind(address, port));
      return { port, bound };
    } catch (error) {
      for (const one of bound.values()) one.close();
      if (attempt >= 5 || !(error instanceof Deno.errors.AddrInUse)) {
        throw error;
      }
    }
  }
}

/** HTTP servers that answer with their own address; `/health` answers `health`. */
interface HttpUpstreams extends AsyncDisposable {
  readonly port: number;
  /** Requests (not health checks) by server address. */
  readonly hits: Map<string, number>;
  /** The Host header of the last request, by server address. */
  readonly hosts: Map<string, string>;
  /** What `/health` answers, by server address (200 unless set). */
  readonly health: Map<string, number>;
  /** Shuts one server down: its address refuses connections. */
  stop(address: string): Promise<void>;
}

function startHttpUpstreams(addresses: readonly string[]): HttpUpstreams {
  const hits = new Map<string, number>();
  const hosts = new Map<string, string>();
  const health = new Map<string, number>();
  const { port, bound } = onOnePort(addresses, (address, port) => {
    const server = Deno.serve(
      { hostname: address, port, onListen() {} },
      (request) => {
        if (new URL(request.url).pathname === "/health") {
          return new Response(null, { status: health.get(address) ?? 200 });
        }
        hits.set(address, (hits.get(address) ?? 0) + 1);
        hosts.set(address, request.headers.get("host") ?? "");
        return new Response(address);
      },
    );
    return {
      server,
      close: () => void server.shutdown(),
    };
  });
  const stopped = new Set<string>();
  return {
    port,
    hits,
    hosts,
    health,
    async stop(address) {
      if (stopped.has(address)) return;
      stopped.add(address);
      await bound.get(address)!.server.shutdown();
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(
        [...bound].filter(([address]) => !stopped.has(address)).map((
          [, { server }],
        ) => server.shutdown()),
      );
    },
  };
}

/** GETs `/` through legate `count` times; the answers (upstream addresses) by address. */
async function spread(
  address: string,
  count: number,
): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const response = await fetch(`http://${address}/`);
    const body = await response.text();
    assert.equal(response.status, 200, `request ${i}: ${body}`);
    seen.set(body, (seen.get(body) ?? 0) + 1);
  }
  return seen;
}

/** The sorted keys of a map. */
function keysOf(map: ReadonlyMap<string, unknown>): string[] {
  return [...map.keys()].sort();
}

/**
 * TCP servers speaking a line protocol: `WHO` is answered with the server's
 * address (a client connection, counted), `PING` with `PONG` (or `NOPE`
 * while the server is `failing`; a health check, not counted); other bytes
 * are echoed. A connection stays open until the client ends it.
 */
interface TcpUpstreams extends AsyncDisposable {
  readonly port: number;
  /** Client connections (those that said WHO) by server address. */
  readonly connections: Map<string, number>;
  /** Addresses whose health check answer is wrong. */
  readonly failing: Set<string>;
  /** Closes one server's listener (new connections are refused) and its connections. */
  stop(address: string): void;
}

function startTcpUpstreams(addresses: readonly string[]): TcpUpstreams {
  const connections = new Map<string, number>();
  const failing = new Set<string>();
  const open = new Set<Deno.Conn>();
  const serving: Promise<void>[] = [];
  const { port, bound } = onOnePort(
    addresses,
    (address, port) => Deno.listen({ hostname: address, port }),
  );
  const serve = async (address: string, conn: Deno.Conn) => {
    open.add(conn);
    const buffer = new Uint8Array(4096);
    let pending = "";
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        pending += decoder.decode(buffer.subarray(0, n));
        let newline;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line === "PING") {
            const answer = failing.has(address) ? "NOPE\n" : "PONG\n";
            await conn.write(encoder.encode(answer));
          } else if (line === "WHO") {
            connections.set(address, (connections.get(address) ?? 0) + 1);
            await conn.write(encoder.encode(`${address}\n`));
          } else {
            await conn.write(encoder.encode(`${line}\n`));
          }
        }
      }
    } catch {
      // Reset by the client, or closed by stop().
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  };
  for (const [address, listener] of bound) {
    serving.push(
      (async () => {
        for await (const conn of listener) serve(address, conn);
      })().catch(() => {}),
    );
  }
  const stopped = new Set<string>();
  const stop = (address: string) => {
    if (stopped.has(address)) return;
    stopped.add(address);
    bound.get(address)!.close();
    for (const conn of open) {
      if ((conn.localAddr as Deno.NetAddr).hostname === address) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
    }
  };
  return {
    port,
    connections,
    failing,
    stop,
    async [Symbol.asyncDispose]() {
      for (const address of bound.keys()) stop(address);
      await Promise.all(serving);
    },
  };
}

/** Reads until a newline or the end; the text without the newline ("" when nothing came). */
async function readLine(conn: Deno.Conn, timeoutMs = 3_000): Promise<string> {
  const buffer = new Uint8Array(1024);
  let text = "";
  const deadline = setTimeout(() => conn.close(), timeoutMs);
  try {
    while (!text.includes("\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n));
    }
  } catch {
    // Reset, or closed at the deadline.
  } finally {
    clearTimeout(deadline);
  }
  return text.split("\n")[0]!;
}

/** One TCP connection through legate: which upstream answered WHO, and how long that took. */
async function who(address: string): Promise<{ upstream: string; ms: number }> {
  const started = performance.now();
  const conn = await connectTo(address);
  try {
    await conn.write(encoder.encode("WHO\n"));
    const upstream = await readLine(conn);
    return { upstream, ms: performance.now() - started };
  } finally {
    conn.close();
  }
}

/** A connection through legate that answered WHO and stays open. */
async function held(
  address: string,
): Promise<{ conn: Deno.Conn; upstream: string }> {
  const conn = await connectTo(address);
  await conn.write(encoder.encode("WHO\n"));
  return { conn, upstream: await readLine(conn) };
}

/**
 * What a client connection got before it ended, or `open` when it stayed
 * open for `timeoutMs`: `eof` or `reset` with the bytes received.
 */
async function outcome(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<{ end: "eof" | "reset" | "open"; bytes: number; ms: number }> {
  const started = performance.now();
  // A write may already fail when legate closed the connection.
  await conn.write(encoder.encode("WHO\n")).catch(() => {});
  const buffer = new Uint8Array(1024);
  let bytes = 0;
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) {
        return { end: "eof", bytes, ms: performance.now() - started };
      }
      bytes += n;
    }
  } catch {
    return {
      end: timedOut ? "open" : "reset",
      bytes,
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(deadline);
    if (!timedOut) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  }
}

/** One connection through legate from `localAddress`: which upstream answered WHO. */
function whoFrom(localAddress: string, address: string): Promise<string> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: Number(port), localAddress });
    let text = "";
    socket.setEncoding("utf8");
    socket.setTimeout(3_000, () => socket.destroy(new Error("No answer")));
    socket.on("connect", () => {
      const local = socket.localAddress;
      if (local !== localAddress) {
        socket.destroy(new Error(`Bound ${local}, not ${localAddress}`));
        return;
      }
      socket.write("WHO\n");
    });
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (text.includes("\n")) socket.end();
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(text.split("\n")[0]!));
  });
}

/** Counts UDP datagrams on 127.0.0.1:`port` and never answers: a DNS server that is gone. */
async function silentDns(
  port: number,
): Promise<{ readonly received: number } & AsyncDisposable> {
  const socket = dgram.createSocket("udp4");
  let received = 0;
  socket.on("message", () => received++);
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, "127.0.0.1", () => resolve());
  });
  return {
    get received() {
      return received;
    },
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------
// DNS

Deno.test("every A record of an upstream's name gets traffic; a changed answer moves it within dns_refresh, and an address that stays keeps its counters", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2", "127.0.0.3"] },
  });
  await using servers = startHttpUpstreams([
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
  ]);
  const { port } = servers;
  await using l = await startLegate({
    "users.yaml": `listen: 127.0.0.1:0
upstreams: ['http://users.test:${port}']
dns_refresh: ${REFRESH_MS}ms
`,
  }, dns);
  const users = l.address("users");

  const first = await spread(users, 10);
  assert.deepEqual(keysOf(first), ["127.0.0.2", "127.0.0.3"]);
  assert.equal(servers.hosts.get("127.0.0.2"), `users.test:${port}`);
  const before = await l.endpoints("users");
  assert.deepEqual(addressesOf(before), [
    `127.0.0.2:${port}`,
    `127.0.0.3:${port}`,
  ]);
  assert.deepEqual(
    before!.map((e) => [e.source, e.url]),
    before!.map(() => ["dns", `http://users.test:${port}`]),
  );

  // 127.0.0.2 goes, 127.0.0.4 comes, 127.0.0.3 stays.
  await dns.setHosts({ "users.test": ["127.0.0.3", "127.0.0.4"] });
  let changed = Date.now();
  await waitFor(
    async () =>
      addressesOf(await l.endpoints("users")).join() ===
        `127.0.0.3:${port},127.0.0.4:${port}`,
    "legate to follow the new answer",
    DNS_CHANGE_MS,
  );
  assert.ok(Date.now() - changed <= DNS_CHANGE_MS);
  const second = await spread(users, 10);
  assert.deepEqual(keysOf(second), ["127.0.0.3", "127.0.0.4"]);
  const afterFirstChange = requestsByAddress(await l.endpoints("users"));
  // The endpoint that stayed counted every request it ever got: nothing reset.
  assert.equal(
    afterFirstChange[`127.0.0.3:${port}`],
    servers.hits.get("127.0.0.3"),
  );
  assert.equal(
    afterFirstChange[`127.0.0.4:${port}`],
    servers.hits.get("127.0.0.4"),
  );

  // Only 127.0.0.4 is left: all traffic goes there.
  await dns.setHosts({ "users.test": ["127.0.0.4"] });
  changed = Date.now();
  await waitFor(
    async () =>
      addressesOf(await l.endpoints("users")).join() ===
        `127.0.0.4:${port}`,
    "legate to drop 127.0.0.3",
    DNS_CHANGE_MS,
  );
  assert.ok(Date.now() - changed <= DNS_CHANGE_MS);
  assert.deepEqual([...await spread(users, 6)], [["127.0.0.4", 6]]);
  const last = await l.endpoints("users");
  assert.equal(last![0]!.requests, servers.hits.get("127.0.0.4"));
  assert.equal(last![0]!.failures, 0);
});

Deno.test("a DNS server that stops answering: legate keeps the last answer and serves on, logs the failure once and the recovery once", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2", "127.0.0.3"] },
    logQueries: true,
  });
  await using servers = startHttpUpstreams(["127.0.0.2", "127.0.0.3"]);
  await using l = await startLegate({
    "users.yaml": `listen: 127.0.0.1:0
upstreams: ['http://users.test:${servers.port}']
dns_refresh: ${REFRESH_MS}ms
`,
  }, dns);
  const users = l.address("users");
  assert.deepEqual(keysOf(await spread(users, 4)), ["127.0.0.2", "127.0.0.3"]);
  const failed = "upstream lookup failed: keeping its last answer";
  const recovered = "upstream lookup works again";

  await dns.stop();
  {
    // Its port now drops every question, and counts them.
    await using sink = await silentDns(dns.port);
    await waitFor(
      () => l.logged(failed).length > 0,
      "the lookup failure to be logged",
      10_000,
    );
    const perRound = sink.received;
    assert.ok(perRound > 0);
    // The answer legate had is still in use.
    assert.deepEqual(keysOf(await spread(users, 4)), [
      "127.0.0.2",
      "127.0.0.3",
    ]);
    // A second round fails as well, and a third begins: still one line.
    await waitFor(
      () => sink.received > 2 * perRound,
      "two more rounds of lookups",
      15_000,
    );
    assert.equal(l.logged(failed).length, 1);
    assert.equal(
      l.logged(failed)[0]!.upstream,
      `http://users.test:${servers.port}`,
    );
    const reason = String(l.logged(failed)[0]!.reason);
    assert.match(reason, /^Cannot resolve "users\.test"/);
    assert.match(reason, /timed out|took longer/);
    assert.equal(l.logged(recovered).length, 0);
    assert.equal((await l.endpoints("users"))!.length, 2);
  }

  await dns.start();
  await waitFor(
    () => l.logged(recovered).length > 0,
    "the recovery to be logged",
    10_000,
  );
  const asked = dns.queries("users.test", "A");
  await waitFor(
    () => dns.queries("users.test", "A") >= asked + 3,
    "three more rounds of lookups",
  );
  assert.equal(l.logged(recovered).length, 1);
  assert.equal(l.logged(failed).length, 1);
  assert.deepEqual(keysOf(await spread(users, 4)), ["127.0.0.2", "127.0.0.3"]);
});

Deno.test("SRV: only the lowest priority gets traffic, by weight, while it has a healthy endpoint; records added and removed move the endpoints", async () => {
  const name = "_http._tcp.users.test";
  await using servers = startHttpUpstreams([
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
  ]);
  const { port } = servers;
  const a: SrvEntry = { name, target: "a.test", port, priority: 0, weight: 1 };
  const b: SrvEntry = { name, target: "b.test", port, priority: 0, weight: 3 };
  const c: SrvEntry = { name, target: "c.test", port, priority: 1, weight: 1 };
  const d: SrvEntry = { name, target: "d.test", port, priority: 0, weight: 1 };
  await using dns = await startDnsmasq({
    hosts: {
      "a.test": ["127.0.0.2"],
      "b.test": ["127.0.0.3"],
      "c.test": ["127.0.0.4"],
      "d.test": ["127.0.0.5"],
    },
    srv: [a, b, c],
  });
  await using l = await startLegate({
    "users.yaml": `listen: 127.0.0.1:0
upstreams: ['http+srv://${name}']
dns_refresh: ${REFRESH_MS}ms
health_check: { path: /health, interval: ${CHECK_MS}ms, timeout: 150ms, healthy_threshold: 1, unhealthy_threshold: 1 }
`,
  }, dns);
  const users = l.address("users");
  const state = await l.endpoints("users");
  assert.deepEqual(
    state!.map((e) => [e.address, e.priority, e.weight, e.source]),
    [
      [`127.0.0.2:${port}`, 0, 1, "srv"],
      [`127.0.0.3:${port}`, 0, 3, "srv"],
      [`127.0.0.4:${port}`, 1, 1, "srv"],
    ],
  );

  // Priority 0 only, 1:3 by weight.
  const first = await spread(users, 40);
  assert.deepEqual(keysOf(first), ["127.0.0.2", "127.0.0.3"]);
  const share = first.get("127.0.0.3")! / 40;
  assert.ok(share > 0.6 && share < 0.9, `b.test got ${share} of the traffic`);
  // Each endpoint's Host is its record's target and port.
  assert.equal(servers.hosts.get("127.0.0.2"), `a.test:${port}`);
  assert.equal(servers.hosts.get("127.0.0.3"), `b.test:${port}`);

  // a.test fails its check, b.test is dead: priority 1 takes over.
  servers.health.set("127.0.0.2", 503);
  await servers.stop("127.0.0.3");
  await waitFor(
    async () =>
      (await l.endpoints("users"))!.filter((e) => !e.healthy).length === 2,
    "a.test and b.test to be unhealthy",
    5 * CHECK_MS,
  );
  assert.deepEqual([...await spread(users, 6)], [["127.0.0.4", 6]]);

  // a.test passes again: priority 0 is back.
  servers.health.delete("127.0.0.2");
  await waitFor(
    async () =>
      (await l.endpoints("users"))!.find((e) =>
        e.address === `127.0.0.2:${port}`
      )!.healthy,
    "a.test to be healthy",
    5 * CHECK_MS,
  );
  assert.deepEqual([...await spread(users, 6)], [["127.0.0.2", 6]]);
  const aBefore = (await l.endpoints("users"))!.find((e) =>
    e.address === `127.0.0.2:${port}`
  )!;

  // b.test's record goes, d.test's comes.
  await dns.restart([a, c, d]);
  await waitFor(
    async () =>
      addressesOf(await l.endpoints("users")).join() ===
        [`127.0.0.2:${port}`, `127.0.0.4:${port}`, `127.0.0.5:${port}`]
          .join(),
    "the endpoints to follow the SRV records",
    // A restart may land in a round, which then waits out its lookup timeout.
    8_000,
  );
  const after = await spread(users, 20);
  assert.deepEqual(keysOf(after), ["127.0.0.2", "127.0.0.5"]);
  // Equal weights: about half each (round robin's first picks may lean).
  for (const [address, count] of after) {
    assert.ok(count >= 7, `${address} got ${count} of 20 requests`);
  }
  assert.equal(servers.hosts.get("127.0.0.5"), `d.test:${port}`);
  // a.test stayed: its counters too.
  const aAfter = (await l.endpoints("users"))!.find((e) =>
    e.address === `127.0.0.2:${port}`
  )!;
  assert.equal(aAfter.requests, aBefore.requests + after.get("127.0.0.2")!);
  assert.equal(aAfter.requests, servers.hits.get("127.0.0.2"));
});

Deno.test("SRV: when every endpoint of the lowest priority refuses connections (no health checks), traffic moves to the next priority", async () => {
  const name = "_http._tcp.users.test";
  await using servers = startHttpUpstreams([
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
  ]);
  const { port } = servers;
  await servers.stop("127.0.0.2");
  await servers.stop("127.0.0.3");
  await using dns = await startDnsmasq({
    hosts: {
      "a.test": ["127.0.0.2"],
      "b.test": ["127.0.0.3"],
      "c.test": ["127.0.0.4"],
    },
    srv: [
      { name, target: "a.test", port, priority: 0 },
      { name, target: "b.test", port, priority: 0 },
      { name, target: "c.test", port, priority: 1 },
    ],
  });
  await using l = await startLegate({
    "users.yaml": `listen: 127.0.0.1:0
upstreams: ['http+srv://${name}']
dns_refresh: ${REFRESH_MS}ms
outlier: { consecutive_failures: 1 }
retries: { attempts: 3, on: [connect_failure] }
`,
  }, dns);
  const users = l.address("users");
  const statuses: number[] = [];
  // A few requests may fail while legate learns that priority 0 is dead.
  for (let i = 0; i < 20; i++) {
    const response = await fetch(`http://${users}/`);
    await response.body?.cancel();
    statuses.push(response.status);
  }
  assert.deepEqual(
    statuses.slice(-10),
    Array(10).fill(200),
    `statuses: ${statuses.join(" ")}; endpoints: ${
      JSON.stringify(await l.endpoints("users"))
    }`,
  );
  assert.equal(
    servers.hits.get("127.0.0.4"),
    10 + statuses.slice(0, 10)
      .filter((status) => status === 200).length,
  );
});

Deno.test("TCP services resolve tcp:// host names and tcp+srv:// names through DNS too", async () => {
  await using upstreams = startTcpUpstreams([
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
  ]);
  const { port } = upstreams;
  await using dns = await startDnsmasq({
    hosts: {
      "echo.test": ["127.0.0.2", "127.0.0.3"],
      "cache-1.test": ["127.0.0.4"],
    },
    srv: [{ name: "_cache._tcp.test", target: "cache-1.test", port }],
  });
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://echo.test:${port}]
dns_refresh: ${REFRESH_MS}ms
`,
    "cache.yaml": `listen: 127.0.0.9:0
upstreams: [tcp+srv://_cache._tcp.test]
dns_refresh: ${REFRESH_MS}ms
`,
  }, dns);
  const reached = new Set<string>();
  for (let i = 0; i < 4; i++) {
    reached.add((await who(l.address("echo"))).upstream);
  }
  assert.deepEqual([...reached].sort(), ["127.0.0.2", "127.0.0.3"]);
  assert.equal((await who(l.address("cache"))).upstream, "127.0.0.4");

  await dns.setHosts({
    "echo.test": ["127.0.0.3"],
    "cache-1.test": ["127.0.0.2"],
  });
  await waitFor(
    async () =>
      addressesOf(await l.endpoints("echo")).join() === `127.0.0.3:${port}` &&
      addressesOf(await l.endpoints("cache")).join() === `127.0.0.2:${port}`,
    "both services to follow DNS",
    DNS_CHANGE_MS,
  );
  assert.equal((await who(l.address("echo"))).upstream, "127.0.0.3");
  assert.equal((await who(l.address("cache"))).upstream, "127.0.0.2");
});

Deno.test("the CLI's --resolver names the DNS server that resolves upstream names", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2"] },
  });
  await using servers = startHttpUpstreams(["127.0.0.2"]);
  const listen = freePort();
  const legate = await spawnLegate({
    "users.yaml": `listen: 127.0.0.1:${listen}
upstreams: ['http://users.test:${servers.port}']
`,
  }, ["--resolver", `127.0.0.1:${dns.port}`]);
  try {
    const response = await fetch(`http://127.0.0.1:${listen}/`);
    assert.equal(await response.text(), "127.0.0.2");
    assert.equal(
      legate.logged("upstream lookup failed: keeping its last answer"),
      undefined,
    );
  } finally {
    legate.child.kill("SIGTERM");
    assert.equal(await legate.exit(), 0);
  }
});

// ---------------------------------------------------------------------------
// TCP

Deno.test("TCP health checks (send/expect): an upstream that fails its check gets no new connections within two intervals, and gets them again once it passes", async () => {
  await using upstreams = startTcpUpstreams(["127.0.0.2", "127.0.0.3"]);
  const { port } = upstreams;
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${port}, tcp://127.0.0.3:${port}]
health_check:
  interval: ${CHECK_MS}ms
  timeout: 100ms
  healthy_threshold: 1
  unhealthy_threshold: 1
  send: "PING\\n"
  expect: PONG
`,
  }, null);
  const echo = l.address("echo");
  const spreadTcp = async (count: number) => {
    const seen = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const { upstream } = await who(echo);
      seen.set(upstream, (seen.get(upstream) ?? 0) + 1);
    }
    return seen;
  };
  assert.deepEqual(keysOf(await spreadTcp(6)), ["127.0.0.2", "127.0.0.3"]);

  upstreams.failing.add("127.0.0.3");
  const failing = Date.now();
  await waitFor(
    async () =>
      (await l.endpoints("echo"))!.find((e) =>
        e.address === `127.0.0.3:${port}`
      )!.healthy === false,
    "127.0.0.3 to be unhealthy",
    2 * CHECK_MS,
  );
  assert.ok(Date.now() - failing <= 2 * CHECK_MS);
  const before = upstreams.connections.get("127.0.0.3");
  assert.deepEqual([...await spreadTcp(8)], [["127.0.0.2", 8]]);
  assert.equal(upstreams.connections.get("127.0.0.3"), before);
  const unhealthy = l.logged("upstream unhealthy");
  assert.equal(unhealthy.length, 1);
  assert.equal(unhealthy[0]!.endpoint, `127.0.0.3:${port}`);
  assert.match(String(unhealthy[0]!.reason), /PONG/);

  upstreams.failing.delete("127.0.0.3");
  const passing = Date.now();
  await waitFor(
    async () => (await l.endpoints("echo"))!.every((e) => e.healthy),
    "127.0.0.3 to be healthy",
    2 * CHECK_MS,
  );
  assert.ok(Date.now() - passing <= 2 * CHECK_MS);
  assert.deepEqual(keysOf(await spreadTcp(6)), ["127.0.0.2", "127.0.0.3"]);
  assert.equal(l.logged("upstream healthy").length, 1);
});

Deno.test("TCP outlier ejection: an upstream that refuses connections is ejected after consecutive_failures, and retries send its clients elsewhere without delay", async () => {
  await using upstreams = startTcpUpstreams(["127.0.0.2", "127.0.0.3"]);
  const { port } = upstreams;
  upstreams.stop("127.0.0.3");
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${port}, tcp://127.0.0.3:${port}]
outlier: { consecutive_failures: 2, base_ejection: 30s }
retries: { attempts: 2, on: [connect_failure] }
`,
  }, null);
  const echo = l.address("echo");
  const refused = `127.0.0.3:${port}`;

  let slowest = 0;
  let clients = 0;
  const ejectedNow = async () =>
    (await l.endpoints("echo"))!.some((e) => e.ejected_until !== null);
  // Round robin sends every other connection to it until it is ejected.
  while (clients < 10 && !await ejectedNow()) {
    const { upstream, ms } = await who(echo);
    clients++;
    assert.equal(upstream, "127.0.0.2", `connection ${clients}`);
    slowest = Math.max(slowest, ms);
  }
  assert.ok(clients <= 5, `ejected after ${clients} connections`);
  const state = (await l.endpoints("echo"))!.find((e) =>
    e.address === refused
  )!;
  assert.equal(state.failures, 2);
  assert.equal(state.ejections, 1);
  assert.notEqual(state.ejected_until, null);
  const ejected = l.logged("upstream ejected");
  assert.equal(ejected.length, 1);
  assert.equal(ejected[0]!.endpoint, refused);
  assert.equal(
    await l.metric("legate_upstream_retries_total", {
      service: "echo",
      reason: "connect_failure",
    }),
    2,
  );

  // Ejected: it is not even tried any more.
  for (let i = 0; i < 6; i++) {
    const { upstream, ms } = await who(echo);
    clients++;
    assert.equal(upstream, "127.0.0.2");
    slowest = Math.max(slowest, ms);
  }
  assert.equal(
    (await l.endpoints("echo"))!.find((e) => e.address === refused)!.failures,
    2,
  );
  assert.equal(upstreams.connections.get("127.0.0.2"), clients);
  // A refused connect on loopback costs next to nothing: no client waited.
  assert.ok(slowest < 500, `a connection took ${slowest}ms`);
});

Deno.test("TCP limits: over max_requests a new client connection is closed at once, without bytes; room comes back when a connection ends", async () => {
  await using upstreams = startTcpUpstreams(["127.0.0.2"]);
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${upstreams.port}]
limits: { max_requests: 2 }
`,
  }, null);
  const echo = l.address("echo");
  const one = await held(echo);
  const two = await held(echo);
  assert.equal(one.upstream, "127.0.0.2");
  assert.equal(two.upstream, "127.0.0.2");

  const third = await outcome(await connectTo(echo), 2_000);
  assert.notEqual(third.end, "open", "the third connection was kept waiting");
  assert.equal(third.bytes, 0);
  assert.ok(third.ms < 500, `closing took ${third.ms}ms`);
  assert.equal(upstreams.connections.get("127.0.0.2"), 2);
  assert.equal(
    await l.metric("legate_upstream_overflow_total", {
      service: "echo",
      limit: "max_requests",
    }),
    1,
  );

  one.conn.close();
  await waitFor(
    async () => (await l.endpoints("echo"))![0]!.in_flight === 1,
    "the first connection to end",
  );
  const fourth = await held(echo);
  assert.equal(fourth.upstream, "127.0.0.2");
  fourth.conn.close();
  two.conn.close();
});

Deno.test("TCP limits: with max_connections 1 on each of two endpoints, a third client connection is closed at once, without bytes", async () => {
  await using upstreams = startTcpUpstreams(["127.0.0.2", "127.0.0.3"]);
  const { port } = upstreams;
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${port}, tcp://127.0.0.3:${port}]
limits: { max_connections: 1 }
`,
  }, null);
  const echo = l.address("echo");
  const one = await held(echo);
  const two = await held(echo);
  assert.deepEqual([one.upstream, two.upstream].sort(), [
    "127.0.0.2",
    "127.0.0.3",
  ]);

  const third = await outcome(await connectTo(echo), 2_000);
  assert.notEqual(third.end, "open", "the third connection was kept waiting");
  assert.equal(third.bytes, 0);
  assert.ok(third.ms < 500, `closing took ${third.ms}ms`);
  assert.equal(
    upstreams.connections.get("127.0.0.2")! +
      upstreams.connections.get("127.0.0.3")!,
    2,
  );

  two.conn.close();
  await waitFor(
    async () =>
      (await l.endpoints("echo"))!.reduce((n, e) => n + e.in_flight, 0) === 1,
    "the second connection to end",
  );
  const fourth = await held(echo);
  assert.equal(fourth.upstream, two.upstream);
  fourth.conn.close();
  one.conn.close();
});

Deno.test("TCP connections turned away by max_connections count in legate_upstream_overflow_total", async () => {
  await using upstreams = startTcpUpstreams(["127.0.0.2"]);
  await using l = await startLegate({
    "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${upstreams.port}]
limits: { max_connections: 1 }
`,
  }, null);
  const echo = l.address("echo");
  const one = await held(echo);
  const second = await outcome(await connectTo(echo), 2_000);
  assert.equal(second.bytes, 0);
  assert.notEqual(second.end, "open");
  one.conn.close();
  // The metric's help: "Requests or connections turned away by a limit".
  assert.equal(
    await l.metric("legate_upstream_overflow_total", {
      service: "echo",
      limit: "max_connections",
    }),
    1,
  );
});

for (const balance of ["ring_hash", "maglev"]) {
  Deno.test(`TCP ${balance} hashes the client's source address: one address always reaches one upstream, many addresses spread`, async () => {
    await using upstreams = startTcpUpstreams([
      "127.0.0.2",
      "127.0.0.3",
      "127.0.0.4",
    ]);
    const { port } = upstreams;
    await using l = await startLegate({
      "echo.yaml": `listen: 127.0.0.1:0
upstreams: [tcp://127.0.0.2:${port}, tcp://127.0.0.3:${port}, tcp://127.0.0.4:${port}]
balance: ${balance}
`,
    }, null);
    const echo = l.address("echo");

    const fromOne = new Set<string>();
    for (let i = 0; i < 5; i++) fromOne.add(await whoFrom("127.0.0.5", echo));
    assert.equal(fromOne.size, 1, `127.0.0.5 reached ${[...fromOne]}`);
    assert.match([...fromOne][0]!, /^127\.0\.0\.[234]$/);

    const bySource = new Map<string, string>();
    for (let i = 1; i <= 20; i++) {
      const source = `127.0.1.${i}`;
      const first = await whoFrom(source, echo);
      assert.equal(await whoFrom(source, echo), first, `${source} moved`);
      bySource.set(source, first);
    }
    const reached = new Set(bySource.values());
    assert.ok(reached.size >= 2, `20 sources all reached ${[...reached]}`);
    for (const upstream of reached) {
      assert.match(upstream, /^127\.0\.0\.[234]$/);
    }
  });
}

// ---------------------------------------------------------------------------
// Reloads

Deno.test("a reload that keeps a DNS service keeps its endpoints' state; one that removes it stops its lookups", async () => {
  await using dns = await startDnsmasq({
    hosts: {
      "users.test": ["127.0.0.2", "127.0.0.3"],
      "other.test": ["127.0.0.4"],
    },
    logQueries: true,
  });
  await using servers = startHttpUpstreams([
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
  ]);
  const { port } = servers;
  const usersRoute = (refresh: number, request: string) =>
    `listen: 127.0.0.1:0
upstreams: ['http://users.test:${port}']
dns_refresh: ${refresh}ms
timeouts: { request: ${request} }
`;
  await using l = await startLegate({
    "users.yaml": usersRoute(REFRESH_MS, "10s"),
    "other.yaml": `listen: 127.0.0.9:0
upstreams: ['http://other.test:${port}']
dns_refresh: ${REFRESH_MS}ms
`,
  }, dns);
  await spread(l.address("users"), 6);
  const counters = requestsByAddress(await l.endpoints("users"));
  assert.deepEqual(counters, {
    [`127.0.0.2:${port}`]: 3,
    [`127.0.0.3:${port}`]: 3,
  });
  const usersFile = join(l.dir, "users.yaml");
  const reloadTo = async (text: string | null) => {
    if (text === null) await Deno.remove(usersFile);
    else await Deno.writeTextFile(usersFile, text);
    const result = await l.legate.reload("test");
    assert.equal(result.outcome, "applied", JSON.stringify(result.errors));
  };

  // A change outside discovery: the cluster stays as it is.
  await reloadTo(usersRoute(REFRESH_MS, "20s"));
  assert.deepEqual(requestsByAddress(await l.endpoints("users")), counters);

  // A new dns_refresh restarts discovery: endpoints still keep their state.
  await reloadTo(usersRoute(300, "20s"));
  assert.deepEqual(requestsByAddress(await l.endpoints("users")), counters);
  await spread(l.address("users"), 2);
  assert.deepEqual(requestsByAddress(await l.endpoints("users")), {
    [`127.0.0.2:${port}`]: 4,
    [`127.0.0.3:${port}`]: 4,
  });
  // One discovery asks every 300ms now; the replaced one (200ms) stopped,
  // so users.test is asked less often than other.test.
  const usersAsked = dns.queries("users.test", "A");
  const otherAsked = dns.queries("other.test", "A");
  await waitFor(
    () => dns.queries("other.test", "A") >= otherAsked + 6,
    "six more lookups of other.test",
  );
  assert.ok(
    dns.queries("users.test", "A") - usersAsked <
      dns.queries("other.test", "A") - otherAsked,
    `users.test was asked ${
      dns.queries("users.test", "A") - usersAsked
    } times, other.test ${dns.queries("other.test", "A") - otherAsked}`,
  );

  // Removed: no more lookups of users.test.
  await reloadTo(null);
  assert.equal(await l.endpoints("users"), undefined);
  // Questions sent before the reload are logged by the time two rounds of
  // other.test that began after it are.
  const otherAtReload = dns.queries("other.test", "A");
  await waitFor(
    () => dns.queries("other.test", "A") >= otherAtReload + 2,
    "two lookups of other.test",
  );
  const usersAtRemoval = dns.queries("users.test", "A");
  await waitFor(
    () => dns.queries("other.test", "A") >= otherAtReload + 7,
    "five more lookups of other.test",
  );
  assert.equal(dns.queries("users.test", "A"), usersAtRemoval);
});

Deno.test("a reload during a DNS outage that changes a DNS service's discovery keeps its last endpoints and their state", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2", "127.0.0.3"] },
  });
  await using servers = startHttpUpstreams(["127.0.0.2", "127.0.0.3"]);
  const route = (refresh: number) =>
    `listen: 127.0.0.1:0
upstreams: ['http://users.test:${servers.port}']
dns_refresh: ${refresh}ms
`;
  await using l = await startLegate({ "users.yaml": route(REFRESH_MS) }, dns);
  await spread(l.address("users"), 4);
  const counters = requestsByAddress(await l.endpoints("users"));
  assert.equal(Object.keys(counters).length, 2);

  // DNS is down; a reload changes dns_refresh (a new upstream URL would do
  // the same): discovery starts again, without an answer from DNS.
  await dns.stop();
  await Deno.writeTextFile(join(l.dir, "users.yaml"), route(300));
  const result = await l.legate.reload("test");
  assert.equal(result.outcome, "applied", JSON.stringify(result.errors));
  assert.deepEqual(
    requestsByAddress(await l.endpoints("users")),
    counters,
    "the last answer and its endpoints' state were lost",
  );
  assert.deepEqual(keysOf(await spread(l.address("users"), 4)), [
    "127.0.0.2",
    "127.0.0.3",
  ]);
});

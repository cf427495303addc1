/**
 * Endpoint discovery against a real DNS server: dnsmasq on a loopback port.
 * Every discovery here names that server and its own hosts file and
 * resolv.conf, so no question ever goes to the system's resolver.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DiscoveredEndpoint,
  Discovery,
  type DiscoveryOptions,
  type UpstreamSource,
} from "../src/upstream/discovery.ts";
import { denoDnsClient } from "../src/upstream/dns.ts";
import { type Dnsmasq, startDnsmasq } from "./_dnsmasq.ts";
import { waitFor } from "./_helpers.ts";

const REFRESH_MS = 100;
/** How long past one refresh a change may take to show: a generous margin for slow machines. */
const CHANGE_DEADLINE_MS = REFRESH_MS + 3_000;

function dnsSource(hostname: string, port = 8080, weight = 1): UpstreamSource {
  return {
    kind: "dns",
    url: `http://${hostname}:${port}`,
    hostname,
    port,
    tls: false,
    authority: `${hostname}:${port}`,
    weight,
  };
}

function srvSource(name: string, weight = 1): UpstreamSource {
  return { kind: "srv", url: `http+srv://${name}`, name, tls: false, weight };
}

/** A discovery of `sources` through `dns`, and everything it reported. */
interface Observed extends AsyncDisposable {
  readonly discovery: Discovery;
  readonly changes: (readonly DiscoveredEndpoint[])[];
  readonly errors: { url: string; message: string }[];
  readonly recoveries: string[];
  /** Rounds finished, the first included. */
  rounds: number;
  /** The keys of the current endpoints. */
  keys(): string[];
}

/**
 * Makes a discovery that asks `dns`, reads `hosts` as its hosts file and
 * `resolvConf` as its resolv.conf (both temporary files), and records what
 * it reports.
 */
async function observe(
  sources: readonly UpstreamSource[],
  dns: Dnsmasq,
  files: { hosts?: string; resolvConf?: string } = {},
  options: Partial<DiscoveryOptions> = {},
): Promise<Observed> {
  const dir = await Deno.makeTempDir({ prefix: "legate-discovery-" });
  await Deno.writeTextFile(join(dir, "hosts"), files.hosts ?? "");
  await Deno.writeTextFile(join(dir, "resolv.conf"), files.resolvConf ?? "");
  const observed: Observed = {
    discovery: new Discovery(sources, {
      refreshMs: REFRESH_MS,
      lookupTimeoutMs: 1_000,
      resolver: dns.resolver,
      hostsFile: join(dir, "hosts"),
      resolvConf: join(dir, "resolv.conf"),
      onChange: (endpoints) => observed.changes.push(endpoints),
      onLookupError: (url, message) => observed.errors.push({ url, message }),
      onLookupRecovered: (url) => observed.recoveries.push(url),
      onRefresh: () => observed.rounds++,
      ...options,
    }),
    changes: [],
    errors: [],
    recoveries: [],
    rounds: 0,
    keys: () => observed.discovery.endpoints.map((e) => e.key),
    async [Symbol.asyncDispose]() {
      await observed.discovery.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return observed;
}

/** Waits until `observed` has finished `count` more rounds. */
async function moreRounds(observed: Observed, count: number): Promise<void> {
  const target = observed.rounds + count;
  await waitFor(() => observed.rounds >= target, `${count} more rounds`);
}

Deno.test("every A and AAAA record of a name is an endpoint on the URL's port", async () => {
  await using dns = await startDnsmasq({
    hosts: {
      "users.test": ["127.0.0.2", "127.0.0.3"],
      "billing.test": ["127.0.0.4", "::1"],
    },
  });
  await using observed = await observe(
    [dnsSource("users.test"), dnsSource("billing.test", 9090, 2)],
    dns,
  );
  const endpoints = await observed.discovery.start();
  assert.deepEqual(endpoints.map((e) => [e.key, e.weight, e.priority]), [
    ["tcp billing.test 127.0.0.4:9090", 2, 0],
    ["tcp billing.test [::1]:9090", 2, 0],
    ["tcp users.test 127.0.0.2:8080", 1, 0],
    ["tcp users.test 127.0.0.3:8080", 1, 0],
  ]);
  assert.deepEqual(endpoints[1], {
    key: "tcp billing.test [::1]:9090",
    url: "http://billing.test:9090",
    source: "dns",
    address: { transport: "tcp", hostname: "::1", port: 9090 },
    tls: false,
    serverName: "billing.test",
    authority: "billing.test:9090",
    weight: 2,
    priority: 0,
  });
  assert.deepEqual(observed.errors, []);
  assert.deepEqual(
    observed.changes,
    [],
    "start() answers; onChange is for later changes",
  );
});

Deno.test("a changed DNS answer moves the endpoint set within one refresh, and addresses that stay keep their keys", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2", "127.0.0.3"] },
  });
  await using observed = await observe([dnsSource("users.test")], dns);
  const before = await observed.discovery.start();
  const kept = before.find((e) =>
    e.address.transport === "tcp" &&
    e.address.hostname === "127.0.0.3"
  )!;

  await dns.setHosts({ "users.test": ["127.0.0.3", "127.0.0.5"] });
  const changed = Date.now();
  await waitFor(
    () => observed.changes.length > 0,
    "the new answer",
    CHANGE_DEADLINE_MS,
  );
  assert.ok(Date.now() - changed <= CHANGE_DEADLINE_MS);
  assert.deepEqual(observed.changes[0]!.map((e) => e.key), [
    "tcp users.test 127.0.0.3:8080",
    "tcp users.test 127.0.0.5:8080",
  ]);
  assert.deepEqual(observed.changes[0]![0], kept);

  // An unchanged answer is no change.
  await moreRounds(observed, 3);
  assert.equal(observed.changes.length, 1);
});

Deno.test("a lookup that fails keeps the last answer, is reported once, and its recovery once", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2", "127.0.0.3"] },
  });
  await using observed = await observe(
    [dnsSource("users.test")],
    dns,
    {},
    { lookupTimeoutMs: 300 },
  );
  const endpoints = await observed.discovery.start();
  assert.equal(endpoints.length, 2);

  await dns.stop();
  await waitFor(() => observed.errors.length > 0, "the lookup to fail");
  await moreRounds(observed, 3);
  assert.deepEqual(observed.errors, [{
    url: "http://users.test:8080",
    message: 'Cannot resolve "users.test": asking "users.test." for A and ' +
      "AAAA records failed: Lookup took longer than 300ms",
  }]);
  assert.deepEqual(observed.discovery.endpoints, endpoints);
  assert.deepEqual(observed.changes, []);

  await dns.start();
  await waitFor(() => observed.recoveries.length > 0, "the lookup to recover");
  await moreRounds(observed, 3);
  assert.deepEqual(observed.recoveries, ["http://users.test:8080"]);
  assert.equal(observed.errors.length, 1);
  assert.deepEqual(observed.discovery.endpoints, endpoints);
});

Deno.test("a name that stops existing (NXDOMAIN) keeps its last endpoints and is reported once", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2"], "other.test": ["127.0.0.9"] },
  });
  await using observed = await observe([dnsSource("users.test")], dns);
  const endpoints = await observed.discovery.start();

  await dns.setHosts({ "other.test": ["127.0.0.9"] });
  await waitFor(() => observed.errors.length > 0, "the lookup to fail");
  await moreRounds(observed, 3);
  assert.deepEqual(observed.errors, [{
    url: "http://users.test:8080",
    message:
      'Cannot resolve "users.test": no A or AAAA records for "users.test."',
  }]);
  assert.deepEqual(observed.discovery.endpoints, endpoints);

  await dns.setHosts({ "users.test": ["127.0.0.7"] });
  await waitFor(() => observed.recoveries.length > 0, "the name to return");
  assert.deepEqual(observed.keys(), ["tcp users.test 127.0.0.7:8080"]);
  assert.equal(observed.errors.length, 1);
});

Deno.test("start() is bounded by the lookup timeout when DNS does not answer", async () => {
  await using dns = await startDnsmasq();
  await dns.stop();
  await using observed = await observe(
    [dnsSource("users.test"), {
      kind: "static",
      url: "http://127.0.0.1:8080",
      address: { transport: "tcp", hostname: "127.0.0.1", port: 8080 },
      tls: false,
      authority: "127.0.0.1:8080",
      weight: 1,
    }],
    dns,
    {},
    { lookupTimeoutMs: 300 },
  );
  const started = Date.now();
  const endpoints = await observed.discovery.start();
  assert.ok(Date.now() - started < 2_000, "start() waited too long");
  assert.deepEqual(endpoints.map((e) => e.key), [
    "tcp 127.0.0.1 127.0.0.1:8080",
  ]);
  assert.equal(observed.errors.length, 1);
  assert.match(observed.errors[0]!.message, /took longer than 300ms/);
});

Deno.test("SRV records give each target's addresses on the record's port, with priorities and weights", async () => {
  await using dns = await startDnsmasq({
    hosts: {
      "users-1.test": ["127.0.0.11"],
      "users-2.test": ["127.0.0.12", "127.0.0.13"],
      "users-3.test": ["127.0.0.14"],
    },
    srv: [
      {
        name: "_http._tcp.users.test",
        target: "users-1.test",
        port: 8081,
        priority: 0,
        weight: 5,
      },
      {
        name: "_http._tcp.users.test",
        target: "users-2.test",
        port: 8082,
        priority: 0,
        weight: 0,
      },
      {
        name: "_http._tcp.users.test",
        target: "users-3.test",
        port: 8083,
        priority: 1,
        weight: 7,
      },
    ],
  });
  await using observed = await observe(
    [srvSource("_http._tcp.users.test", 2)],
    dns,
  );
  const endpoints = await observed.discovery.start();
  assert.deepEqual(
    endpoints.map((e) => [e.key, e.authority, e.priority, e.weight]),
    [
      ["tcp users-1.test 127.0.0.11:8081", "users-1.test:8081", 0, 10],
      ["tcp users-2.test 127.0.0.12:8082", "users-2.test:8082", 0, 2],
      ["tcp users-2.test 127.0.0.13:8082", "users-2.test:8082", 0, 2],
      ["tcp users-3.test 127.0.0.14:8083", "users-3.test:8083", 1, 14],
    ],
  );
  assert.deepEqual(
    endpoints.map((e) => [e.serverName, e.source, e.url]),
    endpoints.map((e) => [
      e.authority.replace(/:\d+$/, ""),
      "srv",
      "http+srv://_http._tcp.users.test",
    ]),
  );
  assert.deepEqual(observed.errors, []);
});

Deno.test("SRV records added and removed move the endpoint set; a record that stays keeps its key", async () => {
  const users1 = {
    name: "_http._tcp.users.test",
    target: "users-1.test",
    port: 8081,
  };
  const users2 = {
    name: "_http._tcp.users.test",
    target: "users-2.test",
    port: 8082,
  };
  await using dns = await startDnsmasq({
    hosts: { "users-1.test": ["127.0.0.11"], "users-2.test": ["127.0.0.12"] },
    srv: [users1],
  });
  await using observed = await observe(
    [srvSource("_http._tcp.users.test")],
    dns,
  );
  assert.deepEqual((await observed.discovery.start()).map((e) => e.key), [
    "tcp users-1.test 127.0.0.11:8081",
  ]);
  const first = observed.discovery.endpoints[0];

  await dns.restart([users1, users2]);
  await waitFor(
    () => observed.keys().length === 2,
    "the added record",
    CHANGE_DEADLINE_MS,
  );
  assert.deepEqual(observed.keys(), [
    "tcp users-1.test 127.0.0.11:8081",
    "tcp users-2.test 127.0.0.12:8082",
  ]);
  assert.deepEqual(observed.discovery.endpoints[0], first);

  await dns.restart([users2]);
  await waitFor(
    () => observed.keys().length === 1,
    "the removed record",
    CHANGE_DEADLINE_MS,
  );
  assert.deepEqual(observed.keys(), ["tcp users-2.test 127.0.0.12:8082"]);
  // A restart may fail a round; what changed is what onChange said.
  assert.deepEqual(observed.changes.at(-1), observed.discovery.endpoints);
});

Deno.test("the hosts file wins over DNS, for names and for SRV targets", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2"], "users-1.test": ["127.0.0.11"] },
    srv: [{
      name: "_http._tcp.users.test",
      target: "users-1.test",
      port: 8081,
    }],
  });
  await using observed = await observe(
    [dnsSource("users.test"), srvSource("_http._tcp.users.test")],
    dns,
    { hosts: "127.0.0.20 users.test\n127.0.0.21 users-1.test\n" },
  );
  assert.deepEqual((await observed.discovery.start()).map((e) => e.key), [
    "tcp users-1.test 127.0.0.21:8081",
    "tcp users.test 127.0.0.20:8080",
  ]);
});

Deno.test("short names are tried with resolv.conf's search domains", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.svc.test": ["127.0.0.2"], "billing.test": ["127.0.0.3"] },
  });
  await using observed = await observe(
    [dnsSource("users"), dnsSource("billing.test")],
    dns,
    { resolvConf: "search svc.test\noptions ndots:1\n" },
  );
  const endpoints = await observed.discovery.start();
  assert.deepEqual(endpoints.map((e) => [e.key, e.authority]), [
    // billing.test has a dot: asked as is first, and found.
    ["tcp billing.test 127.0.0.3:8080", "billing.test:8080"],
    // The Host header and TLS name stay as the URL wrote them.
    ["tcp users 127.0.0.2:8080", "users:8080"],
  ]);
  assert.deepEqual(observed.errors, []);
});

Deno.test("localhost comes from the hosts file, never from DNS", async () => {
  await using dns = await startDnsmasq();
  // Stopped: a question to it would time out and be reported.
  await dns.stop();
  await using observed = await observe(
    [dnsSource("localhost")],
    dns,
    { hosts: "127.0.0.1 localhost\n" },
    { lookupTimeoutMs: 300 },
  );
  assert.deepEqual((await observed.discovery.start()).map((e) => e.key), [
    "tcp localhost 127.0.0.1:8080",
  ]);
  assert.deepEqual(observed.errors, []);
});

Deno.test("stop() during a lookup ends it at once, and nothing is reported after", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2"] },
  });
  const real = denoDnsClient(dns.resolver);
  let asked = 0;
  await using observed = await observe(
    [dnsSource("users.test")],
    dns,
    {},
    {
      lookupTimeoutMs: 60_000,
      dnsClient: {
        addresses(fqdn, type, signal) {
          asked++;
          return real.addresses(fqdn, type, signal);
        },
        srv: (fqdn, signal) => real.srv(fqdn, signal),
      },
    },
  );
  await observed.discovery.start();
  // Questions now wait for an answer that never comes.
  await dns.stop();
  // The first round asked A and AAAA; a third question is the next round's.
  // (waitFor's timer also keeps the test alive: discovery's are unref'd.)
  await waitFor(() => asked >= 3, "the next round's lookup");
  const stopping = Date.now();
  await observed.discovery.stop();
  assert.ok(Date.now() - stopping < 5_000, "stop() waited for the lookup");
  assert.equal(observed.rounds, 1);
  assert.deepEqual(observed.errors, []);
  assert.equal(observed.discovery.endpoints.length, 1);
});

Deno.test("update() resolves new sources at once and keeps the last answer of names it keeps", async () => {
  await using dns = await startDnsmasq({
    hosts: { "users.test": ["127.0.0.2"], "billing.test": ["127.0.0.3"] },
  });
  await using observed = await observe(
    [dnsSource("users.test")],
    dns,
    {},
    { lookupTimeoutMs: 300, refreshMs: 60_000 },
  );
  await observed.discovery.start();
  const updated = await observed.discovery.update([
    dnsSource("users.test", 8080, 3),
    dnsSource("billing.test"),
  ]);
  assert.deepEqual(updated.map((e) => [e.key, e.weight]), [
    ["tcp billing.test 127.0.0.3:8080", 1],
    ["tcp users.test 127.0.0.2:8080", 3],
  ]);
  assert.deepEqual(observed.changes, [updated]);

  // DNS down during a reload: the kept name keeps its endpoint.
  await dns.stop();
  const reloaded = await observed.discovery.update([dnsSource("users.test")]);
  assert.deepEqual(reloaded.map((e) => e.key), [
    "tcp users.test 127.0.0.2:8080",
  ]);
  assert.equal(observed.errors.length, 1);
});

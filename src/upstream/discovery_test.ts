import assert from "node:assert/strict";
import type { DnsClient } from "./dns.ts";
import {
  type DiscoveredEndpoint,
  Discovery,
  type DiscoveryOptions,
  type UpstreamSource,
} from "./discovery.ts";

/**
 * A DNS client answering from a table that tests change as they go:
 * "A name." → addresses, "SRV name." → records; an Error is thrown, and
 * "hang" never answers until the lookup is aborted.
 */
function tableDns(
  table: Map<string, string[] | Deno.SrvRecord[] | Error | "hang">,
): DnsClient & { asked: string[] } {
  const asked: string[] = [];
  const answer = (question: string, signal: AbortSignal) => {
    asked.push(question);
    const found = table.get(question);
    if (found === "hang") {
      return new Promise<never>((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    if (found instanceof Error) return Promise.reject(found);
    return found
      ? Promise.resolve(found)
      : Promise.reject(new Deno.errors.NotFound(question));
  };
  return {
    asked,
    addresses: (fqdn, type, signal) =>
      answer(`${type} ${fqdn}`, signal) as Promise<string[]>,
    srv: (fqdn, signal) =>
      answer(`SRV ${fqdn}`, signal) as Promise<Deno.SrvRecord[]>,
  };
}

const dnsSource = (
  hostname: string,
  weight = 1,
  url = `http://${hostname}:8080`,
): UpstreamSource => ({
  kind: "dns",
  url,
  hostname,
  port: 8080,
  tls: false,
  authority: `${hostname}:8080`,
  weight,
});

interface Recorded {
  readonly discovery: Discovery;
  readonly changes: (readonly DiscoveredEndpoint[])[];
  readonly errors: string[];
  readonly recoveries: string[];
  rounds: number;
  keys(): string[];
  /** Called after every round. */
  readonly afterRound: Set<() => void>;
}

function recorded(
  sources: readonly UpstreamSource[],
  dnsClient: DnsClient,
  options: Partial<DiscoveryOptions> = {},
): Recorded {
  const record: Recorded = {
    discovery: new Discovery(sources, {
      refreshMs: 50,
      lookupTimeoutMs: 200,
      dnsClient,
      hostsFile: "/nonexistent/hosts",
      resolvConf: "/nonexistent/resolv.conf",
      onChange: (endpoints) => record.changes.push(endpoints),
      onLookupError: (url, message) => record.errors.push(`${url}: ${message}`),
      onLookupRecovered: (url) => record.recoveries.push(url),
      onRefresh: () => {
        record.rounds++;
        for (const check of record.afterRound) check();
      },
      ...options,
    }),
    changes: [],
    errors: [],
    recoveries: [],
    rounds: 0,
    keys: () => record.discovery.endpoints.map((e) => e.key),
    afterRound: new Set(),
  };
  return record;
}

/**
 * Resolves after the first round at whose end `condition` holds; rejects
 * after `ms`. Its deadline timer also keeps the test alive while it waits:
 * discovery's refresh timer is unref'd.
 */
function untilRound(
  record: Recorded,
  condition: () => boolean,
  what: string,
  ms = 5_000,
): Promise<void> {
  if (condition()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!condition()) return;
      clearTimeout(deadline);
      record.afterRound.delete(check);
      resolve();
    };
    const deadline = setTimeout(() => {
      record.afterRound.delete(check);
      reject(new Error(`Timed out waiting for ${what}`));
    }, ms);
    record.afterRound.add(check);
  });
}

function moreRounds(record: Recorded, count: number): Promise<void> {
  const target = record.rounds + count;
  return untilRound(record, () => record.rounds >= target, `${count} rounds`);
}

Deno.test("keys name TLS, the server name and the address; IPv6 in brackets, Unix sockets by path", async () => {
  const record = recorded([
    {
      kind: "static",
      url: "https://[::1]:8443",
      address: { transport: "tcp", hostname: "[::1]", port: 8443 },
      tls: true,
      authority: "[::1]:8443",
      weight: 1,
    },
    {
      kind: "static",
      url: "unix:/run/users.sock",
      address: { transport: "unix", path: "/run/users.sock" },
      tls: false,
      authority: "localhost",
      weight: 1,
    },
    {
      kind: "dns",
      url: "https://Users.Test.:8443",
      hostname: "Users.Test.",
      port: 8443,
      tls: true,
      authority: "Users.Test.:8443",
      weight: 1,
    },
  ], tableDns(new Map([["A users.test.", ["10.0.0.1"]]])));
  const endpoints = await record.discovery.start();
  await record.discovery.stop();
  assert.deepEqual(endpoints.map((e) => [e.key, e.serverName]), [
    ["tcp localhost unix:/run/users.sock", "localhost"],
    ["tls ::1 [::1]:8443", "::1"],
    ["tls users.test 10.0.0.1:8443", "users.test"],
  ]);
  assert.deepEqual(endpoints[1]!.address, {
    transport: "tcp",
    hostname: "::1",
    port: 8443,
  });
  assert.equal(endpoints[2]!.authority, "Users.Test.:8443");
});

Deno.test("a name shared by two sources is asked once a round, and one key is one endpoint", async () => {
  const dns = tableDns(new Map([["A users.test.", ["10.0.0.1"]]]));
  const record = recorded([
    dnsSource("users.test", 2),
    dnsSource("users.test", 3),
  ], dns);
  const endpoints = await record.discovery.start();
  await record.discovery.stop();
  assert.deepEqual(dns.asked, ["A users.test.", "AAAA users.test."]);
  assert.deepEqual(endpoints.map((e) => [e.key, e.weight]), [
    ["tcp users.test 10.0.0.1:8080", 5],
  ]);
});

Deno.test("SRV: a target in two records at two priorities is one endpoint at the better one", async () => {
  const dns = tableDns(
    new Map<string, string[] | Deno.SrvRecord[]>([
      ["SRV _http._tcp.users.test.", [
        { priority: 5, weight: 9, port: 80, target: "users-1.test." },
        { priority: 1, weight: 2, port: 80, target: "users-1.test." },
      ]],
      ["A users-1.test.", ["10.0.0.1"]],
    ]),
  );
  const record = recorded([{
    kind: "srv",
    url: "http+srv://_http._tcp.users.test",
    name: "_http._tcp.users.test",
    tls: false,
    weight: 1,
  }], dns);
  const endpoints = await record.discovery.start();
  await record.discovery.stop();
  assert.deepEqual(endpoints.map((e) => [e.key, e.priority, e.weight]), [
    ["tcp users-1.test 10.0.0.1:80", 1, 2],
  ]);
});

Deno.test("an address family that fails keeps its previous addresses, reported once", async () => {
  const table = new Map<string, string[] | Error>([
    ["A users.test.", ["10.0.0.1"]],
    ["AAAA users.test.", ["fd00::1"]],
  ]);
  const record = recorded([dnsSource("users.test")], tableDns(table));
  const endpoints = await record.discovery.start();
  assert.equal(endpoints.length, 2);

  table.set("AAAA users.test.", new Deno.errors.TimedOut("timed out"));
  table.set("A users.test.", ["10.0.0.1", "10.0.0.2"]);
  await untilRound(record, () => record.changes.length > 0, "the new A answer");
  await moreRounds(record, 3);
  assert.deepEqual(record.keys(), [
    "tcp users.test 10.0.0.1:8080",
    "tcp users.test 10.0.0.2:8080",
    "tcp users.test [fd00::1]:8080",
  ]);
  assert.deepEqual(record.errors, [
    'http://users.test:8080: Cannot resolve "users.test" fully: asking "users.test." for AAAA records failed: timed out',
  ]);

  table.set("AAAA users.test.", new Deno.errors.NotFound());
  await untilRound(record, () => record.recoveries.length > 0, "the recovery");
  await record.discovery.stop();
  assert.deepEqual(record.keys(), [
    "tcp users.test 10.0.0.1:8080",
    "tcp users.test 10.0.0.2:8080",
  ]);
});

Deno.test("an SRV target that cannot be resolved keeps its previous addresses; new records still arrive", async () => {
  const table = new Map<string, string[] | Deno.SrvRecord[] | Error>([
    ["SRV _http._tcp.users.test.", [
      { priority: 0, weight: 1, port: 80, target: "users-1.test." },
    ]],
    ["A users-1.test.", ["10.0.0.1"]],
    ["A users-2.test.", ["10.0.0.2"]],
  ]);
  const record = recorded([{
    kind: "srv",
    url: "http+srv://_http._tcp.users.test",
    name: "_http._tcp.users.test",
    tls: false,
    weight: 1,
  }], tableDns(table));
  await record.discovery.start();

  table.set("A users-1.test.", new Deno.errors.TimedOut("timed out"));
  table.set("SRV _http._tcp.users.test.", [
    { priority: 0, weight: 1, port: 80, target: "users-1.test." },
    { priority: 0, weight: 1, port: 80, target: "users-2.test." },
  ]);
  await untilRound(record, () => record.changes.length > 0, "the new record");
  await record.discovery.stop();
  assert.deepEqual(record.keys(), [
    "tcp users-1.test 10.0.0.1:80",
    "tcp users-2.test 10.0.0.2:80",
  ]);
  assert.equal(record.errors.length, 1);
  assert.match(record.errors[0]!, /SRV targets of "_http\._tcp\.users\.test"/);
});

Deno.test("a lookup that never answers is ended by the lookup timeout, and the rounds go on", async () => {
  const table = new Map<string, string[] | "hang">([
    ["A users.test.", "hang"],
    ["AAAA users.test.", "hang"],
  ]);
  const record = recorded([dnsSource("users.test")], tableDns(table), {
    lookupTimeoutMs: 100,
  });
  const started = Date.now();
  assert.deepEqual(await record.discovery.start(), []);
  assert.ok(Date.now() - started < 1_000);
  assert.deepEqual(record.errors, [
    'http://users.test:8080: Cannot resolve "users.test": asking "users.test." for A and AAAA records failed: Lookup took longer than 100ms',
  ]);
  table.set("A users.test.", ["10.0.0.1"]);
  table.delete("AAAA users.test.");
  await untilRound(record, () => record.changes.length > 0, "an answer");
  await record.discovery.stop();
  assert.deepEqual(record.recoveries, ["http://users.test:8080"]);
});

Deno.test("onChange is called for a weight change, never for the same set", async () => {
  const dns = tableDns(new Map([["A users.test.", ["10.0.0.1"]]]));
  const record = recorded([dnsSource("users.test")], dns);
  await record.discovery.start();
  await moreRounds(record, 3);
  assert.deepEqual(record.changes, []);
  const updated = await record.discovery.update([dnsSource("users.test", 4)]);
  await record.discovery.stop();
  assert.deepEqual(updated.map((e) => e.weight), [4]);
  assert.deepEqual(record.changes, [updated]);
});

Deno.test("after stop() no round runs and nothing is reported", async () => {
  const dns = tableDns(new Map([["A users.test.", ["10.0.0.1"]]]));
  const record = recorded([dnsSource("users.test")], dns);
  await record.discovery.start();
  await record.discovery.stop();
  const asked = dns.asked.length;
  // The sanitizers fail this test if a timer or lookup is left behind.
  assert.deepEqual(await record.discovery.update([dnsSource("other.test")]), [
    record.discovery.endpoints[0],
  ]);
  assert.equal(dns.asked.length, asked);
  assert.equal(record.rounds, 1);
});

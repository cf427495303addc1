import assert from "node:assert/strict";
import {
  type DnsClient,
  DnsLookupError,
  ipAddress,
  type LookupContext,
  parseHosts,
  parseResolvConf,
  resolveHost,
  resolveSrv,
  searchNames,
} from "./dns.ts";

/**
 * A DNS client answering from `records` ("A name.", "AAAA name.", "SRV
 * name."); a value that is an Error is thrown instead. Everything it was
 * asked is in `asked`.
 */
function fakeDns(
  records: Record<string, string[] | Deno.SrvRecord[] | Error>,
): DnsClient & { asked: string[] } {
  const asked: string[] = [];
  const answer = (question: string) => {
    asked.push(question);
    const found = records[question];
    if (found instanceof Error) return Promise.reject(found);
    return found
      ? Promise.resolve(found)
      : Promise.reject(new Deno.errors.NotFound(`no records: ${question}`));
  };
  return {
    asked,
    addresses: (fqdn, type) => answer(`${type} ${fqdn}`) as Promise<string[]>,
    srv: (fqdn) => answer(`SRV ${fqdn}`) as Promise<Deno.SrvRecord[]>,
  };
}

function context(
  client: DnsClient,
  options: { hosts?: string; resolvConf?: string } = {},
): LookupContext {
  return {
    hosts: parseHosts(options.hosts ?? ""),
    conf: parseResolvConf(options.resolvConf ?? ""),
    client,
  };
}

const signal = new AbortController().signal;

Deno.test("resolv.conf: the last search or domain line wins, ndots is capped at 15", () => {
  assert.deepEqual(
    parseResolvConf(
      "# generated\nsearch a.test b.test\ndomain c.test\noptions rotate ndots:3 timeout:1\n",
    ),
    { search: ["c.test"], ndots: 3 },
  );
  assert.deepEqual(
    parseResolvConf("domain c.test\nsearch A.Test. b.test ; comment\n"),
    { search: ["a.test", "b.test"], ndots: 1 },
  );
  assert.deepEqual(parseResolvConf("options ndots:40\n"), {
    search: [],
    ndots: 15,
  });
});

Deno.test("hosts file: comments, case, aliases and IPv6 forms", () => {
  const hosts = parseHosts(
    "# comment\n" +
      "10.0.0.1\tUsers.Internal users # primary\n" +
      "10.0.0.1 users\n" +
      "0:0:0:0:0:0:0:1 users\n" +
      "fe80::1%eth0 link-local\n" +
      "   \n",
  );
  assert.deepEqual(hosts.get("users.internal"), ["10.0.0.1"]);
  assert.deepEqual(hosts.get("users"), ["10.0.0.1", "::1"]);
  assert.equal(hosts.get("link-local"), undefined);
});

Deno.test("IP addresses are recognised and written the usual way", () => {
  assert.equal(ipAddress("127.0.0.1"), "127.0.0.1");
  assert.equal(ipAddress("::ffff:127.0.0.1"), "::ffff:7f00:1");
  assert.equal(ipAddress("1.2.3"), null);
  assert.equal(ipAddress("::g"), null);
  assert.equal(ipAddress("deadbeef"), null);
  assert.equal(ipAddress(""), null);
});

Deno.test("search order: fewer dots than ndots tries the search domains first", () => {
  const conf = { search: ["a.test", "b.test"], ndots: 2 };
  assert.deepEqual(searchNames("users", conf), [
    "users.a.test.",
    "users.b.test.",
    "users.",
  ]);
  assert.deepEqual(searchNames("users.ns", conf), [
    "users.ns.a.test.",
    "users.ns.b.test.",
    "users.ns.",
  ]);
  // As many dots as ndots: as it is first.
  assert.deepEqual(searchNames("users.ns.svc", conf), [
    "users.ns.svc.",
    "users.ns.svc.a.test.",
    "users.ns.svc.b.test.",
  ]);
  assert.deepEqual(searchNames("users", { search: [], ndots: 1 }), [
    "users.",
  ]);
});

Deno.test("a name tries each search name until one has records; one family may be missing", async () => {
  const dns = fakeDns({ "AAAA users.b.test.": ["fd00:0::1"] });
  const found = await resolveHost(
    "Users",
    context(dns, { resolvConf: "search a.test b.test\n" }),
    signal,
  );
  assert.deepEqual(found, {
    name: "users.b.test",
    from: "dns",
    addresses: ["fd00::1"],
    failed: [],
    problem: null,
  });
  assert.deepEqual(dns.asked, [
    "A users.a.test.",
    "AAAA users.a.test.",
    "A users.b.test.",
    "AAAA users.b.test.",
  ]);
});

Deno.test("a name with a final dot is asked as it is, and only so", async () => {
  const dns = fakeDns({});
  await assert.rejects(
    () =>
      resolveHost(
        "users.test.",
        context(dns, { resolvConf: "search a.test\noptions ndots:5\n" }),
        signal,
      ),
    (error) =>
      error instanceof DnsLookupError && error.notFound &&
      error.message ===
        'Cannot resolve "users.test.": no A or AAAA records for "users.test."',
  );
  assert.deepEqual(dns.asked, ["A users.test.", "AAAA users.test."]);
});

Deno.test("a failure other than 'no such records' ends the search: a later search name never answers for an outage", async () => {
  const dns = fakeDns({
    "A users.a.test.": new Deno.errors.TimedOut(
      "proto error: request timed out",
    ),
    "AAAA users.a.test.": new Deno.errors.TimedOut(
      "proto error: request timed out",
    ),
    "A users.b.test.": ["10.0.0.2"],
  });
  await assert.rejects(
    () =>
      resolveHost(
        "users",
        context(dns, { resolvConf: "search a.test b.test\n" }),
        signal,
      ),
    (error) =>
      error instanceof DnsLookupError && !error.notFound &&
      error.message ===
        'Cannot resolve "users": asking "users.a.test." for A and AAAA records failed: request timed out',
  );
  assert.ok(!dns.asked.includes("A users.b.test."));
});

Deno.test("one family failing while the other answers is an answer, with the failure named", async () => {
  const dns = fakeDns({
    "A users.test.": ["10.0.0.1"],
    "AAAA users.test.": new Deno.errors.ConnectionRefused("refused"),
  });
  const found = await resolveHost("users.test", context(dns), signal);
  assert.deepEqual(found.addresses, ["10.0.0.1"]);
  assert.deepEqual(found.failed, ["AAAA"]);
  assert.equal(
    found.problem,
    'asking "users.test." for AAAA records failed: refused',
  );
});

Deno.test("the hosts file answers before DNS, for the name as written", async () => {
  const dns = fakeDns({ "A users.test.": ["10.0.0.1"] });
  const files = { hosts: "10.9.9.9 users.test\n", resolvConf: "search test\n" };
  const found = await resolveHost("USERS.test.", context(dns, files), signal);
  assert.deepEqual([found.from, found.addresses], ["hosts", ["10.9.9.9"]]);
  // The search list does not apply to the hosts file, as with glibc.
  const short = await resolveHost(
    "users",
    context(fakeDns({ "A users.test.": ["10.0.0.1"] }), files),
    signal,
  );
  assert.deepEqual([short.from, short.addresses], ["dns", ["10.0.0.1"]]);
  assert.deepEqual(dns.asked, []);
});

Deno.test("localhost is loopback without asking DNS; the hosts file still wins", async () => {
  const dns = fakeDns({});
  const bare = await resolveHost("localhost", context(dns), signal);
  assert.deepEqual(bare.addresses, ["127.0.0.1", "::1"]);
  const under = await resolveHost("api.localhost.", context(dns), signal);
  assert.deepEqual(under.addresses, ["127.0.0.1", "::1"]);
  const listed = await resolveHost(
    "localhost",
    context(dns, { hosts: "127.0.0.1 localhost\n" }),
    signal,
  );
  assert.deepEqual(listed.addresses, ["127.0.0.1"]);
  assert.deepEqual(dns.asked, []);
});

Deno.test("an IP address resolves to itself", async () => {
  const dns = fakeDns({});
  const found = await resolveHost("[::1]", context(dns), signal);
  assert.deepEqual([found.from, found.addresses], ["address", ["::1"]]);
  assert.deepEqual(dns.asked, []);
});

Deno.test("an aborted lookup fails with the abort's reason", async () => {
  const controller = new AbortController();
  const client: DnsClient = {
    addresses: (_fqdn, _type, signal) =>
      new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      ),
    srv: () => Promise.reject(new Deno.errors.NotFound()),
  };
  const lookup = resolveHost("users.test", context(client), controller.signal);
  controller.abort(
    new DOMException("Lookup took longer than 5ms", "TimeoutError"),
  );
  await assert.rejects(
    () => lookup,
    (error) =>
      error instanceof DnsLookupError &&
      error.message ===
        'Cannot resolve "users.test": asking "users.test." for A and AAAA records failed: Lookup took longer than 5ms',
  );
});

Deno.test("SRV: the search list applies, '.' targets are left out, a failure ends the search", async () => {
  const dns = fakeDns({
    "SRV _http._tcp.users.svc.test.": [
      { priority: 0, weight: 1, port: 80, target: "." },
      { priority: 0, weight: 1, port: 80, target: "Users-1.Test." },
    ],
  });
  const found = await resolveSrv(
    "_http._tcp.users",
    context(dns, { resolvConf: "search svc.test\noptions ndots:5\n" }),
    signal,
  );
  assert.deepEqual(found, {
    name: "_http._tcp.users.svc.test",
    records: [{ priority: 0, weight: 1, port: 80, target: "users-1.test" }],
  });

  const failing = fakeDns({
    "SRV _http._tcp.users.a.test.": new Deno.errors.TimedOut("timed out"),
    "SRV _http._tcp.users.b.test.": [
      { priority: 0, weight: 1, port: 80, target: "users-1.test." },
    ],
  });
  await assert.rejects(
    () =>
      resolveSrv(
        "_http._tcp.users",
        context(failing, {
          resolvConf: "search a.test b.test\noptions ndots:5\n",
        }),
        signal,
      ),
    (error) =>
      error instanceof DnsLookupError && !error.notFound &&
      error.message ===
        'Cannot resolve "_http._tcp.users": asking "_http._tcp.users.a.test." for SRV records failed: timed out',
  );
  await assert.rejects(
    () => resolveSrv("_http._tcp.none.test", context(fakeDns({})), signal),
    (error) => error instanceof DnsLookupError && error.notFound,
  );
});

import assert from "node:assert/strict";
import type { ReferenceSource } from "../src/config/interpolate.ts";
import {
  DEFAULT_RESILIENCE,
  type ServiceConfig,
  type UpstreamConfig,
} from "../src/config/service.ts";
import { validateRouteFile } from "../src/config/validate.ts";

const references: ReferenceSource = {
  env: (name) =>
    ({ USERS_SRV: "_http._tcp.users.default.svc.cluster.local" } as Record<
      string,
      string
    >)[name],
  readFile: (path) => {
    throw new Deno.errors.NotFound(path);
  },
};

/** The service of one route file named `file`, which must be valid. */
function serviceOf(text: string, file = "routes/users.yaml"): ServiceConfig {
  const result = validateRouteFile({ file, text }, references);
  assert.deepEqual(result.errors?.map((e) => e.message), undefined);
  return result.service!;
}

/** The messages of one route file's errors, in the order of the file. */
function errorsOf(text: string, file = "s.yaml"): string[] {
  const { errors = [] } = validateRouteFile({ file, text }, references);
  return errors
    .toSorted((a, b) =>
      a.position.line - b.position.line || a.position.column - b.position.column
    )
    .map((e) => e.message);
}

type Resilience = Pick<
  ServiceConfig,
  | "balance"
  | "hashOn"
  | "healthCheck"
  | "outlier"
  | "retries"
  | "limits"
  | "dnsRefresh"
>;

function resilienceOf(service: ServiceConfig): Resilience {
  const { balance, hashOn, healthCheck, outlier, retries, limits, dnsRefresh } =
    service;
  return {
    balance,
    hashOn,
    healthCheck,
    outlier,
    retries,
    limits,
    dnsRefresh,
  };
}

Deno.test("reads every resilience key of an HTTP service exactly", () => {
  const service = serviceOf(`
listen: 127.0.0.1:15001
upstreams: [http://users-1.internal:8080]
balance: ring_hash
hash_on: header:X-User
health_check:
  path: /healthz?full=1
  interval: 2s
  timeout: 250ms
  healthy_threshold: 1
  unhealthy_threshold: 100
  expect_status: [200, 204, 300-399]
outlier:
  consecutive_failures: 0
  base_ejection: 1m
  max_ejection_percent: 100
retries:
  attempts: 3
  on: [connect_failure, reset, timeout, 502, 503, 504, 502]
  per_try_timeout: 1500ms
  budget: 12.5%
  retry_non_idempotent: true
limits:
  max_connections: 1
  max_pending: 1000000
  max_requests: 64
dns_refresh: 100ms
`);
  assert.deepEqual(resilienceOf(service), {
    balance: "ring_hash",
    hashOn: { kind: "header", name: "x-user" },
    healthCheck: {
      path: "/healthz?full=1",
      send: null,
      expect: null,
      interval: 2_000,
      timeout: 250,
      healthyThreshold: 1,
      unhealthyThreshold: 100,
      expectStatus: [[200, 200], [204, 204], [300, 399]],
    },
    outlier: {
      consecutiveFailures: 0,
      baseEjection: 60_000,
      maxEjectionPercent: 100,
    },
    retries: {
      attempts: 3,
      // A repeated value counts once.
      on: ["connect_failure", "reset", "timeout", 502, 503, 504],
      perTryTimeout: 1_500,
      budgetPercent: 12.5,
      retryNonIdempotent: true,
    },
    limits: { maxConnections: 1, maxPending: 1_000_000, maxRequests: 64 },
    dnsRefresh: 100,
  });
});

Deno.test("reads every resilience key of a TCP service exactly", () => {
  const service = serviceOf(`
listen: 127.0.0.1:16379
upstreams: [tcp://redis-1.internal:6379, tcp://redis-2.internal:6379]
balance: maglev
hash_on: source_ip
health_check:
  send: "PING\\r\\n"
  expect: "+PONG"
  interval: 10s
  timeout: 2s
outlier: { consecutive_failures: 3, base_ejection: 10s, max_ejection_percent: 0 }
retries: { attempts: 5, on: [connect_failure] }
limits: { max_connections: 100, max_pending: 10, max_requests: 200 }
dns_refresh: 1m
`);
  assert.deepEqual(resilienceOf(service), {
    balance: "maglev",
    hashOn: { kind: "source_ip" },
    healthCheck: {
      path: null,
      send: "PING\r\n",
      expect: "+PONG",
      interval: 10_000,
      timeout: 2_000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
      expectStatus: [],
    },
    outlier: {
      consecutiveFailures: 3,
      baseEjection: 10_000,
      maxEjectionPercent: 0,
    },
    retries: {
      attempts: 5,
      on: ["connect_failure"],
      perTryTimeout: null,
      budgetPercent: 20,
      retryNonIdempotent: false,
    },
    limits: { maxConnections: 100, maxPending: 10, maxRequests: 200 },
    dnsRefresh: 60_000,
  });
});

Deno.test("fills every default: the service config is complete", () => {
  const http = serviceOf("listen: :1\nupstreams: [http://a]\n");
  assert.deepEqual(resilienceOf(http), {
    balance: "round_robin",
    hashOn: null,
    healthCheck: null,
    outlier: {
      consecutiveFailures: 5,
      baseEjection: 30_000,
      maxEjectionPercent: 50,
    },
    retries: {
      attempts: 2,
      on: ["connect_failure", "reset"],
      perTryTimeout: null,
      budgetPercent: 20,
      retryNonIdempotent: false,
    },
    limits: { maxConnections: 1024, maxPending: 1024, maxRequests: 1024 },
    dnsRefresh: 5_000,
  });

  // A TCP connection is retried only when it failed to open.
  const tcp = serviceOf("listen: :2\nupstreams: [tcp://a:1]\n");
  assert.deepEqual(resilienceOf(tcp), {
    ...resilienceOf(http),
    retries: { ...http.retries, on: ["connect_failure"] },
  });

  // A section given in part takes the defaults for the rest.
  const partial = serviceOf(`
listen: :3
upstreams: [http://a]
balance: ring_hash
health_check: {}
outlier: { consecutive_failures: 7 }
retries: { attempts: 4 }
limits: { max_requests: 10 }
`);
  assert.deepEqual(resilienceOf(partial), {
    ...resilienceOf(http),
    balance: "ring_hash",
    hashOn: { kind: "source_ip" },
    healthCheck: {
      path: "/",
      send: null,
      expect: null,
      interval: 5_000,
      timeout: 1_000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
      expectStatus: [[200, 399]],
    },
    outlier: { ...http.outlier, consecutiveFailures: 7 },
    retries: { ...http.retries, attempts: 4 },
    limits: { ...http.limits, maxRequests: 10 },
  });
  assert.deepEqual(
    serviceOf("listen: :4\nupstreams: [tcp://a:1]\nhealth_check: {}\n")
      .healthCheck,
    {
      path: null,
      send: null,
      expect: null,
      interval: 5_000,
      timeout: 1_000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
      expectStatus: [],
    },
  );
  assert.equal(
    http.outlier.baseEjection,
    DEFAULT_RESILIENCE.outlier.baseEjection,
  );
});

Deno.test("hash_on reads source_ip, path, header:NAME (lowercased) and cookie:NAME (as written)", () => {
  const hashOn = (value: string) =>
    serviceOf(
      `listen: :1\nupstreams: [http://a]\nbalance: maglev\nhash_on: ${value}\n`,
    )
      .hashOn;
  assert.deepEqual(hashOn("source_ip"), { kind: "source_ip" });
  assert.deepEqual(hashOn("path"), { kind: "path" });
  assert.deepEqual(hashOn("header:X-Tenant-ID"), {
    kind: "header",
    name: "x-tenant-id",
  });
  assert.deepEqual(hashOn("cookie:SessionID"), {
    kind: "cookie",
    name: "SessionID",
  });
});

Deno.test("expect_status reads a status, a range or a list; budget a percentage or a number", () => {
  const check = (value: string) =>
    serviceOf(
      `listen: :1\nupstreams: [http://a]\nhealth_check: { expect_status: ${value} }\n`,
    ).healthCheck?.expectStatus;
  assert.deepEqual(check("204"), [[204, 204]]);
  assert.deepEqual(check("200-299"), [[200, 299]]);
  assert.deepEqual(check("'418'"), [[418, 418]]);
  assert.deepEqual(check("[100, 599, 300-303]"), [[100, 100], [599, 599], [
    300,
    303,
  ]]);

  const budget = (value: string) =>
    serviceOf(
      `listen: :1\nupstreams: [http://a]\nretries: { budget: ${value} }\n`,
    )
      .retries.budgetPercent;
  assert.equal(budget("20%"), 20);
  assert.equal(budget("0%"), 0);
  assert.equal(budget("100%"), 100);
  assert.equal(budget("2.5%"), 2.5);
  assert.equal(budget("35"), 35);
  assert.equal(budget("0"), 0);
});

Deno.test("upstream discovery: static for IP addresses and Unix sockets, dns for host names, srv for +srv URLs", () => {
  const upstreamsOf = (protocol: string, urls: string[]) =>
    serviceOf(
      `listen: :1\nprotocol: ${protocol}\nupstreams:\n${
        urls.map((url) => `  - '${url}'\n`).join("")
      }`,
    ).upstreams;
  const tcp = (hostname: string, port: number) => ({
    transport: "tcp" as const,
    hostname,
    port,
  });
  assert.deepEqual(
    upstreamsOf("http", [
      "http://10.0.0.1:8080",
      "https://[::1]:8443",
      "http://[2001:db8::7]",
      "http://localhost:8080",
      "https://users.internal",
      "http+srv://_http._tcp.users.default.svc.cluster.local",
      "https+srv://_https._tcp.users.example.com./",
      "http+srv://${USERS_SRV}",
    ]),
    [
      {
        url: "http://10.0.0.1:8080",
        discovery: "static",
        address: tcp("10.0.0.1", 8080),
        tls: false,
        authority: "10.0.0.1:8080",
        weight: 1,
      },
      {
        url: "https://[::1]:8443",
        discovery: "static",
        address: tcp("::1", 8443),
        tls: true,
        authority: "[::1]:8443",
        weight: 1,
      },
      {
        url: "http://[2001:db8::7]",
        discovery: "static",
        address: tcp("2001:db8::7", 80),
        tls: false,
        authority: "[2001:db8::7]",
        weight: 1,
      },
      {
        url: "http://localhost:8080",
        discovery: "dns",
        address: tcp("localhost", 8080),
        tls: false,
        authority: "localhost:8080",
        weight: 1,
      },
      {
        url: "https://users.internal",
        discovery: "dns",
        address: tcp("users.internal", 443),
        tls: true,
        authority: "users.internal",
        weight: 1,
      },
      {
        url: "http+srv://_http._tcp.users.default.svc.cluster.local",
        discovery: "srv",
        address: tcp("_http._tcp.users.default.svc.cluster.local", 0),
        tls: false,
        authority: "_http._tcp.users.default.svc.cluster.local",
        weight: 1,
      },
      {
        url: "https+srv://_https._tcp.users.example.com./",
        discovery: "srv",
        address: tcp("_https._tcp.users.example.com.", 0),
        tls: true,
        authority: "_https._tcp.users.example.com.",
        weight: 1,
      },
      {
        url: "http+srv://_http._tcp.users.default.svc.cluster.local",
        discovery: "srv",
        address: tcp("_http._tcp.users.default.svc.cluster.local", 0),
        tls: false,
        authority: "_http._tcp.users.default.svc.cluster.local",
        weight: 1,
      },
    ] satisfies UpstreamConfig[],
  );
  assert.deepEqual(
    upstreamsOf("tcp", [
      "tcp://127.0.0.1:6379",
      "tls://redis.internal:6380",
      "unix:/run/redis.sock",
      "tcp+srv://_redis._tcp.redis.default.svc.cluster.local",
      "tls+srv://_redis._tcp.redis.example.com",
    ]),
    [
      {
        url: "tcp://127.0.0.1:6379",
        discovery: "static",
        address: tcp("127.0.0.1", 6379),
        tls: false,
        authority: "127.0.0.1:6379",
        weight: 1,
      },
      {
        url: "tls://redis.internal:6380",
        discovery: "dns",
        address: tcp("redis.internal", 6380),
        tls: true,
        authority: "redis.internal:6380",
        weight: 1,
      },
      {
        url: "unix:/run/redis.sock",
        discovery: "static",
        address: { transport: "unix", path: "/run/redis.sock" },
        tls: false,
        authority: "localhost",
        weight: 1,
      },
      {
        url: "tcp+srv://_redis._tcp.redis.default.svc.cluster.local",
        discovery: "srv",
        address: tcp("_redis._tcp.redis.default.svc.cluster.local", 0),
        tls: false,
        authority: "_redis._tcp.redis.default.svc.cluster.local",
        weight: 1,
      },
      {
        url: "tls+srv://_redis._tcp.redis.example.com",
        discovery: "srv",
        address: tcp("_redis._tcp.redis.example.com", 0),
        tls: true,
        authority: "_redis._tcp.redis.example.com",
        weight: 1,
      },
    ] satisfies UpstreamConfig[],
  );
});

Deno.test("a +srv scheme decides the protocol like its base scheme", () => {
  const protocolOf = (url: string) =>
    serviceOf(`listen: :1\nupstreams: ['${url}']\n`).protocol;
  assert.equal(protocolOf("http+srv://_http._tcp.a.b"), "http");
  assert.equal(protocolOf("https+srv://_https._tcp.a.b"), "http");
  assert.equal(protocolOf("tcp+srv://_redis._tcp.a.b"), "tcp");
  assert.equal(protocolOf("tls+srv://_redis._tcp.a.b"), "tcp");
  assert.deepEqual(
    errorsOf(
      "listen: :1\nupstreams: ['http+srv://_h._tcp.a.b', 'tcp+srv://_r._tcp.a.b']\n",
    ),
    [
      "s.yaml:2:12: upstreams: mixes HTTP (http://, https://, http+unix:) and TCP (tcp://, tls://, unix:) upstreams: a service speaks one protocol",
    ],
  );
});

/** One mistake each: the route file's lines after `listen` and `upstreams`, and the errors. */
const MISTAKES: [string, string, string[]][] = [
  // SRV and addresses
  ["http+srv://users.default.svc", "", [
    '3:5: upstreams[0]: "http+srv://users.default.svc": the name is not an SRV name (use _service._proto.name, such as _http._tcp.users.default.svc.cluster.local)',
  ]],
  ["tcp+srv://_redis.redis.svc", "", [
    '3:5: upstreams[0]: "tcp+srv://_redis.redis.svc": the name is not an SRV name (use _service._proto.name, such as _redis._tcp.redis.default.svc.cluster.local)',
  ]],
  ["https+srv://_https._tcp.users.svc:8443", "", [
    `3:5: upstreams[0]: "https+srv://_https._tcp.users.svc:8443": an SRV URL has no port: each SRV record gives its endpoint's port`,
  ]],
  ["tls+srv://_r._tcp.redis.svc/db", "", [
    '3:5: upstreams[0]: "tls+srv://_r._tcp.redis.svc/db": an SRV URL has no path: it names the SRV records, whose targets are the endpoints',
  ]],
  ["http://[1:2]:8080", "", [
    '3:5: upstreams[0]: "http://[1:2]:8080": the host in [ ] is not an IPv6 address',
  ]],
  ["tcp://10.0.0.256:1", "", [
    '3:5: upstreams[0]: "tcp://10.0.0.256:1": the host is not an IPv4 address (four numbers from 0 to 255, such as 10.0.0.1)',
  ]],
  // balance and hash_on
  ["http://a", "balance: least-request", [
    '4:10: balance: "least-request" is not one of round_robin, least_request, random, ring_hash, maglev (did you mean "least_request"?)',
  ]],
  ["http://a", "hash_on: header:x-user", [
    "4:10: hash_on: applies to balance ring_hash or maglev only; balance is round_robin (the default)",
  ]],
  ["http://a", "balance: random\nhash_on: path", [
    "5:10: hash_on: applies to balance ring_hash or maglev only; balance is random",
  ]],
  ["http://a", "balance: ring_hash\nhash_on: header:x user", [
    '5:10: hash_on: "header:x user" is not a hash key (use source_ip, path, header:NAME or cookie:NAME, where NAME is a header or cookie name such as x-user)',
  ]],
  ["http://a", "balance: ring_hash\nhash_on: query:id", [
    '5:10: hash_on: "query:id" is not a hash key (use source_ip, path, header:NAME or cookie:NAME, where NAME is a header or cookie name such as x-user)',
  ]],
  ["tcp://a:1", "balance: maglev\nhash_on: cookie:session", [
    '5:10: hash_on: "cookie:session" does not apply to TCP services: they hash source_ip only',
  ]],
  // health_check
  ["http://a", "health_check: { path: healthz }", [
    '4:23: health_check.path: "healthz" is not a path to check (start with /, printable ASCII without spaces; percent-encode the rest)',
  ]],
  ["http://a", "health_check: { path: /héalth }", [
    '4:23: health_check.path: "/héalth" is not a path to check (start with /, printable ASCII without spaces; percent-encode the rest)',
  ]],
  ["http://a", "health_check: { send: PING, expect: PONG }", [
    "4:23: health_check.send: applies to TCP services only; an HTTP check GETs health_check.path and checks the status against health_check.expect_status",
    "4:37: health_check.expect: applies to TCP services only; an HTTP check GETs health_check.path and checks the status against health_check.expect_status",
  ]],
  ["tcp://a:1", "health_check: { path: /, expect_status: 200 }", [
    "4:23: health_check.path: applies to HTTP services only; a TCP check connects, then sends health_check.send and reads health_check.expect when given",
    "4:41: health_check.expect_status: applies to HTTP services only; a TCP check connects, then sends health_check.send and reads health_check.expect when given",
  ]],
  ["http://a", "health_check: { interval: 0s }", [
    '4:27: health_check.interval: "0s" is too short: use a duration above 0, such as 5s',
  ]],
  ["http://a", "health_check: { timeout: 5 }", [
    "4:26: health_check.timeout: expected a string, got 5",
  ]],
  ["http://a", "health_check: { interval: 2s, timeout: 2s }", [
    '4:40: health_check.timeout: "2s" must be less than health_check.interval (2s): a check ends before the next one starts',
  ]],
  ["http://a", "health_check: { timeout: 5s }", [
    '4:26: health_check.timeout: "5s" must be less than health_check.interval (5s, the default): a check ends before the next one starts',
  ]],
  ["http://a", "health_check: { interval: 500ms }", [
    '4:27: health_check.interval: "500ms" must be more than health_check.timeout (1s, the default): a check ends before the next one starts (or set a shorter timeout)',
  ]],
  [
    "http://a",
    "health_check: { healthy_threshold: 0, unhealthy_threshold: 101 }",
    [
      "4:36: health_check.healthy_threshold: expected an integer from 1 to 100, got 0",
      "4:60: health_check.unhealthy_threshold: expected an integer from 1 to 100, got 101",
    ],
  ],
  ["http://a", "health_check: { expect_status: 700 }", [
    "4:32: health_check.expect_status: expected an integer from 100 to 599, got 700",
  ]],
  ["http://a", "health_check: { expect_status: [200, 99, 2xx] }", [
    "4:38: health_check.expect_status[1]: expected an integer from 100 to 599, got 99",
    '4:42: health_check.expect_status[2]: "2xx" is not a status or a range of statuses (use 200 or 200-399)',
  ]],
  ["http://a", "health_check: { expect_status: 399-200 }", [
    '4:32: health_check.expect_status: "399-200" is not a range: its first status is above its last (write 200-399)',
  ]],
  ["http://a", "health_check: { expect_status: [] }", [
    "4:32: health_check.expect_status: needs at least one status or range",
  ]],
  ["http://a", "health_check: { expect_status: true }", [
    "4:32: health_check.expect_status: true is not a status, a range or a list of them (use 200, 200-399 or [200, 204, 300-399])",
  ]],
  ["http://a", "health_check: yes", [
    '4:15: health_check: expected an object, got "yes"',
  ]],
  // outlier
  ["http://a", "outlier: { consecutive_failures: 1001 }", [
    "4:34: outlier.consecutive_failures: expected an integer from 0 to 1000, got 1001",
  ]],
  ["http://a", "outlier: { base_ejection: 0ms }", [
    '4:27: outlier.base_ejection: "0ms" is too short: use a duration above 0, such as 30s',
  ]],
  ["http://a", "outlier: { base_ejection: 30 seconds }", [
    '4:27: outlier.base_ejection: "30 seconds" is not a duration (use a number and a unit: 250ms, 2s, 5m, 1h)',
  ]],
  ["http://a", "outlier: { max_ejection_percent: 50% }", [
    '4:34: outlier.max_ejection_percent: expected an integer from 0 to 100, got "50%"',
  ]],
  // retries
  ["http://a", "retries: { attempts: 0 }", [
    "4:22: retries.attempts: expected an integer from 1 to 10, got 0",
  ]],
  ["http://a", "retries: { on: [] }", [
    "4:16: retries.on: needs at least one failure to retry (connect_failure, reset, timeout, 500 to 504); to turn retries off, set attempts: 1",
  ]],
  ["http://a", "retries: { on: [connect_failur, '503', 505] }", [
    '4:17: retries.on[0]: "connect_failur" is not one of connect_failure, reset, timeout, 500, 501, 502, 503, 504 (did you mean "connect_failure"?)',
    '4:33: retries.on[1]: "503" is not one of connect_failure, reset, timeout, 500, 501, 502, 503, 504 (write 503 without quotes)',
    "4:40: retries.on[2]: 505 is not one of connect_failure, reset, timeout, 500, 501, 502, 503, 504",
  ]],
  ["http://a", "retries: { on: reset }", [
    '4:16: retries.on: expected an array, got "reset"',
  ]],
  ["http://a", "retries: { budget: 120% }", [
    '4:20: retries.budget: "120%" is not a percentage from 0% to 100% (such as 20%)',
  ]],
  ["http://a", "retries: { budget: 101 }", [
    "4:20: retries.budget: expected a number from 0 to 100, got 101",
  ]],
  ["http://a", "retries: { budget: [20%] }", [
    "4:20: retries.budget: a list is not a percentage (use 0% to 100%, such as 20%)",
  ]],
  // Meaning (the 0s) is checked once every value has the right shape.
  ["http://a", "retries: { per_try_timeout: 0s, retry_non_idempotent: 1 }", [
    "4:55: retries.retry_non_idempotent: expected a boolean, got 1",
  ]],
  ["http://a", "retries: { per_try_timeout: 0s }", [
    '4:29: retries.per_try_timeout: "0s" is too short: use a duration above 0, such as 2s',
  ]],
  [
    "tcp://a:1",
    "retries:\n  on: [connect_failure, reset, 503]\n  per_try_timeout: 0s\n  budget: 10%\n  retry_non_idempotent: true",
    [
      '5:25: retries.on[1]: "reset" does not apply to TCP services: they retry connect_failure only (once bytes have flowed, a connection cannot be replayed)',
      "5:32: retries.on[2]: 503 does not apply to TCP services: they retry connect_failure only (once bytes have flowed, a connection cannot be replayed)",
      "6:20: retries.per_try_timeout: applies to HTTP services only; TCP services retry connections that failed to open (retries.attempts and retries.on: [connect_failure])",
      "7:11: retries.budget: applies to HTTP services only; TCP services retry connections that failed to open (retries.attempts and retries.on: [connect_failure])",
      "8:25: retries.retry_non_idempotent: applies to HTTP services only; TCP services retry connections that failed to open (retries.attempts and retries.on: [connect_failure])",
    ],
  ],
  // limits and dns_refresh
  [
    "http://a",
    "limits: { max_connections: 0, max_pending: 1.5, max_requests: 1000001 }",
    [
      "4:28: limits.max_connections: expected an integer from 1 to 1000000, got 0",
      "4:44: limits.max_pending: expected an integer from 1 to 1000000, got 1.5",
      "4:63: limits.max_requests: expected an integer from 1 to 1000000, got 1000001",
    ],
  ],
  ["http://a", "dns_refresh: 50ms", [
    '4:14: dns_refresh: "50ms" is too short: use at least 100ms (resolving more often only loads the DNS server)',
  ]],
  ["http://a", "dns_refresh: 0s", [
    '4:14: dns_refresh: "0s" is too short: use a duration above 0, such as 5s',
  ]],
  ["http://a", "dns_refresh: 5", [
    "4:14: dns_refresh: expected a string, got 5",
  ]],
];

Deno.test("each mistake in a resilience key is an error at its file:line:col that says what would be valid", () => {
  const failures: string[] = [];
  for (const [upstream, rest, expected] of MISTAKES) {
    const text = `listen: :1\nupstreams:\n  - ${upstream}\n${rest}\n`;
    const actual = errorsOf(text);
    const wanted = expected.map((e) => `s.yaml:${e}`);
    try {
      assert.deepEqual(actual, wanted);
    } catch {
      failures.push(
        `${text}\n  got:    ${actual.join("\n          ")}\n  wanted: ${
          wanted.join("\n          ")
        }`,
      );
    }
  }
  assert.deepEqual(failures, []);
});

Deno.test('typos in resilience keys, top-level or nested, get "did you mean"', () => {
  assert.deepEqual(
    errorsOf(`listen: :1
upstreams: [http://a]
balanse: random
helth_check: { intervall: 5s }
outlier: { base_ejections: 30s, consecutive_failure: 3 }
retries: { attemps: 3, per_try_timout: 1s, retry_non_idempotant: true }
limits: { max_conections: 10, maxpending: 10 }
dns_refesh: 5s
`),
    [
      's.yaml:3:1: unknown key "balanse" (did you mean "balance"?)',
      's.yaml:4:1: unknown key "helth_check" (did you mean "health_check"?)',
      's.yaml:5:12: outlier: unknown key "base_ejections" (did you mean "base_ejection"?)',
      's.yaml:5:33: outlier: unknown key "consecutive_failure" (did you mean "consecutive_failures"?)',
      's.yaml:6:12: retries: unknown key "attemps" (did you mean "attempts"?)',
      's.yaml:6:24: retries: unknown key "per_try_timout" (did you mean "per_try_timeout"?)',
      's.yaml:6:44: retries: unknown key "retry_non_idempotant" (did you mean "retry_non_idempotent"?)',
      's.yaml:7:11: limits: unknown key "max_conections" (did you mean "max_connections"?)',
      's.yaml:7:31: limits: unknown key "maxpending" (did you mean "max_pending"?)',
      's.yaml:8:1: unknown key "dns_refesh" (did you mean "dns_refresh"?)',
    ],
  );
  assert.deepEqual(
    errorsOf(
      "listen: :1\nupstreams: [http://a]\nhealth_check: { intervall: 5s, unhealthy: 3 }\n",
    ),
    [
      's.yaml:3:17: health_check: unknown key "intervall" (did you mean "interval"?)',
      's.yaml:3:32: health_check: unknown key "unhealthy" (valid keys: path, expect_status, send, expect, interval, timeout, healthy_threshold, unhealthy_threshold)',
    ],
  );
});

import assert from "node:assert/strict";
import {
  assertPromtoolAccepts,
  connectTo,
  echoBytes,
  echoedThrough,
  freePort,
  startLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";

Deno.test("/metrics counts requests, latency, upstream errors, TCP connections and bytes, and promtool accepts it", async () => {
  await using web = startServer(() => new Response("ok"));
  await using echo = startTcpServer(echoBytes);
  await using l = await startLegate({
    "web.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${web.url}]\nmatch: { path_prefix: /app }\n`,
    "down.yaml":
      `listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:${freePort()}]\n`,
    "echo.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${echo.tcpUrl}]\n`,
  });
  for (let i = 0; i < 3; i++) {
    await (await fetch(`http://${l.address("web")}/app`)).text();
  }
  await (await fetch(`http://${l.address("web")}/elsewhere`)).text();
  await (await fetch(`http://${l.address("down")}/`)).text();
  assert.equal(await echoedThrough(l.address("echo"), 1000), 1000);

  const admin = `http://127.0.0.1:${
    (l.legate.admin.addr as Deno.NetAddr).port
  }`;
  const scrape = async () => await (await fetch(`${admin}/metrics`)).text();
  await waitFor(
    async () =>
      (await scrape()).includes(
        'legate_tcp_bytes_total{service="echo",direction="downstream"} 1000',
      ),
    "the TCP bytes",
  );
  const text = await scrape();
  for (
    const line of [
      'legate_http_requests_total{service="web",code="200"} 3',
      'legate_http_requests_total{service="down",code="502"} 1',
      'legate_http_requests_total{service="none",code="404"} 1',
      'legate_http_request_duration_seconds_count{service="web"} 3',
      'legate_http_request_duration_seconds_bucket{service="web",le="+Inf"} 3',
      'legate_http_request_duration_seconds_count{service="none"} 1',
      'legate_upstream_response_header_duration_seconds_count{service="web"} 3',
      'legate_upstream_connect_duration_seconds_count{service="echo"} 1',
      'legate_tcp_connection_duration_seconds_count{service="echo"} 1',
      'legate_upstream_errors_total{service="down",error="connection_refused"} 1',
      'legate_tcp_connections_total{service="echo"} 1',
      'legate_tcp_connections_open{service="echo"} 0',
      'legate_tcp_bytes_total{service="echo",direction="upstream"} 1000',
      "legate_config_last_reload_successful 1",
      "legate_services 3",
    ]
  ) {
    assert.ok(text.split("\n").includes(line), `missing: ${line}\n${text}`);
  }
  // Buckets are cumulative: each counts at least what the one below does.
  const buckets = text.split("\n").filter((line) =>
    line.startsWith('legate_http_request_duration_seconds_bucket{service="web"')
  ).map((line) => Number(line.split(" ")[1]));
  assert.equal(buckets.length, 16);
  assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b));
  await assertPromtoolAccepts(text);
  // Every sample belongs to a family announced with HELP and TYPE.
  const families = new Set(
    [...text.matchAll(/^# TYPE (\S+) (counter|gauge|histogram)$/gm)].map((
      m,
    ) => m[1]),
  );
  for (
    const sample of text.split("\n").filter((l) => l && !l.startsWith("#"))
  ) {
    const name = sample.split(/[{ ]/)[0]!;
    assert.ok(
      families.has(name) ||
        families.has(name.replace(/_(bucket|sum|count)$/, "")),
      sample,
    );
  }
});

Deno.test("TCP bytes count while a connection stays open, as a long-lived Redis or database connection does", async () => {
  await using echo = startTcpServer(echoBytes);
  await using l = await startLegate({
    "echo.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${echo.tcpUrl}]\n`,
  });
  const admin = `http://127.0.0.1:${
    (l.legate.admin.addr as Deno.NetAddr).port
  }`;
  const scrape = async () =>
    (await (await fetch(`${admin}/metrics`)).text()).split("\n");
  const conn = await connectTo(l.address("echo"));
  try {
    await conn.write(new Uint8Array(500));
    const buffer = new Uint8Array(500);
    let echoed = 0;
    while (echoed < 500) echoed += (await conn.read(buffer.subarray(echoed)))!;
    const lines = await scrape();
    for (
      const line of [
        'legate_tcp_connections_open{service="echo"} 1',
        'legate_tcp_bytes_total{service="echo",direction="upstream"} 500',
        'legate_tcp_bytes_total{service="echo",direction="downstream"} 500',
      ]
    ) {
      assert.ok(lines.includes(line), `missing: ${line}`);
    }
  } finally {
    conn.close();
  }
  await waitFor(
    async () =>
      (await scrape()).includes(
        'legate_tcp_connections_open{service="echo"} 0',
      ),
    "the connection to close",
  );
  // Closing moves the bytes from the open connection to the totals, once.
  assert.ok(
    (await scrape()).includes(
      'legate_tcp_bytes_total{service="echo",direction="upstream"} 500',
    ),
  );
});

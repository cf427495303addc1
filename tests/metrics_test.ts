import assert from "node:assert/strict";
import {
  connectTo,
  echoBytes,
  freePort,
  startLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";

Deno.test("/metrics counts requests, upstream errors, TCP connections and bytes in Prometheus text", async () => {
  await using web = startServer(() => new Response("ok"));
  await using echo = startTcpServer(echoBytes);
  await using l = await startLegate({
    "web.yaml": `listen: 127.0.0.1:${freePort()}\nupstreams: [${web.url}]\n`,
    "down.yaml":
      `listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:${freePort()}]\n`,
    "echo.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${echo.tcpUrl}]\n`,
  });
  for (let i = 0; i < 3; i++) {
    await (await fetch(`http://${l.address("web")}/`)).text();
  }
  await (await fetch(`http://${l.address("down")}/`)).text();
  const conn = await connectTo(l.address("echo"));
  await conn.write(new Uint8Array(1000));
  await conn.closeWrite();
  let echoed = 0;
  const buffer = new Uint8Array(4096);
  for (
    let n = await conn.read(buffer);
    n !== null;
    n = await conn.read(buffer)
  ) echoed += n;
  conn.close();
  assert.equal(echoed, 1000);

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
  // Every sample belongs to a family announced with HELP and TYPE.
  const families = new Set(
    [...text.matchAll(/^# TYPE (\S+) (counter|gauge)$/gm)].map((m) => m[1]),
  );
  for (
    const sample of text.split("\n").filter((l) => l && !l.startsWith("#"))
  ) {
    assert.ok(families.has(sample.split(/[{ ]/)[0]!), sample);
  }
});

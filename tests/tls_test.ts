import assert from "node:assert/strict";
import { makeCa } from "./_certificates.ts";
import { freePort, spawnLegate, writeRoutes } from "./_helpers.ts";

Deno.test("reaches https:// and tls:// upstreams, verifying their certificates", async () => {
  await using ca = await makeCa();
  const issued = await ca.issue("server", { cn: "localhost" });
  const tls = {
    ca: ca.ca,
    cert: await Deno.readTextFile(issued.cert),
    key: await Deno.readTextFile(issued.key),
  };
  let host = "";
  const https = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: tls.cert,
      key: tls.key,
      onListen() {},
    },
    (request) => {
      host = request.headers.get("host") ?? "";
      return new Response("over tls");
    },
  );
  // A TCP service with its own ALPN protocol refuses a client that offers
  // only HTTP's; legate offers "http/1.1" to https:// upstreams alone.
  const echo = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: tls.cert,
    key: tls.key,
    alpnProtocols: ["x-echo"],
  });
  const echoing = (async () => {
    for await (const conn of echo) {
      const buffer = new Uint8Array(64);
      const n = await conn.read(buffer).catch(() => null);
      if (n !== null) await conn.write(buffer.subarray(0, n));
      conn.close();
    }
  })().catch(() => {});
  const httpPort = freePort();
  const tcpPort = freePort();
  const routes = await writeRoutes({
    "web.yaml":
      `listen: 127.0.0.1:${httpPort}\nupstreams: [https://localhost:${https.addr.port}]\n`,
    "echo.yaml": `listen: 127.0.0.1:${tcpPort}\nupstreams: [tls://localhost:${
      (echo.addr as Deno.NetAddr).port
    }]\n`,
  });
  // Trusting the test CA (DENO_CERT adds it to the roots legate verifies against).
  const trusting = await spawnLegate(routes, [], { DENO_CERT: tls.ca });
  const response = await fetch(`http://127.0.0.1:${httpPort}/`);
  assert.equal(await response.text(), "over tls");
  assert.equal(host, `localhost:${https.addr.port}`);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
  await conn.write(new TextEncoder().encode("hello"));
  const reply = new Uint8Array(5);
  assert.equal(await conn.read(reply), 5);
  assert.equal(new TextDecoder().decode(reply), "hello");
  conn.close();
  trusting.child.kill("SIGTERM");
  assert.equal(await trusting.exit(), 0);

  // Without the CA, the upstream's certificate is refused: 502, never plain text.
  const untrusting = await spawnLegate(routes);
  const refused = await fetch(`http://127.0.0.1:${httpPort}/`);
  assert.equal(refused.status, 502);
  assert.equal(
    refused.headers.get("proxy-status"),
    "legate; error=tls_certificate_error",
  );
  assert.match(await refused.text(), /certificate/i);
  untrusting.child.kill("SIGTERM");
  assert.equal(await untrusting.exit(), 0);

  await https.shutdown();
  echo.close();
  await echoing;
  await Deno.remove(routes, { recursive: true });
});

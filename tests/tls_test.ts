import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort, spawnLegate, writeRoutes } from "./_helpers.ts";

/** A certificate authority and a certificate it signed for localhost. */
async function makeCertificates(): Promise<
  { dir: string; ca: string; cert: string; key: string }
> {
  const dir = await Deno.makeTempDir({ prefix: "legate-tls-" });
  const openssl = async (args: string[]) => {
    const output = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  };
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=legate test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  ]);
  await openssl([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=localhost",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
  ]);
  await Deno.writeTextFile(
    join(dir, "san.ext"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "san.ext",
    "-out",
    "server.pem",
  ]);
  return {
    dir,
    ca: join(dir, "ca.pem"),
    cert: await Deno.readTextFile(join(dir, "server.pem")),
    key: await Deno.readTextFile(join(dir, "server.key")),
  };
}

Deno.test("reaches https:// and tls:// upstreams, verifying their certificates", async () => {
  const tls = await makeCertificates();
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
  await Deno.remove(tls.dir, { recursive: true });
});

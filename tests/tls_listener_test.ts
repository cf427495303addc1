import assert from "node:assert/strict";
import { join } from "node:path";
import { makeCa, servedCommonName } from "./_certificates.ts";
import {
  startLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";

/** Runs curl over HTTPS trusting `ca`; resolves with its output and the HTTP version it spoke. */
async function curl(
  ca: string,
  args: string[],
): Promise<{ body: string; version: string }> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", "--cacert", ca, "-w", "\n%{http_version}", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const end = text.lastIndexOf("\n");
  return { body: text.slice(0, end), version: text.slice(end + 1) };
}

Deno.test("serves HTTPS over HTTP/1.1 and HTTP/2, telling the upstream X-Forwarded-Proto: https", async () => {
  await using ca = await makeCa();
  const server = await ca.issue("server");
  await using upstream = startServer((request) =>
    new Response(
      `${request.headers.get("x-forwarded-proto")} ${
        new URL(request.url).pathname
      }`,
    )
  );
  await using running = await startLegate({
    "web.yaml":
      `listen: 127.0.0.1:0\ntls: { cert: ${server.cert}, key: ${server.key} }\nupstreams: [${upstream.url}]\n`,
  });
  const port = running.address("web").split(":")[1];
  const url = `https://localhost:${port}/users/1`;
  assert.deepEqual(await curl(ca.ca, ["--http1.1", url]), {
    body: "https /users/1",
    version: "1.1",
  });
  assert.deepEqual(await curl(ca.ca, ["--http2", url]), {
    body: "https /users/1",
    version: "2",
  });
  // A client speaking plain HTTP to the TLS port gets no answer in plain text.
  const plain = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "5", `http://127.0.0.1:${port}/`],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.notEqual(plain.code, 0);
});

Deno.test("terminates TLS for a TCP service, as openssl s_client sees it", async () => {
  await using ca = await makeCa();
  const server = await ca.issue("server");
  await using echo = startTcpServer(async (conn) => {
    const buffer = new Uint8Array(1024);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      await conn.write(buffer.subarray(0, n));
    }
  });
  await using running = await startLegate({
    "echo.yaml":
      `listen: 127.0.0.1:0\ntls: { cert: ${server.cert}, key: ${server.key} }\nupstreams: [${echo.tcpUrl}]\n`,
  });
  const port = Number(running.address("echo").split(":")[1]);
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
      "-CAfile",
      ca.ca,
      "-verify_return_error",
      "-quiet",
      "-no_ign_eof",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("hello through tls\n"));
  const reader = child.stdout.getReader();
  let echoed = "";
  while (!echoed.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    echoed += new TextDecoder().decode(value);
  }
  assert.equal(echoed, "hello through tls\n");
  await writer.close();
  reader.releaseLock();
  await child.stdout.cancel();
  const { code } = await child.status;
  await child.stderr.cancel();
  assert.equal(code, 0);
  assert.equal(await servedCommonName(port, ca.ca), "server");
});

Deno.test("applies a renewed certificate to new connections without refusing any", async () => {
  await using ca = await makeCa();
  const first = await ca.issue("first");
  const renewed = await ca.issue("renewed");
  // The files legate is given, as cert-manager would update them.
  const cert = join(ca.dir, "tls.crt");
  const key = join(ca.dir, "tls.key");
  await Deno.copyFile(first.cert, cert);
  await Deno.copyFile(first.key, key);
  await using upstream = startServer(() => new Response("ok"));
  await using running = await startLegate({
    "web.yaml":
      `listen: 127.0.0.1:0\ntls: { cert: ${cert}, key: ${key} }\nupstreams: [${upstream.url}]\n`,
  });
  const port = Number(running.address("web").split(":")[1]);
  assert.equal(await servedCommonName(port, ca.ca), "first");

  // New connections, one after another, for as long as the switch takes.
  const caCert = await Deno.readTextFile(ca.ca);
  let switching = true;
  let answered = 0;
  const failures: string[] = [];
  const traffic = (async () => {
    while (switching) {
      try {
        const conn = await Deno.connectTls({
          hostname: "localhost",
          port,
          caCerts: [caCert],
        });
        await conn.write(
          new TextEncoder().encode(
            "GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
          ),
        );
        let text = "";
        const buffer = new Uint8Array(4096);
        for (let n; (n = await conn.read(buffer)) !== null;) {
          text += new TextDecoder().decode(buffer.subarray(0, n));
        }
        conn.close();
        if (text.startsWith("HTTP/1.1 200")) answered++;
        else failures.push(text);
      } catch (error) {
        failures.push(String(error));
      }
    }
  })();
  // Written as a renewal writes them: the key, then the certificate, each by rename.
  await Deno.copyFile(renewed.key, `${key}.new`);
  await Deno.rename(`${key}.new`, key);
  await Deno.copyFile(renewed.cert, `${cert}.new`);
  await Deno.rename(`${cert}.new`, cert);
  await waitFor(
    async () => await servedCommonName(port, ca.ca) === "renewed",
    "the renewed certificate",
  );
  switching = false;
  await traffic;
  assert.deepEqual(failures, []);
  assert.ok(answered > 0);
});

Deno.test("keeps the old certificate when a renewed pair is broken, and reports it on /config/errors", async () => {
  await using ca = await makeCa();
  const first = await ca.issue("first");
  const other = await ca.issue("other");
  const cert = join(ca.dir, "tls.crt");
  await Deno.copyFile(first.cert, cert);
  await using upstream = startServer(() => new Response("ok"));
  await using running = await startLegate({
    "web.yaml":
      `listen: 127.0.0.1:0\ntls:\n  cert: ${cert}\n  key: ${first.key}\nupstreams: [${upstream.url}]\n`,
  });
  const port = Number(running.address("web").split(":")[1]);
  // The certificate is replaced, its key is not: the pair no longer matches.
  await Deno.copyFile(other.cert, cert);
  const admin = running.legate.admin.addr as Deno.NetAddr;
  let report: { errors: { message: string }[] } = { errors: [] };
  await waitFor(async () => {
    report = await (await fetch(
      `http://127.0.0.1:${admin.port}/config/errors`,
    )).json();
    return report.errors.length > 0;
  }, "the broken pair on /config/errors");
  assert.equal(report.errors.length, 1);
  assert.match(
    report.errors[0]!.message,
    new RegExp(
      `web\\.yaml:4:8: tls\\.key: the key in "${first.key}" does not belong to the certificate in "${cert}"`,
    ),
  );
  assert.equal(await servedCommonName(port, ca.ca), "first");
});

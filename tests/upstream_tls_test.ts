import assert from "node:assert/strict";
import { join } from "node:path";
import { makeCa } from "./_certificates.ts";
import {
  freePort,
  startLegate,
  startServer,
  untilAccepting,
  waitFor,
} from "./_helpers.ts";

/**
 * `openssl s_server -www` on a free loopback port, requiring a client
 * certificate signed by `ca`; disposing stops it.
 */
async function startMtlsServer(
  server: { cert: string; key: string },
  ca: string,
): Promise<{ port: number } & AsyncDisposable> {
  const port = freePort();
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      server.cert,
      "-key",
      server.key,
      "-CAfile",
      ca,
      "-Verify",
      "1",
      "-verify_return_error",
      "-www",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  await untilAccepting(port, "openssl s_server to listen");
  return {
    port,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

Deno.test("presents a client certificate to an upstream that requires one (openssl s_server -Verify)", async () => {
  await using ca = await makeCa();
  const server = await ca.issue("server", { names: ["DNS:users.internal"] });
  const client = await ca.issue("client", { client: true });
  await using upstream = await startMtlsServer(server, ca.ca);
  const url = `https://127.0.0.1:${upstream.port}`;
  const tls = (extra: string) =>
    `upstream_tls:\n  ca: ${ca.ca}\n  server_name: users.internal\n${extra}`;
  await using running = await startLegate({
    "users.yaml": `listen: 127.0.0.1:0\nupstreams: [${url}]\n${
      tls(`  cert: ${client.cert}\n  key: ${client.key}\n`)
    }`,
    "anonymous.yaml": `listen: 127.0.0.2:0\nupstreams: [${url}]\n${tls("")}`,
    "misnamed.yaml":
      `listen: 127.0.0.3:0\nupstreams: [${url}]\nupstream_tls:\n  ca: ${ca.ca}\n  cert: ${client.cert}\n  key: ${client.key}\n  server_name: orders.internal\n`,
  });

  const ok = await fetch(`http://${running.address("users")}/`);
  assert.equal(ok.status, 200);
  // s_server -www describes the session, the client's certificate included.
  assert.match(await ok.text(), /Client certificate|CN ?= ?client/);

  const refused = await fetch(`http://${running.address("anonymous")}/`);
  assert.equal(refused.status, 502);
  assert.equal(
    refused.headers.get("proxy-status"),
    "legate; error=tls_alert_received",
  );
  assert.match(await refused.text(), /alert/i);

  const misnamed = await fetch(`http://${running.address("misnamed")}/`);
  assert.equal(misnamed.status, 502);
  assert.equal(
    misnamed.headers.get("proxy-status"),
    "legate; error=tls_certificate_error",
  );
  assert.match(await misnamed.text(), /orders\.internal/);
});

Deno.test("a renewed client certificate applies to new upstream connections without a reload", async () => {
  await using ca = await makeCa();
  await using other = await makeCa();
  const server = await ca.issue("server");
  const good = await ca.issue("good", { client: true });
  const stranger = await other.issue("stranger", { client: true });
  await using upstream = await startMtlsServer(server, ca.ca);
  const cert = join(ca.dir, "client.crt");
  const key = join(ca.dir, "client.key");
  // A certificate of a CA the upstream does not trust, then a good one.
  await Deno.copyFile(stranger.cert, cert);
  await Deno.copyFile(stranger.key, key);
  await using running = await startLegate({
    "users.yaml":
      `listen: 127.0.0.1:0\nupstreams: [https://localhost:${upstream.port}]\nupstream_tls: { ca: ${ca.ca}, cert: ${cert}, key: ${key} }\nretries: { attempts: 1 }\n`,
  });
  const first = await fetch(`http://${running.address("users")}/`);
  await first.body?.cancel();
  assert.equal(first.status, 502);
  await Deno.copyFile(good.key, `${key}.new`);
  await Deno.copyFile(good.cert, `${cert}.new`);
  await Deno.rename(`${key}.new`, key);
  await Deno.rename(`${cert}.new`, cert);
  await waitFor(async () => {
    const response = await fetch(`http://${running.address("users")}/`);
    await response.body?.cancel();
    return response.status === 200;
  }, "the renewed client certificate");
});

Deno.test("forwards to an HTTP upstream on a Unix socket, with the service name as Host", async () => {
  const dir = await Deno.makeTempDir({ prefix: "legate-unix-" });
  const path = join(dir, "app.sock");
  const server = Deno.serve(
    { transport: "unix", path, onListen() {} },
    (request) =>
      new Response(
        `${request.headers.get("host")} ${new URL(request.url).pathname}`,
      ),
  );
  await using running = await startLegate({
    "app.yaml": `listen: 127.0.0.1:0\nupstreams: [http+unix:${path}]\n`,
    "kept.yaml":
      `listen: 127.0.0.1:0\nupstreams: [http+unix:${path}]\npreserve_host: true\nmatch: { path_prefix: /kept }\n`,
  });
  const response = await fetch(`http://${running.address("app")}/x`);
  assert.equal(await response.text(), "app /x");
  // fetch would drop a Host it is given; curl sends it.
  const kept = await new Deno.Command("curl", {
    args: [
      "-sS",
      "-H",
      "Host: app.example",
      `http://${running.address("kept")}/kept/y`,
    ],
    stdout: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(kept.stdout), "app.example /kept/y");
  await server.shutdown();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("creates a unix: listener's socket with the mode the route file gives", async () => {
  const dir = await Deno.makeTempDir({ prefix: "legate-unix-" });
  const path = join(dir, "users.sock");
  await using upstream = startServer(() => new Response("ok"));
  await using running = await startLegate({
    "users.yaml":
      `listen: unix:${path}\nmode: "0660"\nupstreams: [${upstream.url}]\n`,
  });
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o660);
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  const response = await fetch("http://users/", { client });
  assert.equal(await response.text(), "ok");
  client.close();
  // A reload that changes only the mode applies it to the socket in place.
  await Deno.writeTextFile(
    join(running.legate.config.routesDir, "users.yaml"),
    `listen: unix:${path}\nmode: "0600"\nupstreams: [${upstream.url}]\n`,
  );
  assert.equal((await running.legate.reload("test")).outcome, "applied");
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  await Deno.remove(dir, { recursive: true });
});

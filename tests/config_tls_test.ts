import assert from "node:assert/strict";
import { join } from "node:path";
import { makeCa } from "./_certificates.ts";
import { processReferences } from "../src/config/interpolate.ts";
import { planListeners } from "../src/config/plan.ts";
import { validateRouteFile } from "../src/config/validate.ts";

function errorsOf(file: string, text: string): string[] {
  return (validateRouteFile({ file, text }, processReferences).errors ?? [])
    .map((e) => e.message);
}

Deno.test("names file:line:col for a missing, unreadable or malformed certificate or key", async () => {
  await using ca = await makeCa();
  const server = await ca.issue("server");
  const garbage = join(ca.dir, "garbage.pem");
  await Deno.writeTextFile(
    garbage,
    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
  );
  const route = (cert: string, key: string) =>
    `listen: 127.0.0.1:8443\ntls:\n  cert: ${cert}\n  key: ${key}\nupstreams: [http://127.0.0.1:8080]\n`;
  assert.deepEqual(
    errorsOf("web.yaml", route("/nonexistent.crt", server.key)),
    [
      'web.yaml:3:9: tls.cert: cannot read "/nonexistent.crt": no such file',
    ],
  );
  assert.deepEqual(errorsOf("web.yaml", route(server.cert, ca.dir)), [
    `web.yaml:4:8: tls.key: cannot read "${ca.dir}": it is not a regular file`,
  ]);
  assert.match(
    errorsOf("web.yaml", route(garbage, server.key))[0]!,
    new RegExp(
      `^web\\.yaml:3:9: tls\\.cert: certificate 1 in "${garbage}" is not valid PEM`,
    ),
  );
  assert.deepEqual(errorsOf("web.yaml", route(server.cert, server.cert)), [
    `web.yaml:4:8: tls.key: file "${server.cert}" holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC; an encrypted key cannot be used)`,
  ]);
  assert.deepEqual(errorsOf("web.yaml", route(server.key, server.key)), [
    `web.yaml:3:9: tls.cert: file "${server.key}" holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
  ]);
  const other = await ca.issue("other");
  assert.deepEqual(errorsOf("web.yaml", route(server.cert, other.key)), [
    `web.yaml:4:8: tls.key: the key in "${other.key}" does not belong to the certificate in "${server.cert}" (the first certificate of the file must be the one the key signs for)`,
  ]);
});

Deno.test("refuses tls on a unix: listener, mode elsewhere, bad modes, and upstream_tls without TLS upstreams", async () => {
  await using ca = await makeCa();
  const server = await ca.issue("server");
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: unix:/run/web.sock\ntls: { cert: ${server.cert}, key: ${server.key} }\nupstreams: [http://127.0.0.1:8080]\n`,
    ),
    [
      "web.yaml:2:6: tls: needs a host:port listen address: TLS on a unix: listener is not supported",
    ],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: 127.0.0.1:8080\nmode: "0660"\nupstreams: [http://127.0.0.1:8080]\n`,
    ),
    ["web.yaml:2:7: mode: applies to unix: listeners only (it is the socket file's permissions)"],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: unix:/run/web.sock\nmode: "rw-rw----"\nupstreams: [http://127.0.0.1:8080]\n`,
    ),
    ['web.yaml:2:7: mode: "rw-rw----" is not a file mode (write three or four octal digits in quotes, such as "0660")'],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: unix:/run/web.sock\nmode: 660\nupstreams: [http://127.0.0.1:8080]\n`,
    ),
    ["web.yaml:2:7: mode: expected a string, got 660"],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: 127.0.0.1:8080\nupstreams: [http://127.0.0.1:8080]\nupstream_tls: { ca: ${ca.ca} }\n`,
    ),
    ["web.yaml:3:15: upstream_tls: applies to https://, https+unix: and tls:// upstreams; this service has none"],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: 127.0.0.1:8080\nupstreams: [https://users.internal]\nupstream_tls: { cert: ${server.cert} }\n`,
    ),
    ["web.yaml:3:23: upstream_tls.cert: a client certificate needs both cert and key"],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: 127.0.0.1:8080\nupstreams: [https://users.internal]\nupstream_tls: { server_name: "users internal" }\n`,
    ),
    ['web.yaml:3:30: upstream_tls.server_name: "users internal" is not a DNS name (such as users.internal)'],
  );
  assert.deepEqual(
    errorsOf(
      "web.yaml",
      `listen: 127.0.0.1:8080\nupstreams: ["https+unix:/run/app.sock"]\n`,
    ),
    ['web.yaml:2:13: upstreams[0]: "https+unix:/run/app.sock": TLS over a Unix socket is not supported: Deno speaks TLS over TCP connections only (use http+unix:, or https:// to a TCP address)'],
  );
});

Deno.test("HTTP services sharing an address must name the same certificate files", async () => {
  await using ca = await makeCa();
  const a = await ca.issue("a");
  const b = await ca.issue("b");
  const service = (file: string, text: string) =>
    validateRouteFile({ file, text }, processReferences).service!;
  const { errors } = planListeners([
    service(
      "users.yaml",
      `listen: 127.0.0.1:8443\ntls: { cert: ${a.cert}, key: ${a.key} }\nupstreams: [http://127.0.0.1:8080]\nmatch: { path_prefix: /users }\n`,
    ),
    service(
      "orders.yaml",
      `listen: 127.0.0.1:8443\ntls: { cert: ${b.cert}, key: ${b.key} }\nupstreams: [http://127.0.0.1:8081]\nmatch: { path_prefix: /orders }\n`,
    ),
    service(
      "plain.yaml",
      `listen: 127.0.0.1:8443\nupstreams: [http://127.0.0.1:8082]\nmatch: { path_prefix: /plain }\n`,
    ),
  ]);
  assert.deepEqual(errors.map((e) => e.message), [
    `orders.yaml:2:6: tls: "127.0.0.1:8443" is served with tls cert "${a.cert}" and key "${a.key}" by "users" in users.yaml, and this file gives tls cert "${b.cert}" and key "${b.key}": services sharing a listener share its certificate (Deno serves one certificate per listener and cannot choose one by SNI), so name the same files or use another port`,
    `plain.yaml:1:9: listen: "127.0.0.1:8443" is served with tls cert "${a.cert}" and key "${a.key}" by "users" in users.yaml, and this file gives no tls: services sharing a listener share its certificate (Deno serves one certificate per listener and cannot choose one by SNI), so name the same files or use another port`,
  ]);
});

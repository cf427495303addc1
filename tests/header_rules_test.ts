import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../mod.ts";
import { startLegate, startServer, waitFor, writeRoutes } from "./_helpers.ts";

/** An upstream that answers with the request headers it got, as JSON. */
function headerEcho() {
  return startServer((req) =>
    Response.json([...req.headers], {
      headers: { server: "echo/1.0", "x-upstream": "yes" },
    })
  );
}

const route = (upstream: string, extra: string) =>
  `listen: 127.0.0.1:0\nupstreams: [${upstream}]\n${extra}`;

Deno.test("removes, sets and adds request and response headers, after legate's forwarding headers", async () => {
  await using upstream = headerEcho();
  await using l = await startLegate({
    "svc.yaml": route(
      upstream.url,
      [
        "request_headers:",
        '  set: { Authorization: "Bearer from-legate", host: api.internal }',
        "  add: { x-tenant: acme }",
        "  remove: [x-debug, x-forwarded-for]",
        "response_headers:",
        '  set: { strict-transport-security: "max-age=31536000" }',
        "  add: { x-frame-options: DENY }",
        "  remove: [server, via]",
        "",
      ].join("\n"),
    ),
  });
  const response = await fetch(`http://${l.address("svc")}/`, {
    headers: {
      authorization: "Bearer from-client",
      "x-debug": "1",
      "x-tenant": "client",
      "x-forwarded-for": "203.0.113.9",
    },
  });
  const seen: [string, string][] = await response.json();
  const values = (name: string) =>
    seen.filter(([n]) => n === name).map(([, v]) => v);
  assert.deepEqual(values("authorization"), ["Bearer from-legate"]);
  assert.deepEqual(values("host"), ["api.internal"]);
  // The client's value, then the rule's (Deno's Headers joins them).
  assert.deepEqual(values("x-tenant"), ["client, acme"]);
  assert.deepEqual(values("x-debug"), []);
  // Removed although legate appends to it: rules come after forwarding headers.
  assert.deepEqual(values("x-forwarded-for"), []);
  assert.deepEqual(values("x-forwarded-proto"), ["http"]);
  assert.equal(
    response.headers.get("strict-transport-security"),
    "max-age=31536000",
  );
  assert.equal(response.headers.get("x-frame-options"), "DENY");
  assert.equal(response.headers.get("server"), null);
  assert.equal(response.headers.get("via"), null);
  assert.equal(response.headers.get("x-upstream"), "yes");
  assert.match(response.headers.get("x-request-id") ?? "", /./);
});

Deno.test("a rotated ${file:} token applies to the next requests without a reload, and never shows in logs or /routes", async () => {
  await using upstream = headerEcho();
  const secrets = await Deno.makeTempDir();
  // A Kubernetes projected volume: token -> ..data/token, ..data -> a dated directory.
  const mount = async (dated: string, token: string) => {
    await Deno.mkdir(join(secrets, dated));
    await Deno.writeTextFile(join(secrets, dated, "token"), `${token}\n`);
    await Deno.symlink(dated, join(secrets, "..data_tmp"));
    await Deno.rename(join(secrets, "..data_tmp"), join(secrets, "..data"));
  };
  await mount("..2026_01", "tok-first-4f1c");
  await Deno.symlink("..data/token", join(secrets, "token"));
  const tokenFile = join(secrets, "token");
  await using l = await startLegate({
    "svc.yaml": route(
      upstream.url,
      `request_headers:\n  set: { authorization: "Bearer \${file:${tokenFile}}" }\n`,
    ),
  });
  const config = l.legate.config;
  const authorization = async () => {
    const seen: [string, string][] = await (await fetch(
      `http://${l.address("svc")}/`,
    )).json();
    return seen.find(([n]) => n === "authorization")?.[1];
  };
  assert.equal(await authorization(), "Bearer tok-first-4f1c");

  await mount("..2026_02", "tok-second-9d2e");
  await waitFor(
    async () => await authorization() === "Bearer tok-second-9d2e",
    "the rotated token to be sent",
  );
  // Rewritten in place, too.
  await Deno.writeTextFile(
    join(secrets, "..2026_02", "token"),
    "tok-third-77aa",
  );
  await waitFor(
    async () => await authorization() === "Bearer tok-third-77aa",
    "the rewritten token to be sent",
  );
  // A token a header cannot carry is refused; the last one stays.
  await Deno.writeTextFile(
    join(secrets, "..2026_02", "token"),
    "tok-bad\r\nx: y",
  );
  await waitFor(
    () =>
      l.lines.some((line) =>
        line.includes("header value file holds a line break")
      ),
    "the refused token to be logged",
  );
  assert.equal(await authorization(), "Bearer tok-third-77aa");
  assert.equal(l.legate.config, config, "no reload happened");

  const admin = l.legate.admin.addr as Deno.NetAddr;
  const routes = await (await fetch(
    `http://127.0.0.1:${admin.port}/routes`,
  )).text();
  assert.match(routes, /authorization/);
  for (const text of [routes, ...l.lines]) {
    assert.doesNotMatch(text, /tok-(first|second|third|bad)/);
  }
  await Deno.remove(secrets, { recursive: true });
});

async function errorsOf(
  text: string,
  files: Record<string, string> = {},
): Promise<string[]> {
  const dir = await writeRoutes({ "svc.yaml": text });
  try {
    const result = await loadConfig(dir, {
      env: () => undefined,
      readFile: (path) => {
        if (path in files) return files[path]!;
        throw new Deno.errors.NotFound(path);
      },
    });
    return (result.errors ?? []).map((e) => e.message.replace(`${dir}/`, ""));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("header rules are checked at load time, with file:line:column, never showing a secret", async () => {
  const errors = await errorsOf(
    [
      "listen: 127.0.0.1:15001",
      "upstreams: [http://127.0.0.1:8080]",
      "request_headers:",
      '  set: { "bad name": x, x-crlf: "a\\r\\nb", transfer-encoding: chunked, traceparent: x }',
      "  add: { host: a, x-token: '${file:/run/token}' }",
      "  remove: [x-a, proxy-authorization]",
      "response_headers:",
      "  set: { x-a: 1, x-b: ok }",
      "  remove: [x-b]",
      "rewrite_redirects: sometimes",
      "",
    ].join("\n"),
    { "/run/token": "sec-ret-value\nsecond line\n" },
  );
  assert.deepEqual(errors, [
    'svc.yaml:4:33: request_headers.set.x-crlf: "a\\r\\nb" is not a header value: it holds a control character (CR, LF, NUL and the like) or a character above U+00FF',
    'svc.yaml:5:28: request_headers.add.x-token: "${file:/run/token}" is not a header value: it holds a control character (CR, LF, NUL and the like) or a character above U+00FF',
    "svc.yaml:8:15: response_headers.set.x-a: expected a string, got 1",
    'svc.yaml:10:20: rewrite_redirects: expected a boolean, got "sometimes"',
  ]);
  // Names are checked once the values are.
  const names = await errorsOf(
    [
      "listen: 127.0.0.1:15001",
      "upstreams: [http://127.0.0.1:8080]",
      "request_headers:",
      '  set: { "bad name": x, transfer-encoding: chunked, traceparent: x }',
      "  add: { host: a }",
      "  remove: [x-a, Proxy-Authorization]",
      "response_headers:",
      "  set: { x-b: ok }",
      "  remove: [X-B]",
      "",
    ].join("\n"),
  );
  assert.deepEqual(names, [
    `svc.yaml:4:22: request_headers.set.bad name: "bad name" is not a header name (use letters, digits and !#$%&'*+.^_\`|~-)`,
    'svc.yaml:4:44: request_headers.set.transfer-encoding: "transfer-encoding" belongs to the connection, not to the message: legate manages it',
    'svc.yaml:4:66: request_headers.set.traceparent: "traceparent" is set by legate on every request (tracing and request IDs): rules cannot change it',
    `svc.yaml:5:16: request_headers.add.host: "host" can only be set (to send another Host than the upstream's authority)`,
    'svc.yaml:6:17: request_headers.remove[1]: "Proxy-Authorization" belongs to the connection, not to the message: legate manages it',
    'svc.yaml:8:15: response_headers.set.x-b: "x-b" is also in response_headers.remove: name each header in one place',
  ]);
  const tcp = await errorsOf(
    "listen: 127.0.0.1:15001\nupstreams: [tcp://127.0.0.1:6379]\nrequest_headers: { remove: [x-a] }\n",
  );
  assert.deepEqual(tcp, [
    "svc.yaml:3:18: request_headers: applies to HTTP services only; this service is tcp",
  ]);
});

Deno.test("rewrites Location and Content-Location that point at the upstream, with the stripped prefix", async () => {
  let self = "";
  await using upstream = startServer((req) => {
    const path = new URL(req.url).pathname;
    const location: Record<string, string> = {
      "/absolute": `${self}/next?x=1#top`,
      "/by-name": `http://localhost:${new URL(self).port}/named`,
      "/root": self,
      "/relative": "/login",
      "/sibling": "sibling",
      "/other": "https://accounts.example.com/login",
      "/network-path": `//${new URL(self).host}/np`,
    };
    const headers = new Headers();
    if (path === "/content") {
      headers.set("content-location", `${self}/items/1`);
      return new Response("item", { headers });
    }
    headers.set("location", location[path] ?? "/");
    return new Response(null, { status: 302, headers });
  });
  self = upstream.url;
  await using l = await startLegate({
    "app.yaml": route(
      `http://localhost:${upstream.port}`,
      "match: { path_prefix: /app }\nstrip_prefix: true\n",
    ),
    "raw.yaml": route(upstream.url, "rewrite_redirects: false\n"),
  });
  const client = `http://${l.address("app")}`;
  const location = async (base: string, path: string) => {
    const response = await fetch(`${base}${path}`, { redirect: "manual" });
    await response.body?.cancel();
    return response.headers.get("location") ??
      response.headers.get("content-location");
  };
  assert.equal(
    await location(client, "/app/absolute"),
    `${client}/app/next?x=1#top`,
  );
  assert.equal(await location(client, "/app/by-name"), `${client}/app/named`);
  assert.equal(await location(client, "/app/root"), `${client}/app/`);
  assert.equal(await location(client, "/app/relative"), "/app/login");
  assert.equal(await location(client, "/app/sibling"), "sibling");
  assert.equal(
    await location(client, "/app/other"),
    "https://accounts.example.com/login",
  );
  assert.equal(
    await location(client, "/app/network-path"),
    `//${l.address("app")}/app/np`,
  );
  assert.equal(
    await location(client, "/app/content"),
    `${client}/app/items/1`,
  );
  const raw = `http://${l.address("raw")}`;
  assert.equal(await location(raw, "/absolute"), `${self}/next?x=1#top`);
  assert.equal(await location(raw, "/relative"), "/login");
});

Deno.test("a reload changes header rules; a file no rule reads any more is let go", async () => {
  await using upstream = headerEcho();
  const secrets = await Deno.makeTempDir();
  const first = join(secrets, "first");
  const second = join(secrets, "second");
  await Deno.writeTextFile(first, "alpha-1");
  await Deno.writeTextFile(second, "beta-1");
  const file = (path: string) =>
    route(
      upstream.url,
      `request_headers:\n  set: { x-key: "\${file:${path}}" }\n`,
    );
  await using l = await startLegate({ "svc.yaml": file(first) });
  const key = async () => {
    const seen: [string, string][] = await (await fetch(
      `http://${l.address("svc")}/`,
    )).json();
    return seen.find(([n]) => n === "x-key")?.[1];
  };
  assert.equal(await key(), "alpha-1");
  await Deno.writeTextFile(
    join(l.legate.config.routesDir, "svc.yaml"),
    file(second),
  );
  assert.equal((await l.legate.reload("test")).outcome, "applied");
  assert.equal(await key(), "beta-1");
  // The first file is no longer read: changing it changes nothing, and
  // removing it is no error.
  await Deno.writeTextFile(first, "alpha-2");
  await Deno.writeTextFile(second, "beta-2");
  await waitFor(
    async () => await key() === "beta-2",
    "the second file's change",
  );
  assert.ok(!l.lines.some((line) => line.includes(first)));
  await Deno.remove(secrets, { recursive: true });
});

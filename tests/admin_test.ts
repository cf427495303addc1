import assert from "node:assert/strict";
import { type AdminState, createAdminHandler } from "../src/admin/admin.ts";
import { Legate } from "../mod.ts";
import { memoryLogger, rawHttp, writeRoutes } from "./_helpers.ts";

const PATHS = [
  "/healthz",
  "/readyz",
  "/metrics",
  "/routes",
  "/config/errors",
  "/reload",
  "/nowhere",
];

/** The handler on a state that counts reloads. */
function handlerCountingReloads() {
  const reloads = { count: 0 };
  const state: AdminState = {
    ready: () => true,
    routes: () => ({ listeners: [] }),
    upstreams: () => ({ services: [] }),
    configErrors: () => ({ errors: [] }),
    reload: () => {
      reloads.count++;
      return Promise.resolve({ ok: true, result: { outcome: "unchanged" } });
    },
    metrics: () => "",
    status: () => ({ version: "0.0.0", uptime_seconds: 0 }),
  };
  return { handler: createAdminHandler(state), reloads };
}

/** Status and body of a response. */
async function statusAndBody(response: Response | Promise<Response>) {
  const answered = await response;
  const body = await answered.text();
  return { status: answered.status, body };
}

Deno.test("the admin API refuses a request whose Host is a DNS name, on every path", async () => {
  // DNS rebinding: a page on evil.example points its name at 127.0.0.1 and
  // reads the admin API as its own origin; its requests carry its Host.
  const { handler, reloads } = handlerCountingReloads();
  for (const path of PATHS) {
    for (
      const host of [
        "evil.example",
        "evil.example:9901",
        "localhost.evil.example",
        "127.0.0.1.nip.io:9901",
        "127.0.0.1@evil.example",
      ]
    ) {
      for (const method of ["GET", "POST"]) {
        const { status: code, body } = await statusAndBody(handler(
          new Request(`http://127.0.0.1:9901${path}`, {
            method,
            headers: { host },
          }),
        ));
        assert.equal(code, 403, `${method} ${path} with Host ${host}`);
        assert.match(body, /^forbidden: Host "[^\n]+" is not an IP address/);
        assert.ok(body.endsWith("\n") && !body.slice(0, -1).includes("\n"));
      }
    }
  }
  assert.equal(reloads.count, 0);
});

Deno.test("the admin API checks the host in the request URL too: HTTP/2 and absolute-form requests", async () => {
  const { handler } = handlerCountingReloads();
  // HTTP/2's :authority reaches the handler only as the URL's host.
  assert.equal(
    (await handler(new Request("http://evil.example:9901/routes"))).status,
    403,
  );
  // `GET http://evil.example/routes HTTP/1.1` with a harmless Host header.
  assert.equal(
    (await handler(
      new Request("http://evil.example/routes", {
        headers: { host: "127.0.0.1:9901" },
      }),
    )).status,
    403,
  );
});

Deno.test("the admin API answers Hosts that are IP addresses or localhost, and requests without Host; other names get 403", async () => {
  const { handler } = handlerCountingReloads();
  const healthz = async (host: string | undefined) =>
    await statusAndBody(handler(
      new Request("http://127.0.0.1:9901/healthz", {
        headers: host === undefined ? {} : { host },
      }),
    ));
  for (
    const host of [
      "127.0.0.1",
      "127.0.0.1:9901",
      "10.244.1.17:9901",
      "[::1]",
      "[::1]:9901",
      "[fd00::17]:9901",
      "[::ffff:127.0.0.1]:9901",
      "localhost",
      "LOCALHOST:9901",
      "legate.localhost:9901",
    ]
  ) {
    assert.deepEqual(await healthz(host), { status: 200, body: "ok\n" }, host);
  }
  // Names that only look like addresses, and malformed ones.
  for (
    const host of [
      "127.0.0.256",
      "127.0.0.01",
      "127.1",
      "127.0.0.1.",
      "[::1",
      "[evil.example]",
      "localhost:",
      "localhost:99999",
      "localhost.:9901",
    ]
  ) {
    assert.equal((await healthz(host)).status, 403, host);
  }
  // What Deno makes of an HTTP/1.0 request without Host: on TCP, and on a
  // Unix socket, where it puts the socket path in the URL.
  for (
    const url of [
      "http://localhost:9901/healthz",
      "http+unix://%2Frun%2Flegate%2Fadmin.sock/healthz",
    ]
  ) {
    assert.equal((await handler(new Request(url))).status, 200, url);
  }
  // A Unix socket takes any name: no browser can reach it.
  const unix = new Request("http+unix://legate/healthz", {
    headers: { host: "legate" },
  });
  assert.equal((await handler(unix)).status, 200);
});

Deno.test("the admin API takes a write only without Origin or from its own origin, never from another site", async () => {
  const { handler, reloads } = handlerCountingReloads();
  const cases: [Record<string, string>, RegExp][] = [
    [{ origin: "http://evil.example" }, /Origin "http:\/\/evil\.example"/],
    [{ origin: "null" }, /Origin "null"/],
    // Another port is another origin: any local web app, say.
    [{ origin: "http://127.0.0.1:3000" }, /is not "127\.0\.0\.1:9901"/],
    [{ origin: "http://localhost:9901" }, /is not "127\.0\.0\.1:9901"/],
    [{ origin: "file://" }, /Origin "file:\/\/"/],
    [{ "sec-fetch-site": "cross-site" }, /Sec-Fetch-Site is "cross-site"/],
    [
      { origin: "http://127.0.0.1:9901", "sec-fetch-site": "cross-site" },
      /Sec-Fetch-Site/,
    ],
  ];
  for (const method of ["POST", "PUT", "DELETE"]) {
    for (const [headers, reason] of cases) {
      const { status: code, body } = await statusAndBody(handler(
        new Request("http://127.0.0.1:9901/reload", {
          method,
          headers: { host: "127.0.0.1:9901", ...headers },
        }),
      ));
      assert.equal(code, 403, `${method} ${JSON.stringify(headers)}`);
      assert.match(body, new RegExp(`^forbidden: cross-site ${method}: `));
      assert.match(body, reason);
    }
  }
  assert.equal(reloads.count, 0);
  const writes: Record<string, string>[] = [
    { host: "127.0.0.1:9901" }, // curl
    { host: "127.0.0.1:9901", origin: "http://127.0.0.1:9901" },
    { host: "[::1]:9901", origin: "http://[::1]:9901" },
    { host: "LOCALHOST:9901", origin: "http://localhost:9901" },
    // Browsers leave the default port out of both; a client may not.
    { host: "localhost:80", origin: "http://localhost" },
    {
      host: "localhost:9901",
      origin: "http://localhost:9901",
      "sec-fetch-site": "same-origin",
    },
  ];
  for (const headers of writes) {
    const response = await handler(
      new Request("http://127.0.0.1:9901/reload", { method: "POST", headers }),
    );
    assert.equal(response.status, 200, JSON.stringify(headers));
    await response.body?.cancel();
  }
  assert.equal(reloads.count, writes.length);
  // A read from another site is the browser's to withhold from its page.
  for (const method of ["GET", "HEAD"]) {
    const response = await handler(
      new Request("http://127.0.0.1:9901/routes", {
        method,
        headers: {
          host: "127.0.0.1:9901",
          origin: "http://evil.example",
          "sec-fetch-site": "cross-site",
        },
      }),
    );
    assert.equal(response.status, 200, method);
    await response.body?.cancel();
  }
});

/** legate in-process without a file watcher, so that only the test reloads it. */
async function startAdmin() {
  const routesDir = await writeRoutes({
    "db.yaml": "listen: 127.0.0.1:0\nupstreams: [tcp://127.0.0.1:9]\n",
  });
  const legate = await Legate.start({
    routesDir,
    admin: "127.0.0.1:0",
    log: memoryLogger().log,
    watch: false,
  });
  const { port } = legate.admin.addr as Deno.NetAddr;
  return {
    address: `127.0.0.1:${port}`,
    port,
    /** Status line and body of one raw HTTP/1.1 request. */
    async send(head: string): Promise<{ status: number; body: string }> {
      const response = await rawHttp(
        `127.0.0.1:${port}`,
        `${head}\r\nconnection: close\r\n\r\n`,
      );
      return parseResponse(response);
    },
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
      await Deno.remove(routesDir, { recursive: true });
    },
  };
}

function parseResponse(response: string): { status: number; body: string } {
  const match = /^HTTP\/1\.[01] (\d{3}) /.exec(response);
  assert.ok(match, `not an HTTP response: ${JSON.stringify(response)}`);
  return {
    status: Number(match[1]),
    body: response.slice(response.indexOf("\r\n\r\n") + 4),
  };
}

function successfulReloads(metrics: string): number {
  const line = /^legate_config_reloads_total\{result="success"\} (\d+)$/m;
  const match = line.exec(metrics);
  assert.ok(match, `no count of successful reloads in: ${metrics}`);
  return Number(match[1]);
}

Deno.test("the admin listener answers IP addresses, localhost and no Host, and a DNS-rebinding Host gets 403 and no routes", async () => {
  await using admin = await startAdmin();
  for (
    const host of [
      admin.address,
      `[::1]:${admin.port}`,
      `localhost:${admin.port}`,
      "localhost",
      `legate.localhost:${admin.port}`,
    ]
  ) {
    assert.deepEqual(
      await admin.send(`GET /healthz HTTP/1.1\r\nhost: ${host}`),
      { status: 200, body: "ok\n" },
      host,
    );
  }
  assert.deepEqual(
    parseResponse(
      await rawHttp(admin.address, "GET /healthz HTTP/1.0\r\n\r\n"),
    ),
    { status: 200, body: "ok\n" },
  );
  const refused = (name: string) =>
    `forbidden: Host "${name}" is not an IP address, localhost or *.localhost: the admin API answers no other names, against DNS rebinding\n`;
  for (const path of ["/routes", "/metrics", "/config/errors", "/healthz"]) {
    assert.deepEqual(
      await admin.send(
        `GET ${path} HTTP/1.1\r\nhost: evil.example:${admin.port}`,
      ),
      { status: 403, body: refused(`evil.example:${admin.port}`) },
      path,
    );
  }
  // Absolute form: the name is in the request target, not in Host.
  assert.deepEqual(
    await admin.send(
      `GET http://evil.example/routes HTTP/1.1\r\nhost: ${admin.address}`,
    ),
    { status: 403, body: refused("evil.example") },
  );
  // Hosts that are not even a URL's host are refused, not a 500.
  for (const host of ["a b", "[zz", `127.0.0.1:99999`]) {
    const { status } = await admin.send(
      `GET /routes HTTP/1.1\r\nhost: ${host}`,
    );
    assert.equal(status, 403, host);
  }
  // HTTP/2: the name travels as :authority, and Deno has no Host header.
  const curl = await new Deno.Command("curl", {
    args: [
      "--silent",
      "--http2-prior-knowledge",
      "--header",
      `host: evil.example:${admin.port}`,
      "--write-out",
      "%{http_version} %{http_code}",
      "--output",
      "/dev/null",
      `http://${admin.address}/routes`,
    ],
  }).output();
  assert.equal(new TextDecoder().decode(curl.stdout), "2 403");
});

Deno.test("the admin listener refuses a cross-site POST /reload and reloads nothing, but takes curl's", async () => {
  await using admin = await startAdmin();
  const get = (path: string) =>
    admin.send(`GET ${path} HTTP/1.1\r\nhost: ${admin.address}`);
  const reloads = async () => successfulReloads((await get("/metrics")).body);
  const before = await reloads();
  const errorsBefore = await get("/config/errors");
  for (
    const header of [
      "origin: http://evil.example",
      `origin: http://evil.example:${admin.port}`,
      "sec-fetch-site: cross-site",
    ]
  ) {
    const { status, body } = await admin.send(
      `POST /reload HTTP/1.1\r\nhost: ${admin.address}\r\n${header}\r\ncontent-length: 0`,
    );
    assert.equal(status, 403, header);
    assert.match(body, /^forbidden: cross-site POST: /);
  }
  assert.equal(await reloads(), before);
  assert.deepEqual(await get("/config/errors"), errorsBefore);
  // The same request from the admin API's own origin reloads...
  const { status } = await admin.send(
    `POST /reload HTTP/1.1\r\nhost: ${admin.address}\r\norigin: http://${admin.address}\r\ncontent-length: 0`,
  );
  assert.equal(status, 200);
  assert.equal(await reloads(), before + 1);
  // ...and so does curl, which sends no Origin.
  const curl = await new Deno.Command("curl", {
    args: [
      "--silent",
      "--request",
      "POST",
      "--write-out",
      "%{http_code}",
      "--output",
      "/dev/null",
      `http://${admin.address}/reload`,
    ],
  }).output();
  assert.equal(new TextDecoder().decode(curl.stdout), "200");
  assert.equal(await reloads(), before + 2);
});

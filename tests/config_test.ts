import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig, RoutesDirectoryError } from "../mod.ts";
import { routeSchemaText } from "../scripts/generate_schema.ts";
import { ROOT, writeRoutes } from "./_helpers.ts";

const noReferences = {
  env: (name: string) =>
    ({ USERS_PORT: "8080", EMPTY: "" } as Record<string, string>)[name],
  readFile: (path: string) => {
    if (path === "/run/secrets/token") return "s3cret\n";
    throw new Deno.errors.NotFound(path);
  },
};

async function mkfifo(path: string): Promise<void> {
  const made = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(made.success, new TextDecoder().decode(made.stderr));
}

async function errorsOf(files: Record<string, string>): Promise<string[]> {
  const dir = await writeRoutes(files);
  try {
    const result = await loadConfig(dir, noReferences);
    return (result.errors ?? []).map((e) => e.message.replace(`${dir}/`, ""));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("reports every error of every file at once, each with file:line:column", async () => {
  const errors = await errorsOf({
    "users.yaml": [
      "listen: 127.0.0.1:15001",
      "upstreams:",
      "  - http://users-1:8080",
      "  - htp://x",
      "  - url: http://users-2:8080",
      "    wieght: 3",
      "timeouts: { conect: 2s, idle: 5 seconds }",
      "cache: 3",
      "",
    ].join("\n"),
    "broken.yaml": "listen: [1\n",
    "types.yml":
      "listen: 15001\nupstreams: http://a\nstrip_prefix: yes please\n",
  });
  assert.deepEqual(errors, [
    "broken.yaml:2:1: Flow sequence in block collection must be sufficiently indented and end with a ]",
    "types.yml:1:9: listen: expected a string, got 15001",
    'types.yml:2:12: upstreams: expected an array, got "http://a"',
    'types.yml:3:15: strip_prefix: expected a boolean, got "yes please"',
    'users.yaml:4:5: upstreams[1]: "htp://x" is not a supported URL (use http://, https://, tcp:// or tls:// with host and port and no path, their +srv forms with an SRV name, unix:/path, or http+unix:/path and https+unix:/path)',
    'users.yaml:6:5: upstreams[2]: unknown key "wieght" (did you mean "weight"?)',
    'users.yaml:7:13: timeouts: unknown key "conect" (did you mean "connect"?)',
    'users.yaml:7:31: timeouts.idle: "5 seconds" is not a duration (use a number and a unit: 250ms, 2s, 5m, 1h)',
    'users.yaml:8:1: unknown key "cache" (valid keys: name, listen, mode, tls, upstream_tls, protocol, upstreams, match, strip_prefix, preserve_host, timeouts, balance, hash_on, health_check, outlier, retries, limits, dns_refresh, request_headers, response_headers, rewrite_redirects, websocket)',
  ]);
});

Deno.test("names missing keys, empty files, bad listen addresses and misplaced HTTP keys", async () => {
  const errors = await errorsOf({
    "a-empty.yaml": "# nothing yet\n",
    "b-missing.yaml": "upstreams: [http://a]\n",
    "c-listen.yaml": "listen: localhost\nupstreams: [http://a]\n",
    "d-tcp.yaml":
      "listen: :6379\nupstreams: [tcp://redis:6379]\nmatch: { host: a }\ntimeouts: { request: 1s }\n",
    "e-mixed.yaml": "listen: :1\nupstreams: [http://a, tcp://b:1]\n",
    "f-protocol.yaml": "listen: :2\nprotocol: http\nupstreams: [tcp://b:1]\n",
    "g-strip.yaml": "listen: :3\nupstreams: [http://a]\nstrip_prefix: true\n",
    "h-two.yaml": "listen: :4\nupstreams: [http://a]\n---\nlisten: :5\n",
    "i-list.yaml": "- listen: :6\n",
    "j-weight.yaml": "listen: :7\nupstreams: [{ url: http://a, weight: 0 }]\n",
  });
  assert.deepEqual(errors, [
    "a-empty.yaml:1:1: file is empty (a route file needs at least listen and upstreams)",
    'b-missing.yaml:1:1: missing required key "listen"',
    'c-listen.yaml:1:9: listen: "localhost" is not a listen address (use host:port, :port or unix:/path, e.g. 127.0.0.1:15001)',
    "d-tcp.yaml:3:8: match: applies to HTTP services only; this service is tcp",
    "d-tcp.yaml:4:22: timeouts.request: applies to HTTP services only; TCP connections use timeouts.idle",
    "e-mixed.yaml:2:12: upstreams: mixes HTTP (http://, https://, http+unix:) and TCP (tcp://, tls://, unix:) upstreams: a service speaks one protocol",
    'f-protocol.yaml:3:13: upstreams[0]: "tcp://b:1" is not an HTTP upstream (use http:// or https://, their +srv forms, or http+unix:)',
    "g-strip.yaml:3:15: strip_prefix: needs match.path_prefix: there is no prefix to strip",
    "h-two.yaml:3:1: a route file holds one service: remove the second YAML document (after ---) or move it to its own file",
    "i-list.yaml:1:1: a route file is a mapping of keys such as listen: and upstreams:",
    "j-weight.yaml:2:38: upstreams[0].weight: expected an integer from 1 to 1000, got 0",
  ]);
});

Deno.test("reports conflicts between files naming both files", async () => {
  const errors = await errorsOf({
    "a.yaml": "listen: 127.0.0.1:7001\nupstreams: [tcp://r:1]\n",
    "b.yaml": "listen: 127.0.0.1:7001\nupstreams: [tcp://r:2]\n",
    "c.yaml": "listen: 127.0.0.1:7001\nupstreams: [http://h]\n",
    "d.yaml":
      "listen: 127.0.0.1:7002\nupstreams: [http://h]\nmatch: { path_prefix: /x }\n",
    "e.yaml":
      "listen: 127.0.0.1:7002\nupstreams: [http://h]\nmatch: { path_prefix: /x/ }\n",
    "f.yaml": "name: a\nlisten: 127.0.0.1:7003\nupstreams: [http://h]\n",
    "g.yaml": "listen: :7002\nupstreams: [http://h]\n",
  });
  assert.equal(errors.length, 5, errors.join("\n"));
  const patterns = [
    /^b\.yaml:1:9: listen: "127\.0\.0\.1:7001" is already the listener of TCP service "a" in \S*\/a\.yaml \(a TCP listener carries one service: use another port\)$/,
    /^c\.yaml:1:9: listen: "127\.0\.0\.1:7001" is already the TCP listener of "a" in \S*\/a\.yaml \(HTTP and TCP services cannot share a listener: use another port\)$/,
    /^e\.yaml:3:8: match: any host with path prefix \/x on "127\.0\.0\.1:7002" is already routed to "d" in \S*\/d\.yaml \(give one of them another match\.host or match\.path_prefix\)$/,
    /^f\.yaml:1:7: service name "a" is already used by \S*\/a\.yaml$/,
    /^g\.yaml:1:9: listen: "0\.0\.0\.0:7002" overlaps "127\.0\.0\.1:7002" of \S*\/d\.yaml: one of them listens on every interface of the same port/,
  ];
  patterns.forEach((pattern, i) => assert.match(errors[i]!, pattern));
});

Deno.test("resolves ${VAR}, ${VAR:-default} and ${file:...}; a missing reference is an error", async () => {
  const dir = await writeRoutes({
    "users.yaml":
      "listen: 127.0.0.1:${LISTEN_PORT:-15001}\nupstreams: ['http://users:${USERS_PORT}']\n",
    "token.yaml":
      "name: tok-${file:/run/secrets/token}\nlisten: :2\nupstreams: ['http://a:$${x}']\n",
  });
  const result = await loadConfig(dir, noReferences);
  assert.equal(
    result.errors?.[0]?.detail,
    '"http://a:${x}" is not a supported URL (use http://, https://, tcp:// or tls:// with host and port and no path, their +srv forms with an SRV name, unix:/path, or http+unix:/path and https+unix:/path)',
  );
  await Deno.writeTextFile(
    join(dir, "token.yaml"),
    "name: tok-${file:/run/secrets/token}\nlisten: :2\nupstreams: [http://a]\n",
  );
  const ok = await loadConfig(dir, noReferences);
  assert.deepEqual(
    ok.config?.services.map((s) => [s.name, s.upstreams[0]!.url, s.listen]),
    [
      ["tok-s3cret", "http://a", {
        transport: "tcp",
        hostname: "0.0.0.0",
        port: 2,
      }],
      ["users", "http://users:8080", {
        transport: "tcp",
        hostname: "127.0.0.1",
        port: 15001,
      }],
    ],
  );
  await Deno.remove(dir, { recursive: true });

  const errors = await errorsOf({
    "x.yaml":
      "listen: ${NOT_SET}\nupstreams: [http://a]\nname: ${file:/missing}\nmatch: { host: '${bad name}' }\n",
  });
  assert.deepEqual(
    await errorsOf({ "y.yaml": "listen: :1\nupstreams: [http://a:${PORT}]\n" }),
    [
      "y.yaml:2:23: Missing , or : between flow sequence items (quote values that hold ${...} inside [ ] or { }: '${NAME}')",
    ],
  );
  assert.deepEqual(errors, [
    'x.yaml:1:9: listen: environment variable "NOT_SET" is not set (set it, or give a default: ${NOT_SET:-value})',
    'x.yaml:3:7: name: cannot read "${file:/missing}": no such file',
    'x.yaml:4:16: match.host: "${bad name}" is not a reference (use ${NAME}, ${NAME:-default} or ${file:/path}; write $${ for a literal ${)',
  ]);
});

Deno.test("upstream ports are 1 to 65535", async () => {
  const errors = await errorsOf({
    "a.yaml": "listen: :1\nupstreams: [http://a:0, http://a:65535]\n",
    "b.yaml": "listen: :2\nupstreams: [{ url: 'tcp://b:70000' }]\n",
    "c.yaml": "listen: :3\nupstreams: [https://c:99999, https://c:1]\n",
  });
  assert.deepEqual(errors, [
    'a.yaml:2:13: upstreams[0]: "http://a:0": the port must be 1 to 65535',
    'b.yaml:2:20: upstreams[0].url: "tcp://b:70000": the port must be 1 to 65535',
    'c.yaml:2:13: upstreams[0]: "https://c:99999": the port must be 1 to 65535',
  ]);
});

Deno.test("a file name that is not a service name needs name:", async () => {
  const route = "listen: :1\nupstreams: [http://a]\n";
  const errors = await errorsOf({ "bad name!.yaml": route });
  assert.deepEqual(errors, [
    `bad name!.yaml:1:1: file name "bad name!.yaml" is not a valid service name (use letters, digits, '.', '_' and '-', starting with a letter or digit): rename the file, or set name:`,
  ]);
  const dir = await writeRoutes({
    "bad name!.yaml": `name: good-name\n${route}`,
    "Users.v2.yaml": "listen: :2\nupstreams: [http://a]\n",
  });
  const { config } = await loadConfig(dir, noReferences);
  assert.deepEqual(config?.services.map((s) => s.name), [
    "Users.v2",
    "good-name",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reports the problems inside an upstream mapping, not that it is no upstream", async () => {
  const errors = await errorsOf({
    "a.yaml": "listen: :1\nupstreams: [{ url: http://a, weight: '3' }]\n",
    "b.yaml": "listen: :2\nupstreams: [{ url: http://b, weight: 1.5 }]\n",
    "c.yaml":
      "listen: :3\nupstreams:\n  - url: 5\n    wieght: 2\n    weight: 2000\n",
    "d.yaml": "listen: :4\nupstreams: [{ weight: 2 }]\n",
    "e.yaml": "listen: :5\nupstreams: [5, [http://e]]\n",
  });
  assert.deepEqual(errors, [
    'a.yaml:2:38: upstreams[0].weight: expected an integer from 1 to 1000, got "3"',
    "b.yaml:2:38: upstreams[0].weight: expected an integer from 1 to 1000, got 1.5",
    "c.yaml:3:10: upstreams[0].url: expected a string, got 5",
    'c.yaml:4:5: upstreams[0]: unknown key "wieght" (did you mean "weight"?)',
    "c.yaml:5:13: upstreams[0].weight: expected an integer from 1 to 1000, got 2000",
    'd.yaml:2:13: upstreams[0]: missing required key "url"',
    "e.yaml:2:13: upstreams[0]: 5 is not an upstream (use a URL string, or a mapping with url: and weight:)",
    "e.yaml:2:16: upstreams[1]: a list is not an upstream (use a URL string, or a mapping with url: and weight:)",
  ]);
});

Deno.test("refuses a route file over 1 MiB without reading it, and reads one of exactly 1 MiB", async () => {
  const route = "listen: :1\nupstreams: [http://a]\n";
  const padded = (size: number) =>
    route + "#".repeat(size - route.length - 1) + "\n";
  const dir = await writeRoutes({
    "at-limit.yaml": padded(1024 * 1024),
    "over.yaml": padded(1024 * 1024 + 1).replace(":1", ":2"),
  });
  // Sparse: 64 MiB on paper, nothing on disk; reading it would take seconds.
  const big = await Deno.open(join(dir, "big.yaml"), {
    create: true,
    write: true,
  });
  await big.truncate(64 * 1024 * 1024);
  big.close();
  const result = await loadConfig(dir, noReferences);
  assert.deepEqual(
    result.errors?.map((e) => e.message.replace(`${dir}/`, "")),
    [
      "big.yaml:1:1: file is 67108864 bytes, over the limit of 1048576 bytes (1 MiB, all a Kubernetes ConfigMap holds) for a route file: keep one service per file",
      "over.yaml:1:1: file is 1048577 bytes, over the limit of 1048576 bytes (1 MiB, all a Kubernetes ConfigMap holds) for a route file: keep one service per file",
    ],
  );
  await Deno.remove(join(dir, "big.yaml"));
  await Deno.remove(join(dir, "over.yaml"));
  const { config } = await loadConfig(dir, noReferences);
  assert.deepEqual(config?.services.map((s) => s.name), ["at-limit"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test(
  "a ${file:...} reference to a FIFO is an error, not a load that blocks for ever",
  {
    ignore: Deno.build.os === "windows",
  },
  async () => {
    const dir = await writeRoutes({
      "svc.yaml": `listen: :1\nupstreams: ['http://a:\${file:FIFO}']\n`,
    });
    const fifo = join(dir, "port.fifo");
    await mkfifo(fifo);
    const text = await Deno.readTextFile(join(dir, "svc.yaml"));
    await Deno.writeTextFile(join(dir, "svc.yaml"), text.replace("FIFO", fifo));
    // The default references: the real file system.
    const result = await loadConfig(dir);
    assert.deepEqual(result.errors?.map((e) => e.detail), [
      `cannot read "\${file:${fifo}}": it is not a regular file`,
    ]);
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test("applies documented defaults", async () => {
  const dir = await writeRoutes({
    "web.yaml": "listen: :8080\nupstreams: [https://web.internal]\n",
    "db.yaml":
      "listen: unix:/tmp/legate-db.sock\nupstreams: [unix:/run/db.sock]\n",
  });
  const { config } = await loadConfig(dir, noReferences);
  const [db, web] = config!.services;
  assert.deepEqual(web!.timeouts, {
    connect: 5_000,
    request: 60_000,
    idle: 60_000,
  });
  assert.equal(web!.protocol, "http");
  assert.deepEqual(web!.upstreams[0], {
    url: "https://web.internal",
    discovery: "dns",
    address: { transport: "tcp", hostname: "web.internal", port: 443 },
    tls: true,
    authority: "web.internal",
    weight: 1,
  });
  assert.deepEqual(web!.match, { pathPrefix: "/" });
  assert.equal(web!.stripPrefix, false);
  assert.equal(web!.preserveHost, false);
  assert.equal(db!.protocol, "tcp");
  assert.equal(db!.timeouts.idle, 3_600_000);
  assert.deepEqual(db!.listen, {
    transport: "unix",
    path: "/tmp/legate-db.sock",
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("follows symlinked files, skips hidden entries and what is not a regular file, reads each file of a ConfigMap mount once", async () => {
  const dir = await Deno.makeTempDir();
  // The layout kubelet writes for a ConfigMap volume.
  await Deno.mkdir(join(dir, "..2026_11_26_00_00_00.000000001"));
  await Deno.writeTextFile(
    join(dir, "..2026_11_26_00_00_00.000000001", "users.yaml"),
    "listen: :15001\nupstreams: [http://users]\n",
  );
  await Deno.symlink("..2026_11_26_00_00_00.000000001", join(dir, "..data"));
  await Deno.symlink("..data/users.yaml", join(dir, "users.yaml"));
  await Deno.writeTextFile(join(dir, ".hidden.yaml"), "not: valid\n");
  await Deno.writeTextFile(join(dir, "README.md"), "not a route\n");
  await Deno.symlink("does-not-exist.yaml", join(dir, "dangling.yaml"));
  await Deno.mkdir(join(dir, "directory.yaml"));
  // Opening a FIFO would wait for a writer for ever.
  if (Deno.build.os !== "windows") await mkfifo(join(dir, "fifo.yaml"));
  const { config, errors } = await loadConfig(dir, noReferences);
  assert.equal(errors, undefined);
  assert.deepEqual(config!.services.map((s) => s.name), ["users"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a missing directory, a file in its place, or one without route files is a RoutesDirectoryError", async () => {
  await assert.rejects(loadConfig("/nonexistent/routes"), (error: Error) => {
    assert.ok(error instanceof RoutesDirectoryError);
    assert.match(
      error.message,
      /^Routes directory "\/nonexistent\/routes" does not exist/,
    );
    return true;
  });
  const dir = await writeRoutes({ "notes.txt": "hello" });
  await assert.rejects(
    loadConfig(dir),
    /has no route files: add one \*\.yaml file per service/,
  );
  await assert.rejects(
    loadConfig(join(dir, "notes.txt")),
    /is not a directory/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the shipped JSON Schema matches the zod schema (run `deno task schema` when this fails)", async () => {
  const shipped = await Deno.readTextFile(
    join(ROOT, "schema/route.schema.json"),
  );
  assert.equal(shipped, routeSchemaText());
});

Deno.test("the shipped route files are valid and point editors at the schema", async () => {
  const { config, errors } = await loadConfig(join(ROOT, "routes"));
  assert.equal(errors, undefined);
  assert.ok(config!.services.length >= 2);
  for await (const entry of Deno.readDir(join(ROOT, "routes"))) {
    const text = await Deno.readTextFile(join(ROOT, "routes", entry.name));
    assert.ok(
      text.startsWith(
        "# yaml-language-server: $schema=../schema/route.schema.json\n",
      ),
      `${entry.name} starts with the schema comment`,
    );
  }
});

Deno.test("checks the websocket key: sizes, their range, unknown keys, TCP services", async () => {
  const errors = await errorsOf({
    "a.yaml":
      "listen: :8001\nupstreams: [http://a]\nwebsocket: { max_message: 16MB }\n",
    "b.yaml":
      "listen: :8002\nupstreams: [http://a]\nwebsocket: { max_message: 512B }\n",
    "c.yaml":
      "listen: :8003\nupstreams: [http://a]\nwebsocket:\n  max_message: 65MiB\n",
    "d.yaml":
      "listen: :8004\nupstreams: [http://a]\nwebsocket: { max_mesage: 1MiB }\n",
    "e.yaml": "listen: :8005\nupstreams: [tcp://a:1]\nwebsocket: {}\n",
    "f.yaml": "listen: :8006\nupstreams: [http://a]\nwebsocket: true\n",
    "g.yaml":
      "listen: :8007\nupstreams: [http://a]\nwebsocket: { max_message: 1KiB }\n",
  });
  assert.deepEqual(errors, [
    'a.yaml:3:27: websocket.max_message: "16MB" is not a size (use a whole number and a unit: 512KiB, 16MiB)',
    'b.yaml:3:27: websocket.max_message: "512B" is out of range: use 1KiB to 64MiB',
    'c.yaml:4:16: websocket.max_message: "65MiB" is out of range: use 1KiB to 64MiB',
    'd.yaml:3:14: websocket: unknown key "max_mesage" (did you mean "max_message"?)',
    "e.yaml:3:12: websocket: applies to HTTP services only; this service is tcp",
    "f.yaml:3:12: websocket: expected an object, got true",
  ]);
});

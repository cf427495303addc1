import assert from "node:assert/strict";
import { join } from "node:path";
import { Legate } from "../mod.ts";
import {
  echoBytes,
  freePort,
  memoryLogger,
  spawnLegate,
  startServer,
  startTcpServer,
  waitFor,
} from "./_helpers.ts";

/** Legate on a routes directory the test edits, with the file watcher on. */
async function startWatched(dir: string) {
  const { log, lines } = memoryLogger();
  const legate = await Legate.start({
    routesDir: dir,
    admin: "127.0.0.1:0",
    log,
    drainTimeout: 2_000,
  });
  const admin = `http://127.0.0.1:${(legate.admin.addr as Deno.NetAddr).port}`;
  return {
    legate,
    lines,
    admin,
    address(name: string): string {
      const open = legate.listeners.find((o) =>
        o.plan.services.some((s) => s.name === name)
      );
      if (!open) throw new Error(`no listener for "${name}"`);
      const addr = open.listener.addr as Deno.NetAddr;
      return `${addr.hostname}:${addr.port}`;
    },
    count: (message: string) =>
      lines.filter((l) => JSON.parse(l).msg === message).length,
    async [Symbol.asyncDispose]() {
      await legate.shutdown(1_000);
    },
  };
}

function named(name: string): Deno.ServeHandler {
  return () => new Response(name);
}

async function body(url: string): Promise<string> {
  const response = await fetch(url);
  return await response.text();
}

const httpRoute = (listen: number, upstream: string) =>
  `listen: 127.0.0.1:${listen}\nupstreams: [${upstream}]\n`;

Deno.test("applies an in-place edit and a write-to-temp-then-rename edit", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  await using three = startServer(named("three"));
  const dir = await Deno.makeTempDir();
  const listen = freePort();
  const file = join(dir, "svc.yaml");
  await Deno.writeTextFile(file, httpRoute(listen, one.url));
  await using l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;
  assert.equal(await body(url), "one");

  await Deno.writeTextFile(file, httpRoute(listen, two.url));
  await waitFor(
    async () => await body(url) === "two",
    "the in-place edit to apply",
  );

  await Deno.writeTextFile(
    join(dir, ".svc.yaml.swp"),
    httpRoute(listen, three.url),
  );
  await Deno.rename(join(dir, ".svc.yaml.swp"), file);
  await waitFor(
    async () => await body(url) === "three",
    "the renamed file to apply",
  );
  assert.ok(l.count("routes reloaded") >= 2);
});

Deno.test("opens a listener for a new file and drains the listener of a removed one", async () => {
  await using upstream = startServer(named("up"));
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    join(dir, "a.yaml"),
    httpRoute(freePort(), upstream.url),
  );
  await using l = await startWatched(dir);
  const listen = freePort();
  await Deno.writeTextFile(
    join(dir, "b.yaml"),
    httpRoute(listen, upstream.url),
  );
  await waitFor(() => l.legate.listeners.length === 2, "the new listener");
  assert.equal(await body(`http://127.0.0.1:${listen}/`), "up");

  await Deno.remove(join(dir, "b.yaml"));
  await waitFor(
    () => l.legate.listeners.length === 1,
    "the listener to be removed",
  );
  await waitFor(
    () => l.count("listener drained") === 1,
    "the removed listener to drain",
  );
  await assert.rejects(fetch(`http://127.0.0.1:${listen}/`));
});

Deno.test("follows a symlinked route file whose target changes outside the directory", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  const elsewhere = await Deno.makeTempDir();
  const dir = await Deno.makeTempDir();
  const listen = freePort();
  const target = join(elsewhere, "svc.yaml");
  await Deno.writeTextFile(target, httpRoute(listen, one.url));
  await Deno.symlink(target, join(dir, "svc.yaml"));
  await using _l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;
  assert.equal(await body(url), "one");
  await Deno.writeTextFile(target, httpRoute(listen, two.url));
  await waitFor(
    async () => await body(url) === "two",
    "the target's edit to apply",
  );
});

Deno.test("applies a Kubernetes ConfigMap update: the atomic ..data swap", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  const dir = await Deno.makeTempDir();
  const listen = freePort();
  // What kubelet writes: a timestamped directory, ..data pointing at it, and
  // one symlink per key through ..data.
  const write = async (stamp: string, upstream: string) => {
    await Deno.mkdir(join(dir, stamp));
    await Deno.writeTextFile(
      join(dir, stamp, "svc.yaml"),
      httpRoute(listen, upstream),
    );
    await Deno.symlink(stamp, join(dir, "..data_tmp"));
    await Deno.rename(join(dir, "..data_tmp"), join(dir, "..data"));
  };
  await write("..2026_11_26_10_00_00.000000001", one.url);
  await Deno.symlink("..data/svc.yaml", join(dir, "svc.yaml"));
  await using l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;
  assert.equal(await body(url), "one");

  await write("..2026_11_26_10_05_00.000000002", two.url);
  await Deno.remove(join(dir, "..2026_11_26_10_00_00.000000001"), {
    recursive: true,
  });
  await waitFor(
    async () => await body(url) === "two",
    "the ConfigMap update to apply",
  );
  assert.equal(l.legate.config.services.length, 1, "each key is read once");
});

Deno.test("keeps the last good routes serving through a bad edit, reports it, then applies the fix", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  const dir = await Deno.makeTempDir();
  const listen = freePort();
  const file = join(dir, "svc.yaml");
  await Deno.writeTextFile(file, httpRoute(listen, one.url));
  await using l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;

  await Deno.writeTextFile(
    file,
    `listen: 127.0.0.1:${listen}\nupstreams: [htp://broken]\n`,
  );
  await waitFor(
    () => l.count("reload rejected: the last good routes keep serving") === 1,
    "the bad edit",
  );
  assert.equal(await body(url), "one");
  const report = await (await fetch(`${l.admin}/config/errors`)).json();
  assert.equal(report.last_reload.successful, false);
  assert.deepEqual(
    report.errors.map((
      e: Record<string, unknown>,
    ) => [e.file, e.line, e.column, e.key]),
    [[file, 2, 13, "upstreams[0]"]],
  );
  assert.match(
    await body(`${l.admin}/metrics`),
    /^legate_config_last_reload_successful 0$/m,
  );

  await Deno.writeTextFile(file, httpRoute(listen, two.url));
  await waitFor(async () => await body(url) === "two", "the fix to apply");
  assert.match(
    await body(`${l.admin}/metrics`),
    /^legate_config_last_reload_successful 1$/m,
  );
  assert.deepEqual(
    (await (await fetch(`${l.admin}/config/errors`)).json()).errors,
    [],
  );
});

Deno.test("a reload that changes nothing does nothing", async () => {
  await using upstream = startServer(named("up"));
  const dir = await Deno.makeTempDir();
  const file = join(dir, "svc.yaml");
  await Deno.writeTextFile(file, httpRoute(freePort(), upstream.url));
  await using l = await startWatched(dir);
  const before = l.legate.listeners[0]!.listener;
  await Deno.writeTextFile(
    file,
    `# a comment\n${await Deno.readTextFile(file)}`,
  );
  const result = await l.legate.reload("test");
  assert.equal(result.outcome, "unchanged");
  assert.equal(l.legate.listeners[0]!.listener, before);
  assert.equal(l.count("routes reloaded"), 0);
});

Deno.test("POST /reload answers with what changed, 422 when the routes are invalid; GET /routes masks secrets", async () => {
  await using upstream = startServer(named("up"));
  const dir = await Deno.makeTempDir();
  Deno.env.set("LEGATE_TEST_API_TOKEN", "hunter2");
  const file = join(dir, "svc.yaml");
  const route =
    `listen: 127.0.0.1:0\nupstreams: ['${upstream.url}']\nmatch: { host: 'x-\${LEGATE_TEST_API_TOKEN}' }\n`;
  await Deno.writeTextFile(file, route);
  await using l = await startWatched(dir);
  const routes = await (await fetch(`${l.admin}/routes`)).json();
  assert.equal(
    routes.listeners[0].services[0].match.host,
    "x-${LEGATE_TEST_API_TOKEN}",
  );
  assert.doesNotMatch(JSON.stringify(routes), /hunter2/);

  await Deno.writeTextFile(
    join(dir, "other.yaml"),
    httpRoute(freePort(), upstream.url),
  );
  const applied = await fetch(`${l.admin}/reload`, { method: "POST" });
  assert.equal(applied.status, 200);
  assert.equal((await applied.json()).outcome, "applied");

  await Deno.writeTextFile(join(dir, "other.yaml"), "listen: nowhere\n");
  const rejected = await fetch(`${l.admin}/reload`, { method: "POST" });
  assert.equal(rejected.status, 422);
  const result = await rejected.json();
  assert.equal(result.outcome, "invalid");
  assert.deepEqual(result.errors.map((e: { message: string }) => e.message), [
    `${join(dir, "other.yaml")}:1:1: missing required key "upstreams"`,
  ]);
  assert.equal((await fetch(`${l.admin}/reload`)).status, 405);
  await (await fetch(`${l.admin}/reload`)).body?.cancel();
});

Deno.test("a listen address found busy at reload is reported at its file, line and column", async () => {
  await using upstream = startServer(named("up"));
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    join(dir, "svc.yaml"),
    httpRoute(freePort(), upstream.url),
  );
  await using l = await startWatched(dir);
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  await Deno.writeTextFile(
    join(dir, "busy.yaml"),
    `# a comment first\nlisten: 127.0.0.1:${port}\nupstreams: ['${upstream.url}']\n`,
  );
  const reload = await fetch(`${l.admin}/reload`, { method: "POST" });
  assert.equal(reload.status, 422);
  await reload.body?.cancel();
  const { errors } = await (await fetch(`${l.admin}/config/errors`)).json();
  assert.equal(errors.length, 1);
  assert.deepEqual(
    { ...errors[0], message: undefined },
    {
      message: undefined,
      file: join(dir, "busy.yaml"),
      line: 2,
      column: 9,
      key: "listen",
    },
  );
  assert.match(errors[0].message, /address already in use/);
});

Deno.test("a reload storm drops no request and cuts no stream", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  await using echo = startTcpServer(echoBytes);
  const dir = await Deno.makeTempDir();
  const httpPort = freePort();
  const tcpPort = freePort();
  const echoUrl = echo.tcpUrl;
  const configs = [
    {
      "http.yaml": httpRoute(httpPort, one.url),
      "tcp.yaml": `listen: 127.0.0.1:${tcpPort}\nupstreams: [${echoUrl}]\n`,
      "extra.yaml": httpRoute(freePort(), two.url),
    },
    {
      "http.yaml":
        `listen: 127.0.0.1:${httpPort}\nupstreams: [${one.url}, ${two.url}]\n`,
      "tcp.yaml":
        `listen: 127.0.0.1:${tcpPort}\nupstreams: [${echoUrl}]\ntimeouts: { idle: 10m }\n`,
    },
    {
      "http.yaml":
        "listen: 127.0.0.1:${NOT_SET_ANYWHERE}\nupstreams: [http://x]\n",
    },
  ];
  const apply = async (files: Record<string, string>) => {
    for (const name of ["http.yaml", "tcp.yaml", "extra.yaml"]) {
      if (files[name] !== undefined) {
        await Deno.writeTextFile(join(dir, name), files[name]);
      } else if (name === "extra.yaml") {
        await Deno.remove(join(dir, name)).catch(() => {});
      }
    }
  };
  await apply(configs[0]!);
  await using l = await startWatched(dir);

  let stop = false;
  // Every reload waits for one more request and one more echo round, so the
  // storm always has traffic in it, however fast the reloads are.
  let ok = 0;
  let round = 0;
  const http = (async () => {
    const failures: string[] = [];
    while (!stop) {
      try {
        const response = await fetch(`http://127.0.0.1:${httpPort}/`);
        const text = await response.text();
        if (response.status === 200 && (text === "one" || text === "two")) ok++;
        else failures.push(`${response.status} ${text}`);
      } catch (error) {
        failures.push(String(error));
      }
    }
    return { ok, failures };
  })();
  const tcp = (async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
    const chunk = new Uint8Array(16 * 1024);
    const reply = new Uint8Array(16 * 1024);
    let corrupted = 0;
    while (!stop) {
      chunk.fill(round & 0xff);
      await conn.write(chunk);
      let got = 0;
      while (got < chunk.length) {
        const n = await conn.read(reply.subarray(got));
        if (n === null) throw new Error(`stream cut after ${round} rounds`);
        got += n;
      }
      if (reply.some((b) => b !== (round & 0xff))) corrupted++;
      round++;
    }
    await conn.closeWrite();
    const rest = await conn.read(reply);
    conn.close();
    return { round, corrupted, rest };
  })();

  const outcomes: string[] = [];
  for (let i = 0; i < 50; i++) {
    await apply(configs[i % 3]!);
    outcomes.push((await l.legate.reload("storm")).outcome);
    const [requests, rounds] = [ok, round];
    await waitFor(
      () => ok > requests && round > rounds,
      "traffic between two reloads",
    );
  }
  stop = true;
  const httpResult = await http;
  const tcpResult = await tcp;

  assert.deepEqual(httpResult.failures, []);
  assert.ok(httpResult.ok > 50, `requests completed: ${httpResult.ok}`);
  assert.equal(tcpResult.corrupted, 0);
  assert.equal(
    tcpResult.rest,
    null,
    "the stream ends only when the client ends it",
  );
  assert.ok(tcpResult.round > 50, `echo rounds: ${tcpResult.round}`);
  assert.equal(outcomes.filter((o) => o === "invalid").length, 16);
  // The file watcher may apply a change before the explicit reload does, which then finds it unchanged.
  assert.deepEqual(
    outcomes.filter((o) =>
      o !== "applied" && o !== "unchanged" && o !== "invalid"
    ),
    [],
  );
});

Deno.test("keeps serving when the routes directory is removed, and follows it when it is created again", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  const dir = await Deno.makeTempDir();
  const listen = freePort();
  await Deno.writeTextFile(join(dir, "svc.yaml"), httpRoute(listen, one.url));
  await using l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;
  await Deno.remove(dir, { recursive: true });
  await waitFor(
    () =>
      l.lines.filter((line) =>
        JSON.parse(line).msg.startsWith("the routes directory was removed")
      ).length === 1,
    "the removal to be noticed",
  );
  assert.equal(await body(url), "one");
  // rm -rf routes && cp -r new-routes routes
  await Deno.mkdir(dir);
  await Deno.writeTextFile(join(dir, "svc.yaml"), httpRoute(listen, two.url));
  await waitFor(
    async () => await body(url) === "two",
    "the new directory to apply",
  );
  await Deno.writeTextFile(join(dir, "svc.yaml"), httpRoute(listen, one.url));
  await waitFor(
    async () => await body(url) === "one",
    "edits in the new directory to apply",
  );
});

Deno.test("follows a routes directory that is a symlink switched to another release", async () => {
  await using one = startServer(named("one"));
  await using two = startServer(named("two"));
  const base = await Deno.makeTempDir();
  const listen = freePort();
  for (const [release, upstream] of [["v1", one.url], ["v2", two.url]]) {
    await Deno.mkdir(join(base, release!));
    await Deno.writeTextFile(
      join(base, release!, "svc.yaml"),
      httpRoute(listen, upstream!),
    );
  }
  const dir = join(base, "current");
  await Deno.symlink("v1", dir);
  await using _l = await startWatched(dir);
  const url = `http://127.0.0.1:${listen}/`;
  assert.equal(await body(url), "one");
  // ln -sfn v2 current, atomically: a new link renamed over the old one.
  await Deno.symlink("v2", join(base, "next"));
  await Deno.rename(join(base, "next"), dir);
  await waitFor(
    async () => await body(url) === "two",
    "the switched release to apply",
  );
  await Deno.remove(base, { recursive: true });
});

Deno.test(
  "a FIFO among the route files neither stops reloads nor blocks exit",
  {
    ignore: Deno.build.os === "windows",
  },
  async () => {
    await using one = startServer(named("one"));
    await using two = startServer(named("two"));
    const listen = freePort();
    const legate = await spawnLegate({
      "svc.yaml": httpRoute(listen, one.url),
    });
    let code: number | undefined;
    const exited = legate.exit().then((c) => code = c);
    try {
      const url = `http://127.0.0.1:${listen}/`;
      assert.equal(await body(url), "one");
      const made = await new Deno.Command("mkfifo", {
        args: [join(legate.dir, "x.yaml")],
      }).output();
      assert.ok(made.success, new TextDecoder().decode(made.stderr));
      await Deno.writeTextFile(
        join(legate.dir, "svc.yaml"),
        httpRoute(listen, two.url),
      );
      await waitFor(async () => await body(url) === "two", "the edit to apply");
      legate.child.kill("SIGTERM");
      await waitFor(() => code !== undefined, "legate to exit after SIGTERM");
      assert.equal(code, 0);
    } finally {
      if (code === undefined) legate.child.kill("SIGKILL");
      await exited;
    }
  },
);

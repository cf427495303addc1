import assert from "node:assert/strict";
import {
  drainGenerated,
  freePort,
  generatedStream,
  legateCommand,
  spawnLegate,
  startServer,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

Deno.test("SIGTERM during a 200 MiB download lets it complete, then exits 0", async () => {
  const total = 200 * 1024 * 1024;
  await using upstream = startServer(() =>
    new Response(generatedStream(total))
  );
  const port = freePort();
  const legate = await spawnLegate({
    "big.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n`,
  });
  const response = await fetch(`http://127.0.0.1:${port}/`);
  const reader = response.body!.getReader();
  const first = await reader.read();
  legate.child.kill("SIGTERM");
  // Reading pauses until legate says the download is in flight while it drains.
  await waitFor(
    () => legate.logged("draining: stopped accepting") !== undefined,
    "the drain to start",
  );
  assert.equal(legate.logged("draining: stopped accepting")!.in_flight, 1);
  const rest = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(first.value!);
    },
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
  });
  assert.deepEqual(await drainGenerated(rest), { bytes: total, intact: true });
  assert.equal(await legate.exit(), 0);
  assert.equal(legate.logged("stopped")!.cut, 0);
});

Deno.test("--shutdown-delay answers 503 on /readyz at once and keeps serving until it passes", async () => {
  await using upstream = startServer(() => new Response("still here"));
  const port = freePort();
  const legate = await spawnLegate(
    { "svc.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n` },
    ["--shutdown-delay", "1s"],
  );
  legate.child.kill("SIGTERM");
  await waitFor(
    async () => await legate.readyz() === 503,
    "/readyz to answer 503",
  );
  assert.equal(
    legate.logged("draining: stopped accepting"),
    undefined,
    "still within the delay",
  );
  const response = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(await response.text(), "still here");
  assert.equal(await legate.exit(), 0);
  assert.equal(legate.logged("shutting down")!.shutdown_delay_ms, 1000);
  assert.ok(legate.logged("draining: stopped accepting"));
});

Deno.test("--drain-timeout cuts what has not finished and says so", async () => {
  let release!: () => void;
  const never = new Promise<void>((resolve) => release = resolve);
  await using upstream = startServer(() =>
    new Response(
      new ReadableStream({
        async start(controller) {
          controller.enqueue(new TextEncoder().encode("begun"));
          await never;
          controller.close();
        },
      }),
    )
  );
  const port = freePort();
  const legate = await spawnLegate(
    { "svc.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n` },
    ["--drain-timeout", "300ms"],
  );
  const response = await fetch(`http://127.0.0.1:${port}/`);
  const reader = response.body!.getReader();
  await reader.read();
  legate.child.kill("SIGTERM");
  await assert.rejects(async () => {
    while (!(await reader.read()).done) { /* until cut */ }
  });
  const code = await legate.exit();
  assert.deepEqual(legate.events.filter((e) => e.msg === "stderr"), []);
  assert.equal(code, 0);
  assert.equal(
    legate.logged("drain timeout passed: cut what was left")!.cut,
    1,
  );
  release();
});

Deno.test("a second signal exits at once with 1, naming what was cut", async () => {
  let release!: () => void;
  const never = new Promise<void>((resolve) => release = resolve);
  let upstreamArrived = () => {};
  await using upstream = startServer(async () => {
    upstreamArrived();
    await never;
    return new Response("late");
  });
  const port = freePort();
  const legate = await spawnLegate({
    "svc.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n`,
  });
  let arrived = false;
  upstreamArrived = () => arrived = true;
  const pending = fetch(`http://127.0.0.1:${port}/`).catch((error) => error);
  await waitFor(() => arrived, "the request to reach the upstream");
  legate.child.kill("SIGTERM");
  await waitFor(
    () => legate.logged("draining: stopped accepting") !== undefined,
    "the drain to start",
  );
  legate.child.kill("SIGTERM");
  assert.equal(await legate.exit(), 1);
  assert.equal(legate.logged("second signal: exiting now")!.cut, 1);
  await pending;
  release();
});

Deno.test("SIGHUP reloads the routes, also with --no-watch", async () => {
  await using one = startServer(() => new Response("one"));
  await using two = startServer(() => new Response("two"));
  const port = freePort();
  const legate = await spawnLegate(
    { "svc.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${one.url}]\n` },
    ["--no-watch"],
  );
  const other = freePort();
  await Deno.writeTextFile(
    `${legate.dir}/other.yaml`,
    `listen: 127.0.0.1:${other}\nupstreams: [${two.url}]\n`,
  );
  legate.child.kill("SIGHUP");
  await waitFor(
    () =>
      legate.events.some((e) =>
        e.msg === "routes reloaded" && e.trigger === "SIGHUP"
      ),
    "the SIGHUP reload",
  );
  assert.equal(await (await fetch(`http://127.0.0.1:${other}/`)).text(), "two");
  legate.child.kill("SIGTERM");
  assert.equal(await legate.exit(), 0);
});

Deno.test("the admin listener binds other hosts only with --admin-allow-remote, and warns", async () => {
  const refused = await legateCommand(["serve", "--admin", "0.0.0.0:9901"])
    .output();
  assert.equal(refused.code, 2);
  assert.match(
    new TextDecoder().decode(refused.stderr),
    /--admin "0\.0\.0\.0:9901" is reachable from other hosts: use a loopback address, or add --admin-allow-remote/,
  );
  await using upstream = startServer(() => new Response("ok"));
  const dir = await writeRoutes({
    "svc.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${upstream.url}]\n`,
  });
  const port = freePort();
  const child = legateCommand(
    [
      "serve",
      "--routes",
      dir,
      "--admin",
      `0.0.0.0:${port}`,
      "--admin-allow-remote",
    ],
    { LEGATE_LOG_FORMAT: "json" },
  ).spawn();
  await waitFor(async () => {
    try {
      return (await (await fetch(`http://127.0.0.1:${port}/readyz`)).text()) ===
        "ready\n";
    } catch {
      return false;
    }
  }, "legate to be ready");
  child.kill("SIGTERM");
  const output = await child.output();
  assert.equal(output.code, 0);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /"msg":"the admin listener accepts connections from other hosts"/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("healthcheck exits 0 while legate answers and 5 when it does not", async () => {
  await using upstream = startServer(() => new Response("ok"));
  const legate = await spawnLegate(
    {
      "svc.yaml":
        `listen: 127.0.0.1:${freePort()}\nupstreams: [${upstream.url}]\n`,
    },
    ["--shutdown-delay", "1s"],
  );
  const check = async (...args: string[]) => {
    const output = await legateCommand([
      "healthcheck",
      "--admin",
      legate.admin,
      ...args,
    ]).output();
    return {
      code: output.code,
      stdout: new TextDecoder().decode(output.stdout),
    };
  };
  assert.deepEqual(await check(), { code: 0, stdout: "/healthz: 200 ok\n" });
  assert.deepEqual(await check("--ready"), {
    code: 0,
    stdout: "/readyz: 200 ready\n",
  });
  legate.child.kill("SIGTERM");
  await waitFor(async () => await legate.readyz() === 503, "shutdown to begin");
  assert.equal(
    (await check("--ready")).code,
    5,
    "not ready while shutting down",
  );
  assert.equal((await check()).code, 0, "still alive while shutting down");
  assert.equal(await legate.exit(), 0);
  assert.equal((await check()).code, 5, "nothing answers once stopped");
});

Deno.test("healthcheck gives up with exit 5 when the admin listener accepts but never answers", async () => {
  // A listener that takes the connection and the request, and says nothing.
  using silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = silent.accept();
  const started = performance.now();
  const output = await legateCommand([
    "healthcheck",
    "--admin",
    `127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
  ]).output();
  const waited = performance.now() - started;
  (await accepted).close();
  assert.equal(output.code, 5);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /\/healthz on 127\.0\.0\.1:\d+ did not answer: no answer within 3000ms/,
  );
  assert.ok(waited >= 3_000, `gave up after ${waited} ms`);
});

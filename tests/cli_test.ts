import assert from "node:assert/strict";
import {
  freePort,
  legateCommand,
  ROOT,
  spawnLegate,
  startServer,
  writeRoutes,
} from "./_helpers.ts";

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

async function run(args: string[], env: Record<string, string> = {}) {
  const output = await legateCommand(args, env).output();
  return {
    code: output.code,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
  };
}

Deno.test("check exits 0 for valid routes and 1 with every error on stderr", async () => {
  const dir = await writeRoutes({
    "good.yaml":
      "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\n",
  });
  const ok = await run(["check", "--routes", dir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, `${dir}: 1 service(s) on 1 listener(s), all valid\n`);

  await Deno.writeTextFile(
    `${dir}/bad.yaml`,
    "listen: 127.0.0.1:15002\nupstreams: [htp://x]\nmatchh: {}\n",
  );
  const bad = await run(["check"], { LEGATE_ROUTES: dir });
  assert.equal(bad.code, 1);
  assert.equal(
    bad.stderr,
    `${dir}/bad.yaml:2:13: upstreams[0]: "htp://x" is not a supported URL (use http://, https://, tcp:// or tls:// with host and port and no path, their +srv forms with an SRV name, unix:/path, or http+unix:/path and https+unix:/path)\n` +
      `${dir}/bad.yaml:3:1: unknown key "matchh" (did you mean "match"?)\n` +
      `2 error(s) in ${dir}\n`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("deno task legate check runs the check command from a checkout", async () => {
  const dir = await writeRoutes({
    "good.yaml":
      "listen: 127.0.0.1:15001\nupstreams: [http://127.0.0.1:8080]\n",
  });
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "legate", "check", "--routes", dir],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, decode(output.stderr));
  assert.equal(
    decode(output.stdout),
    `${dir}: 1 service(s) on 1 listener(s), all valid\n`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a missing routes directory exits 3 with one clear line", async () => {
  const result = await run(["check", "--routes", "/nonexistent/routes"]);
  assert.equal(result.code, 3);
  assert.match(
    result.stderr,
    /^legate: Routes directory "\/nonexistent\/routes" does not exist: create it/,
  );
  assert.equal(result.stderr.trim().split("\n").length, 1);
  const serve = await run([
    "--routes",
    "/nonexistent/routes",
    "--admin",
    `127.0.0.1:${freePort()}`,
  ]);
  assert.equal(serve.code, 3);
  assert.match(
    serve.stderr,
    /ERROR Routes directory "\/nonexistent\/routes" does not exist/,
  );
});

Deno.test("prints --version and --help, and exits 2 on a bad command line", async () => {
  const version = await run(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^legate \d+\.\d+\.\d+\n$/);
  assert.equal((await run(["-V"])).stdout, version.stdout);
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /legate check +\[--routes DIR\]/);
  for (const args of [["--bogus"], ["frobnicate"], ["check", "extra"]]) {
    const result = await run(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.match(
      result.stderr,
      /^legate: .*\nRun "legate --help" for usage\.\n$/,
    );
  }
  for (
    const [args, problem] of [
      [["--header-timeout", "0s"], /--header-timeout: must be longer than 0s/],
      [
        ["--header-timeout", "soon"],
        /--header-timeout: "soon" is not a duration/,
      ],
      [["--max-idle-connections", "0"], /--max-idle-connections: "0" is not/],
      [["--max-idle-connections", "many"], /"many" is not a whole number/],
      [["check", "--header-timeout", "5s"], /check takes no --header-timeout/],
      [["--bogus"], /unknown option "--bogus"/],
      [["-x"], /unknown option "-x"/],
      [["check", "--routes"], /--routes needs a value/],
      [["--routes", "--no-watch"], /--routes needs a value/],
      [["--no-watch=yes"], /--no-watch takes no value/],
      [["--", "--routes"], /unknown command "--routes"/],
    ] as const
  ) {
    const result = await run([...args]);
    assert.equal(result.code, 2, args.join(" "));
    assert.match(result.stderr, problem);
  }
  const badLevel = await run(["check"], { LEGATE_LOG: "loud" });
  assert.equal(badLevel.code, 2);
  assert.match(
    badLevel.stderr,
    /LEGATE_LOG is "loud": use one of debug, info, warn, error/,
  );
});

Deno.test("serve exits 1 on invalid routes and 4 when an address is taken", async () => {
  const dir = await writeRoutes({
    "bad.yaml": "listen: nowhere\nupstreams: [http://a]\n",
  });
  const invalid = await run([
    "--routes",
    dir,
    "--admin",
    `127.0.0.1:${freePort()}`,
  ]);
  assert.equal(invalid.code, 1);
  assert.match(
    invalid.stderr,
    /bad\.yaml:1:9: listen: "nowhere" is not a listen address/,
  );

  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  await Deno.writeTextFile(
    `${dir}/bad.yaml`,
    `listen: 127.0.0.1:${port}\nupstreams: [http://a]\n`,
  );
  const busy = await run([
    "--routes",
    dir,
    "--admin",
    `127.0.0.1:${freePort()}`,
  ]);
  taken.close();
  assert.equal(busy.code, 4);
  assert.match(
    busy.stderr,
    new RegExp(
      `Cannot listen on 127\\.0\\.0\\.1:${port}: address already in use; it is the listen address of "bad"`,
    ),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("SIGTERM lets a slow download finish, then exits 0; JSON logs are one object per line", async () => {
  const chunks = 20;
  await using upstream = startServer(() => {
    let sent = 0;
    return new Response(
      new ReadableStream({
        async pull(controller) {
          if (sent === chunks) return controller.close();
          sent++;
          controller.enqueue(new TextEncoder().encode(`chunk ${sent}\n`));
          // The upstream is slow on purpose: the download must outlive the signal.
          await new Promise((resolve) => setTimeout(resolve, 50));
        },
      }),
    );
  });
  const port = freePort();
  const legate = await spawnLegate({
    "slow.yaml": `listen: 127.0.0.1:${port}\nupstreams: [${upstream.url}]\n`,
  });

  const download = await fetch(`http://127.0.0.1:${port}/`);
  const reader = download.body!.getReader();
  let text = decode((await reader.read()).value!);
  legate.child.kill("SIGTERM");
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    text += decode(r.value);
  }
  assert.equal(text.split("\n").filter(Boolean).length, chunks);

  assert.equal(await legate.exit(), 0);
  const events = legate.events;
  assert.deepEqual(events.map((e) => e.msg), [
    "listening",
    "started",
    "shutting down",
    "draining: stopped accepting",
    "stopped",
  ]);
  assert.equal(events[3]!.in_flight, 1);
  assert.equal(events[4]!.cut, 0);
  assert.equal((events[0]!.services as { name: string }[])[0]!.name, "slow");
  assert.equal(events[2]!.signal, "SIGTERM");
});

Deno.test("${LEGATE_ADMIN} in a route file is the admin address legate uses, --admin included", async () => {
  // As the shipped routes/admin-http.yaml does, with a free port to listen on.
  const listen = `127.0.0.1:${freePort()}`;
  const legate = await spawnLegate(
    {
      "admin.yaml":
        `listen: ${listen}\nupstreams: ['http://\${LEGATE_ADMIN:-127.0.0.1:9901}']\n`,
    },
    [],
    { LEGATE_ADMIN: "127.0.0.1:1" },
  );
  try {
    // spawnLegate passes --admin; the route follows it, not the environment.
    const response = await fetch(`http://${listen}/healthz`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok\n");
    assert.equal(response.headers.get("via"), "1.1 legate");
  } finally {
    legate.child.kill("SIGTERM");
    assert.equal(await legate.exit(), 0);
  }
});

/**
 * The FROM scratch image, built and run in a real container runtime.
 *
 * `deno compile` cannot fetch its runtime stub here, so the Dockerfile's
 * `build` stage is replaced by a folder holding what it would produce, with
 * the `deno` binary and a `deno bundle` of legate standing in for the
 * compiled `/legate`. The runtime stage itself is the shipped one.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  echoBytes,
  freePort,
  ROOT,
  START_FLAGS,
  startServer,
  startTcpServer,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

const RUN = ["--runtime", "runc"];
const LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

async function run(command: string, args: string[], cwd?: string) {
  const output = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
    ...(cwd ? { cwd } : {}),
  }).output();
  return {
    code: output.code,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
  };
}

async function must(
  command: string,
  args: string[],
  cwd?: string,
): Promise<string> {
  const result = await run(command, args, cwd);
  assert.equal(
    result.code,
    0,
    `${command} ${args.join(" ")}\n${result.stderr}`,
  );
  return result.stdout;
}

/** The folder that stands in for the Dockerfile's `build` stage. */
async function buildStageFolder(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "legate-build-" });
  const rootfs = join(dir, "rootfs");
  await Deno.mkdir(join(rootfs, "tmp"), { recursive: true, mode: 0o1777 });
  await Deno.chmod(join(rootfs, "tmp"), 0o1777);
  await Deno.mkdir(join(rootfs, "etc/legate/routes"), { recursive: true });
  await Deno.copyFile(Deno.execPath(), join(rootfs, "deno"));
  const libraries = (await must("ldd", [Deno.execPath()])).match(/\/\S+/g) ??
    [];
  for (const library of new Set(libraries)) {
    await must("cp", ["--parents", "-L", library, rootfs]);
  }
  await must(Deno.execPath(), [
    "bundle",
    "--platform",
    "deno",
    "--output",
    join(rootfs, "legate.js"),
    "main.ts",
  ], ROOT);
  return dir;
}

/** `podman run` arguments that start legate in the image like its ENTRYPOINT would. */
function legateIn(
  image: string,
  routes: string,
  admin: string,
  extra: string[] = [],
): string[] {
  return [
    ...RUN,
    "run",
    ...LIMITS,
    "--network",
    "host",
    "--read-only",
    "-v",
    `${routes}:/etc/legate/routes:ro`,
    "-e",
    "DENO_DIR=/tmp/deno",
    ...extra,
    "--entrypoint",
    "/deno",
    image,
    "run",
    ...START_FLAGS,
    "/legate.js",
    "serve",
    "--admin",
    admin,
  ];
}

Deno.test("the scratch image serves HTTP and TCP as non-root, has no shell, and stops cleanly", async (t) => {
  const image = `localhost/legate-test:${crypto.randomUUID().slice(0, 8)}`;
  const build = await buildStageFolder();
  await must("podman", [
    "build",
    ...RUN,
    "--format",
    "docker",
    "--target",
    "runtime",
    "--build-context",
    `build=${build}`,
    "--tag",
    image,
    "--file",
    join(ROOT, "Dockerfile"),
    ROOT,
  ]);
  const name = `legate-test-${crypto.randomUUID().slice(0, 8)}`;
  await using upstream = startServer(() => new Response("from the host"));
  await using echo = startTcpServer(echoBytes);
  const httpPort = freePort();
  const tcpPort = freePort();
  const admin = `127.0.0.1:${freePort()}`;
  const routes = await writeRoutes({
    "web.yaml": `listen: 127.0.0.1:${httpPort}\nupstreams: [${upstream.url}]\n`,
    "echo.yaml": `listen: 127.0.0.1:${tcpPort}\nupstreams: [${echo.tcpUrl}]\n`,
  });
  await Deno.chmod(routes, 0o755);
  try {
    await must(
      "podman",
      legateIn(image, routes, admin, ["--detach", "--name", name]),
    );
    await waitFor(
      async () => {
        try {
          return (await (await fetch(`http://${admin}/readyz`)).text()) ===
            "ready\n";
        } catch {
          return false;
        }
      },
      "legate in the container to be ready",
      30_000,
    );

    await t.step("forwards HTTP and TCP to upstreams on the host", async () => {
      assert.equal(
        await (await fetch(`http://127.0.0.1:${httpPort}/`)).text(),
        "from the host",
      );
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
      await conn.write(new TextEncoder().encode("ping"));
      const reply = new Uint8Array(4);
      assert.equal(await conn.read(reply), 4);
      assert.equal(decode(reply), "ping");
      conn.close();
    });

    await t.step("runs as a non-root user", async () => {
      // Reading /proc needs --allow-all in Deno; podman reports the process's user itself.
      const top = await must("podman", ["top", name, "user", "huser"]);
      const rows = top.trim().split("\n").slice(1).map((l) =>
        l.trim().split(/\s+/)
      );
      assert.deepEqual(rows, [["65532", "65532"]]);
    });

    await t.step(
      "answers legate healthcheck inside the container",
      async () => {
        const result = await run("podman", [
          "exec",
          name,
          "/deno",
          "run",
          ...START_FLAGS,
          "/legate.js",
          "healthcheck",
          "--admin",
          admin,
        ]);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, "/healthz: 200 ok\n");
      },
    );

    await t.step("has no shell", async () => {
      const result = await run("podman", [
        ...RUN,
        "run",
        "--rm",
        ...LIMITS,
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "true",
      ]);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /\/bin\/sh.*(no such file|not found)/i);
    });

    await t.step(
      "podman stop ends it within the drain deadline with exit code 0",
      async () => {
        await must("podman", ["stop", "--time", "30", name]);
        const code = (await must("podman", [
          "inspect",
          "--format",
          "{{.State.ExitCode}}",
          name,
        ])).trim();
        assert.equal(code, "0");
        const logs = await run("podman", ["logs", name]);
        assert.match(logs.stdout + logs.stderr, /INFO {2}stopped cut=0/);
      },
    );

    await t.step(
      "an empty routes directory is one clear line and exit code 3",
      async () => {
        const empty = await Deno.makeTempDir();
        await Deno.chmod(empty, 0o755);
        const result = await run(
          "podman",
          legateIn(image, empty, `127.0.0.1:${freePort()}`, ["--rm"]),
        );
        assert.equal(result.code, 3);
        // podman itself may complain that it cannot schedule the image's HEALTHCHECK without systemd.
        const lines = (result.stdout + result.stderr).trim().split("\n")
          .filter((line) => !/^time=".*level=/.test(line));
        assert.equal(lines.length, 1);
        assert.match(
          lines[0]!,
          /Routes directory "\/etc\/legate\/routes" has no route files/,
        );
        await Deno.remove(empty);
      },
    );
  } finally {
    await run("podman", ["rm", "--force", name]);
    await run("podman", ["rmi", "--force", image]);
    await Deno.remove(build, { recursive: true });
    await Deno.remove(routes, { recursive: true });
  }
});

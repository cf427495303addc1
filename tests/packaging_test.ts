import assert from "node:assert/strict";
import { join } from "node:path";
import { parse } from "yaml";
import { compileArgs, TARGETS } from "../scripts/compile.ts";
import { legateCommand, ROOT, START_FLAGS } from "./_helpers.ts";

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Every `.ts` file under `dir`, at any depth. */
async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

Deno.test("deno task compile fails fast with one clear line when the runtime stub cannot be had", async () => {
  // An unreachable proxy makes the download fail here and on machines with internet access alike.
  const env = {
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_COLOR: "1",
  };
  const compile = (args: string[], extra: Record<string, string> = {}) =>
    new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "compile", ...args],
      cwd: ROOT,
      env: { ...env, ...extra },
      stdout: "piped",
      stderr: "piped",
    }).output();
  const download = await compile(["--target", "aarch64-apple-darwin"]);
  assert.equal(download.code, 1);
  assert.equal(
    decode(download.stderr),
    `compile: deno compile could not download the denort ${Deno.version.deno} runtime stub for aarch64-apple-darwin: set DENORT_BIN to a local denort of Deno ${Deno.version.deno}, or build with internet access\n`,
  );
  const missing = await compile([], { DENORT_BIN: "/nonexistent/denort" });
  assert.equal(missing.code, 1);
  assert.match(
    decode(missing.stderr),
    /^compile: DENORT_BIN is "\/nonexistent\/denort", which is not a file/,
  );
  const target = await compile(["--target", "sparc-sun-solaris"]);
  assert.equal(target.code, 2);
});

Deno.test("the compile task bakes in exactly the flags of deno task start", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  assert.equal(
    config.tasks.start,
    `deno run ${START_FLAGS.join(" ")} main.ts serve`,
  );
  // `deno task legate check` runs exactly what `deno task start` runs.
  assert.equal(
    config.tasks.legate,
    `deno run ${START_FLAGS.join(" ")} main.ts`,
  );
  assert.deepEqual(compileArgs("aarch64-unknown-linux-gnu", "dist/x"), [
    "compile",
    ...START_FLAGS,
    "--frozen",
    "--target",
    "aarch64-unknown-linux-gnu",
    "--output",
    "dist/x",
    "main.ts",
  ]);
});

Deno.test("a deno bundle of legate runs from anywhere with the start flags", async () => {
  const dir = await Deno.makeTempDir();
  const bundle = join(dir, "legate.js");
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "deno", "--output", bundle, "main.ts"],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(built.code, 0, decode(built.stderr));
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...START_FLAGS,
      bundle,
      "check",
      "--routes",
      join(ROOT, "routes"),
    ],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, decode(output.stderr));
  assert.match(
    decode(output.stdout),
    /2 service\(s\) on 2 listener\(s\), all valid/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("nothing reads files relative to the source tree; only main.ts imports dynamically, and only what deno compile can see", async () => {
  for await (const file of sourceFiles(join(ROOT, "src"))) {
    const text = await Deno.readTextFile(file);
    assert.doesNotMatch(text, /import\.meta\.(url|dirname|filename)/, file);
    assert.doesNotMatch(text, /\bimport\(/, file);
  }
  const main = await Deno.readTextFile(join(ROOT, "main.ts"));
  assert.doesNotMatch(main, /import\.meta\.(url|dirname|filename)/);
  // deno compile embeds a dynamic import only when its specifier is a literal
  const dynamic = [...main.matchAll(/\bimport\((.*?)\)/g)].map((m) => m[1]);
  assert.ok(dynamic.length > 0);
  for (const specifier of dynamic) assert.match(specifier!, /^"[^"]+"$/);
  const version = await legateCommand(["--version"]).output();
  assert.equal(
    decode(version.stdout),
    `legate ${
      JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).version
    }\n`,
  );
});

Deno.test("the release workflow builds every compile target, with checksums and a multi-arch image", async () => {
  const workflow = parse(
    await Deno.readTextFile(join(ROOT, ".github/workflows/release.yml")),
  );
  assert.deepEqual(workflow.on.push.tags, ["v*"]);
  const targets = workflow.jobs.binaries.strategy.matrix.include.map((
    e: { target: string },
  ) => e.target);
  assert.deepEqual([...targets].sort(), [...TARGETS].sort());
  const steps = JSON.stringify(workflow.jobs.binaries.steps);
  assert.match(steps, /deno task compile --target \$\{\{ matrix.target \}\}/);
  assert.match(steps, /sha256sum/);
  const setup = workflow.jobs.binaries.steps.find((s: { uses?: string }) =>
    s.uses?.startsWith("denoland/setup-deno")
  );
  assert.equal(setup.with["deno-version"], Deno.version.deno);
  const image = workflow.jobs.image.steps.find((s: { uses?: string }) =>
    s.uses?.startsWith("docker/build-push-action")
  );
  assert.equal(image.with.target, "runtime");
  assert.equal(image.with.platforms, "linux/amd64,linux/arm64");
});

Deno.test("the Dockerfile follows the image contract", async () => {
  const text = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  assert.match(
    text,
    new RegExp(
      `^ARG DENO_VERSION=${Deno.version.deno.replaceAll(".", "\\.")}$`,
      "m",
    ),
  );
  assert.match(
    text,
    /^FROM docker\.io\/denoland\/deno:debian-\$\{DENO_VERSION\} AS build$/m,
  );
  // podman refuses short names: every base image names its registry.
  for (const [, image] of text.matchAll(/^FROM\s+(?:--\S+\s+)*(\S+)/gm)) {
    if (image === "scratch") continue;
    const registry = image!.split("/")[0]!;
    assert.ok(
      image!.includes("/") &&
        (/[.:]/.test(registry) || registry === "localhost"),
      `FROM ${image} names its registry (e.g. docker.io/...)`,
    );
  }
  assert.match(text, /^FROM scratch AS runtime$/m);
  assert.match(text, /^COPY --from=build \/rootfs\/ \/$/m);
  assert.match(text, /^USER 65532:65532$/m);
  assert.match(text, /^STOPSIGNAL SIGTERM$/m);
  assert.match(text, /^ENTRYPOINT \["\/legate"\]$/m);
  assert.match(text, /^HEALTHCHECK .*CMD \["\/legate", "healthcheck"\]$/m);
  assert.match(text, /^ENV LEGATE_ROUTES=\/etc\/legate\/routes$/m);
});

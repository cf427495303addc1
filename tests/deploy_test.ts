import assert from "node:assert/strict";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { loadConfig } from "../mod.ts";
import { ROOT } from "./_helpers.ts";

Deno.test("the Kubernetes example's route files are valid and its flags exist", async () => {
  const text = await Deno.readTextFile(
    join(ROOT, "deploy/kubernetes/legate-sidecar.yaml"),
  );
  const [configMap, deployment] = parseAllDocuments(text).map((d) => d.toJS());
  const dir = await Deno.makeTempDir();
  for (
    const [name, route] of Object.entries(
      configMap.data as Record<string, string>,
    )
  ) {
    await Deno.writeTextFile(join(dir, name), route);
  }
  const { config, errors } = await loadConfig(dir);
  assert.equal(errors, undefined);
  assert.deepEqual(config!.services.map((s) => s.name), ["redis", "users"]);
  await Deno.remove(dir, { recursive: true });

  const sidecar = deployment.spec.template.spec.initContainers[0];
  const help = new TextDecoder().decode(
    (await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", join(ROOT, "main.ts"), "--help"],
      stdout: "piped",
    }).output()).stdout,
  );
  for (const arg of sidecar.args as string[]) {
    if (arg.startsWith("--")) {
      assert.ok(help.includes(arg.split("=")[0]!), `${arg} is a legate flag`);
    }
  }
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    assert.equal(sidecar[probe].exec.command[1], "healthcheck");
  }
});

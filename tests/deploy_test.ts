import assert from "node:assert/strict";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { loadConfig, processReferences } from "../mod.ts";
import { ROOT } from "./_helpers.ts";
import { makeCa } from "./_certificates.ts";

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
  // The mounted Secret's files, and the projected service-account token as
  // kubelet would mount it, made here.
  await using ca = await makeCa();
  const client = await ca.issue("client", { client: true });
  const token = "/var/run/secrets/legate/billing/token";
  const mounted: Record<string, string> = {
    "/etc/legate/payments-client/ca.crt": ca.ca,
    "/etc/legate/payments-client/tls.crt": client.cert,
    "/etc/legate/payments-client/tls.key": client.key,
  };
  const { config, errors } = await loadConfig(dir, {
    ...processReferences,
    readFile: (path) =>
      path === token
        ? "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"
        : processReferences.readFile(mounted[path] ?? path),
  });
  assert.equal(errors, undefined);
  assert.deepEqual(config!.services.map((s) => s.name), [
    "billing",
    "payments",
    "redis",
    "users",
  ]);
  const spec = deployment.spec.template.spec;
  const mount = spec.initContainers[0].volumeMounts.find((
    m: { mountPath: string },
  ) => token.startsWith(`${m.mountPath}/`));
  const volume = spec.volumes.find((v: { name: string }) =>
    v.name === mount.name
  );
  assert.equal(
    volume.projected.sources[0].serviceAccountToken.path,
    "token",
  );
  // The application container mounts neither the token nor the certificate.
  for (const container of spec.containers) {
    assert.equal(container.volumeMounts, undefined);
  }
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

/** A Kubernetes memory quantity such as `96Mi` or `1Gi`, in bytes. */
function bytesOf(quantity: string): number {
  const match = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity);
  assert.ok(match, `"${quantity}" is a memory quantity`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[match[2] ?? ""] ??
    1;
  return Number(match[1]) * unit;
}

Deno.test("the Kubernetes example fits legate's memory, the restricted Pod Security Standard and a read-only root", async () => {
  const text = await Deno.readTextFile(
    join(ROOT, "deploy/kubernetes/legate-sidecar.yaml"),
  );
  const [, deployment] = parseAllDocuments(text).map((d) => d.toJS());
  const pod = deployment.spec.template.spec;
  const sidecar = pod.initContainers[0];

  // Measured: about 62 MB resident at start, about 80 MB after the first requests.
  const { requests, limits } = sidecar.resources;
  assert.ok(bytesOf(requests.memory) >= 96 * 1024 ** 2, requests.memory);
  assert.ok(bytesOf(limits.memory) >= 256 * 1024 ** 2, limits.memory);

  const seccomp = (context: { seccompProfile?: { type?: string } } = {}) =>
    context.seccompProfile?.type;
  for (const container of [...pod.initContainers, ...pod.containers]) {
    assert.equal(
      seccomp(container.securityContext) ?? seccomp(pod.securityContext),
      "RuntimeDefault",
      `${container.name} runs with the RuntimeDefault seccomp profile`,
    );
  }

  assert.equal(sidecar.securityContext.readOnlyRootFilesystem, true);
  const tmp = sidecar.volumeMounts.find((m: { mountPath: string }) =>
    m.mountPath === "/tmp"
  );
  assert.ok(tmp, "legate has a writable /tmp");
  assert.notEqual(tmp.readOnly, true);
  const volume = pod.volumes.find((v: { name: string }) => v.name === tmp.name);
  assert.ok(volume?.emptyDir, "/tmp is an emptyDir");
});

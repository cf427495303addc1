import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { ROOT } from "./_helpers.ts";

/** Which stages each stage may import; only lifecycle composes them all. */
const ALLOWED: Record<string, readonly string[]> = {
  config: ["address"],
  router: [],
  transport: [],
  upstream: ["log", "transport"],
  metrics: [],
  admin: ["metrics"],
  // Servers get routes built by lifecycle: they read no route-file types.
  server: ["address", "log", "metrics", "router", "transport", "upstream"],
  lifecycle: [
    "address",
    "admin",
    "config",
    "log",
    "metrics",
    "router",
    "server",
    "transport",
    "upstream",
  ],
};

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

function stageOf(file: string): string {
  const [first, second] = relative(join(ROOT, "src"), file).split("/");
  return second === undefined ? first!.replace(/\.ts$/, "") : first!;
}

Deno.test("dependencies point one way: config knows no servers, transport knows no config", async () => {
  const violations: string[] = [];
  for await (const file of sourceFiles(join(ROOT, "src"))) {
    const stage = stageOf(file);
    const text = await Deno.readTextFile(file);
    for (const [, specifier] of text.matchAll(/from "(\.[^"]+)"/g)) {
      const imported = join(file, "..", specifier!);
      // deno.json is read for the version; it is no stage
      if (imported === join(ROOT, "deno.json")) continue;
      const target = stageOf(imported);
      if (target !== stage && !(ALLOWED[stage] ?? []).includes(target)) {
        violations.push(
          `${relative(ROOT, file)} imports ${specifier} (${stage} → ${target})`,
        );
      }
    }
  }
  assert.deepEqual(violations, []);
});

Deno.test("only main.ts reads Deno.args or calls Deno.exit", async () => {
  const offenders: string[] = [];
  for await (const file of sourceFiles(join(ROOT, "src"))) {
    if (/Deno\.(args|exit)\b/.test(await Deno.readTextFile(file))) {
      offenders.push(relative(ROOT, file));
    }
  }
  assert.deepEqual(offenders, []);
});

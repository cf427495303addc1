/**
 * `deno task compile`: builds the single legate executable with `deno
 * compile`, baking in exactly the flags `deno task start` runs with.
 *
 *     deno task compile [--target TARGET] [--output PATH]
 *
 * `deno compile` needs the `denort` runtime stub of the same Deno version for
 * the target. It downloads it from Deno's servers unless `DENORT_BIN` names a
 * local copy; where neither works this fails with one line saying so.
 * @module
 */
import { parseArgs } from "node:util";

/** The targets releases are built for, as `deno compile --target` names them. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const ROOT = new URL("../", import.meta.url);

/**
 * The `deno run` flags of `deno task start`, in order, in this checkout or
 * the one at `root` (a directory path).
 */
export function startFlags(root: string | URL = ROOT): string[] {
  const dir = typeof root === "string"
    ? new URL(`file://${root.endsWith("/") ? root : `${root}/`}`)
    : root;
  const config = JSON.parse(
    Deno.readTextFileSync(new URL("deno.json", dir)),
  );
  const words = (config.tasks.start as string).split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("main.ts"));
}

/** The `deno compile` arguments for `target` (the host when undefined). */
export function compileArgs(
  target: string | undefined,
  output: string,
): string[] {
  return [
    "compile",
    ...startFlags(),
    "--frozen",
    ...(target ? ["--target", target] : []),
    "--output",
    output,
    "main.ts",
  ];
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { target: { type: "string" }, output: { type: "string" } },
  });
  const target = values.target;
  if (
    target !== undefined && !(TARGETS as readonly string[]).includes(target)
  ) {
    console.error(
      `compile: unknown target "${target}": use one of ${TARGETS.join(", ")}`,
    );
    return 2;
  }
  const output = values.output ??
    (target
      ? `dist/legate-${target}${target.includes("windows") ? ".exe" : ""}`
      : "dist/legate");
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    try {
      if (!(await Deno.stat(denort)).isFile) throw new Deno.errors.NotFound();
    } catch {
      console.error(
        `compile: DENORT_BIN is "${denort}", which is not a file: point it at the denort ${Deno.version.deno} binary for the target`,
      );
      return 1;
    }
  }
  const result = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(target, output),
    cwd: ROOT,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (result.success) {
    console.log(`compile: wrote ${output}`);
    return 0;
  }
  const stderr = new TextDecoder().decode(result.stderr);
  if (
    denort === undefined &&
    /dl\.deno\.land|denort|dns error|download/i.test(stderr)
  ) {
    console.error(
      `compile: deno compile could not download the denort ${Deno.version.deno} runtime stub for ${
        target ?? Deno.build.target
      }: set DENORT_BIN to a local denort of Deno ${Deno.version.deno}, or build with internet access`,
    );
    return 1;
  }
  console.error(stderr.trimEnd());
  return 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

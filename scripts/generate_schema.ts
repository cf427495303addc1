/**
 * Writes schema/route.schema.json from the zod schema that validates route
 * files. Run with `deno task schema`; a test fails when the file is stale.
 * @module
 */
import { routeFileJsonSchema } from "../mod.ts";

/** The schema file's text, as committed. */
export function routeSchemaText(): string {
  return JSON.stringify(routeFileJsonSchema(), null, 2) + "\n";
}

if (import.meta.main) {
  const path = new URL("../schema/route.schema.json", import.meta.url);
  await Deno.writeTextFile(path, routeSchemaText());
  console.log(`wrote ${path.pathname}`);
}

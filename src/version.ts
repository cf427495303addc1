/**
 * legate's version, from deno.json: the one place it is written.
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** legate's version, as `legate --version` prints it. */
export const VERSION: string = denoJson.version;

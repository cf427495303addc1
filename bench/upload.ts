/**
 * The upload load of `deno task bench`: curl sends one file to `POST /upload`
 * again and again for `--seconds` (at least once), either with Content-Length
 * (`curl -T FILE`) or piped through `cat` as chunked transfer encoding
 * (`cat FILE | curl -T - -H 'Transfer-Encoding: chunked'`). Every answer must
 * be 200 with the upstream's count of the bytes it read, the file's size.
 * Prints one JSON line: `{ throughput (MB/s), work (bytes), seconds, errors,
 * p50Ms, p99Ms }`, the percentiles over whole uploads.
 *
 * ```sh
 * deno run --allow-run --allow-read bench/upload.ts cl|chunked --port P --file F --seconds 6
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import type { LoadResult } from "./tcp_load.ts";

const MAX_UPLOADS = 1_000;

/** The shell command of one upload of `file` to 127.0.0.1:`port`. */
function uploadCommand(
  mode: "cl" | "chunked",
  port: number | string,
  file: string,
): string {
  const curl =
    `curl -sS --fail -X POST -o - -w ' %{http_code} %{size_upload}' http://127.0.0.1:${port}/upload`;
  return mode === "cl"
    ? `${curl} -T ${file}`
    : `cat ${file} | ${curl} -T - -H 'Transfer-Encoding: chunked'`;
}

async function main(): Promise<LoadResult> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      port: { type: "string" },
      file: { type: "string" },
      seconds: { type: "string", default: "6" },
    },
  });
  const mode = positionals[0];
  if ((mode !== "cl" && mode !== "chunked") || !values.port || !values.file) {
    console.error(
      "usage: upload.ts cl|chunked --port P --file F [--seconds S]",
    );
    Deno.exit(2);
  }
  const size = (await Deno.stat(values.file)).size;
  const command = uploadCommand(mode, values.port, values.file);
  const times: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + Number(values.seconds) * 1000;
  while (
    times.length + errors < MAX_UPLOADS &&
    (times.length + errors === 0 || performance.now() < deadline)
  ) {
    const start = performance.now();
    const out = await new Deno.Command("sh", {
      args: ["-c", command],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split(/\s+/);
    // the upstream's count, the status, and what curl sent
    if (out.code === 0 && text[0] === String(size) && text[1] === "200") {
      times.push(performance.now() - start);
    } else {
      errors++;
      console.error(
        `upload failed (${out.code}): ${text.join(" ")} ${
          new TextDecoder().decode(out.stderr)
        }`,
      );
    }
  }
  const seconds = times.reduce((a, b) => a + b, 0) / 1000;
  const sorted = times.sort((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return {
    throughput: seconds > 0 ? size * times.length / seconds / 1e6 : 0,
    work: size * times.length,
    seconds,
    errors,
    ...(sorted.length > 0 ? { p50Ms: at(0.5), p99Ms: at(0.99) } : {}),
  };
}

if (import.meta.main) console.log(JSON.stringify(await main()));

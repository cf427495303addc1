/**
 * The TCP load client of the benchmark (a separate process, so its CPU is
 * never counted as the proxy's). Plain read/write loops on `Deno.connect`, no
 * Web Streams. Prints one JSON line: `{ throughput, work, seconds, errors,
 * p50Ms?, p99Ms? }`.
 *
 * ```sh
 * deno run --allow-net bench/tcp_load.ts bulk    --port P --bytes 2147483648
 * deno run --allow-net bench/tcp_load.ts connect --port P --seconds 6 --workers 32
 * deno run --allow-net bench/tcp_load.ts latency --port P --seconds 6 --conns 200
 * ```
 *
 * - `bulk`: one connection to the sink sends an 8-byte length and that many
 *   bytes in 256 KiB writes, then waits for the one-byte answer; GB/s.
 * - `connect`: `--workers` loops of connect, 16-byte echo round trip, close
 *   against the echo server; connections/s and per-connection latency.
 * - `latency`: `--conns` connections to the echo server, each doing 64-byte
 *   round trips one after another; round trips/s and p50/p99 of one trip.
 * @module
 */
import { closeQuietly, readFull, writeAll } from "./socket_io.ts";
import { parseArgs } from "node:util";

const HOST = "127.0.0.1";
const MAX_SAMPLES = 4_000_000;
const MAX_ERRORS = 1_000;

/** What one load run measured. */
export interface LoadResult {
  /** GB/s (bulk), connections/s (connect) or round trips/s (latency). */
  throughput: number;
  /** Bytes, connections or round trips completed. */
  work: number;
  /** Duration of the measured part, seconds. */
  seconds: number;
  /** Failed connections or round trips. */
  errors: number;
  /** Median latency, ms. */
  p50Ms?: number;
  /** 99th percentile latency, ms. */
  p99Ms?: number;
}

/** Latency samples in a fixed-size buffer (later samples are dropped). */
class Recorder {
  readonly #ms = new Float64Array(MAX_SAMPLES);
  #count = 0;
  add(ms: number): void {
    if (this.#count < this.#ms.length) this.#ms[this.#count++] = ms;
  }
  percentiles(): { p50Ms?: number; p99Ms?: number } {
    if (this.#count === 0) return {};
    const s = this.#ms.slice(0, this.#count).sort();
    const at = (q: number) =>
      s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
    return { p50Ms: at(0.5), p99Ms: at(0.99) };
  }
}

async function connect(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: HOST, port });
  conn.setNoDelay(true);
  return conn;
}

/** Sends `total` bytes to the sink on `port` over one connection. */
export async function bulk(port: number, total: number): Promise<LoadResult> {
  const chunk = new Uint8Array(256 * 1024).fill(0x5a);
  const header = new Uint8Array(8);
  new DataView(header.buffer).setBigUint64(0, BigInt(total));
  const t0 = performance.now();
  const conn = await connect(port);
  try {
    await writeAll(conn, header);
    for (let left = total; left > 0;) {
      left -= await conn.write(chunk.subarray(0, Math.min(chunk.length, left)));
    }
    await readFull(conn, new Uint8Array(1));
  } finally {
    closeQuietly(conn);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { throughput: total / seconds / 1e9, work: total, seconds, errors: 0 };
}

/** Connect, echo 16 bytes, close, in `workers` parallel loops for `seconds`. */
export async function connectRate(
  port: number,
  seconds: number,
  workers: number,
): Promise<LoadResult> {
  const rec = new Recorder();
  const message = new Uint8Array(16).fill(0x31);
  let done = 0;
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async () => {
    const buf = new Uint8Array(message.length);
    while (performance.now() < deadline && errors < MAX_ERRORS) {
      const start = performance.now();
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await connect(port);
        await writeAll(conn, message);
        await readFull(conn, buf);
        done++;
        rec.add(performance.now() - start);
      } catch {
        errors++;
      } finally {
        if (conn) closeQuietly(conn);
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  return {
    throughput: done / elapsed,
    work: done,
    seconds: elapsed,
    errors,
    ...rec.percentiles(),
  };
}

/** `conns` connections doing 64-byte echo round trips for `seconds`. */
export async function latency(
  port: number,
  seconds: number,
  conns: number,
): Promise<LoadResult> {
  const open: Deno.TcpConn[] = [];
  try {
    // open in batches so that no listen backlog overflows
    for (let i = 0; i < conns; i += 25) {
      const batch = Math.min(25, conns - i);
      open.push(
        ...await Promise.all(
          Array.from({ length: batch }, () => connect(port)),
        ),
      );
    }
    const rec = new Recorder();
    const message = new Uint8Array(64).fill(0x32);
    let trips = 0;
    let errors = 0;
    const t0 = performance.now();
    const deadline = t0 + seconds * 1000;
    const loop = async (conn: Deno.TcpConn) => {
      const buf = new Uint8Array(message.length);
      try {
        while (performance.now() < deadline) {
          const start = performance.now();
          await writeAll(conn, message);
          await readFull(conn, buf);
          trips++;
          rec.add(performance.now() - start);
        }
      } catch {
        errors++;
      }
    };
    await Promise.all(open.map(loop));
    const elapsed = (performance.now() - t0) / 1000;
    return {
      throughput: trips / elapsed,
      work: trips,
      seconds: elapsed,
      errors,
      ...rec.percentiles(),
    };
  } finally {
    for (const conn of open) closeQuietly(conn);
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      port: { type: "string" },
      bytes: { type: "string", default: String(1024 ** 3) },
      seconds: { type: "string", default: "5" },
      workers: { type: "string", default: "32" },
      conns: { type: "string", default: "200" },
    },
  });
  const port = Number(values.port);
  const mode = positionals[0];
  let result: LoadResult;
  if (mode === "bulk") result = await bulk(port, Number(values.bytes));
  else if (mode === "connect") {
    result = await connectRate(
      port,
      Number(values.seconds),
      Number(values.workers),
    );
  } else if (mode === "latency") {
    result = await latency(port, Number(values.seconds), Number(values.conns));
  } else {
    console.error("usage: tcp_load.ts bulk|connect|latency --port P ...");
    Deno.exit(2);
  }
  console.log(JSON.stringify(result));
}

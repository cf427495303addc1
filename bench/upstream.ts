/**
 * The benchmark's upstreams, in one Deno process started by bench/main.ts:
 *
 * - an HTTP origin (`Deno.serve`): `GET /big` answers a fixed 10 MiB body,
 *   any other path a fixed 100-byte body;
 * - a TCP echo server: every byte read is written back;
 * - a TCP sink: reads an 8-byte big-endian length, then that many bytes, then
 *   answers one byte `k`.
 *
 * TCP servers use read/write loops on 64 KiB buffers. The ports (all on
 * 127.0.0.1, chosen by binding port 0) are printed as one JSON line. The
 * process exits when its stdin closes (its parent went away) or after
 * `--max-seconds` (default 3600).
 * @module
 */
import { closeQuietly, readFull, writeAll } from "./socket_io.ts";

const HOST = "127.0.0.1";
const SMALL = new Uint8Array(100).fill(0x61);
const BIG = new Uint8Array(10 * 1024 * 1024).fill(0x62);

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    // ends at the client's EOF or on an error
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      await writeAll(conn, buf.subarray(0, n));
    }
  } catch {
    // client reset: nothing to do
  } finally {
    closeQuietly(conn);
  }
}

async function sink(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    const header = new Uint8Array(8);
    await readFull(conn, header);
    let left = Number(new DataView(header.buffer).getBigUint64(0));
    while (left > 0) {
      const n = await conn.read(buf.subarray(0, Math.min(buf.length, left)));
      if (n === null) throw new Error("unexpected EOF");
      left -= n;
    }
    await writeAll(conn, new Uint8Array([0x6b]));
    await conn.read(buf); // wait for the client to close
  } catch {
    // client went away early
  } finally {
    closeQuietly(conn);
  }
}

function serveTcp(handler: (conn: Deno.Conn) => Promise<void>): number {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  (async () => {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return; // closed
        // A connection reset before it was accepted (readiness probes do
        // that) fails alone; the listener goes on.
        continue;
      }
      (conn as Deno.TcpConn).setNoDelay(true);
      handler(conn);
    }
  })();
  return (listener.addr as Deno.NetAddr).port;
}

const maxArg = Deno.args.indexOf("--max-seconds");
const maxSeconds = maxArg >= 0 ? Number(Deno.args[maxArg + 1]) : 3600;
setTimeout(() => Deno.exit(0), maxSeconds * 1000);

const http = Deno.serve(
  { hostname: HOST, port: 0, onListen() {} },
  (req) =>
    req.url.endsWith("/big")
      ? new Response(BIG, {
        headers: { "content-type": "application/octet-stream" },
      })
      : new Response(SMALL, { headers: { "content-type": "text/plain" } }),
);
const ports = {
  http: http.addr.port,
  echo: serveTcp(echo),
  sink: serveTcp(sink),
};
console.log(JSON.stringify(ports));

// exit once the parent closes our stdin (or dies)
const buf = new Uint8Array(1024);
while ((await Deno.stdin.read(buf)) !== null) {
  // discard
}
Deno.exit(0);

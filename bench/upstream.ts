/**
 * The benchmark's upstreams that nginx cannot be, in one Deno process started
 * by bench/main.ts (nginx serves the HTTP downloads, redis-server the Redis
 * load):
 *
 * - an upload server: HTTP/1.1 on raw sockets (bench/http1.ts), keep-alive;
 *   every request's body, Content-Length or chunked, is read to its end and
 *   counted, and only then answered `200` with the byte count as its body
 *   (nginx's `return` answers before it reads the body); `Expect:
 *   100-continue` gets its `100 Continue` first;
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
import { body, framing, Reader } from "./http1.ts";
import { closeQuietly, readFull, writeAll } from "./socket_io.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();
const CONTINUE = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");

async function upload(conn: Deno.Conn): Promise<void> {
  const reader = new Reader(conn);
  try {
    for (let head = await reader.head(); head; head = await reader.head()) {
      // as any origin: curl waits up to a second for this before a big body
      if (
        head.fields.some(([k, v]) => k === "expect" && /100-continue/i.test(v))
      ) {
        await writeAll(conn, CONTINUE);
      }
      let bytes = 0;
      for await (const chunk of body(reader, framing(head.fields, true))) {
        bytes += chunk.length;
      }
      const text = `${bytes}\n`;
      await writeAll(
        conn,
        encoder.encode(
          `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${text.length}\r\n\r\n${text}`,
        ),
      );
    }
  } catch {
    // client reset or malformed request: drop the connection
  } finally {
    closeQuietly(conn);
  }
}

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

const ports = {
  upload: serveTcp(upload),
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

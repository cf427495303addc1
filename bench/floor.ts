/**
 * The Deno floor of `deno task bench`: the smallest correct proxy Deno can
 * be, so that the report shows what Deno itself costs beside what legate
 * costs. One process, started like legate (the flags of `deno task start`):
 *
 * ```sh
 * deno run --allow-net bench/floor.ts http:LISTEN:UPSTREAM tcp:LISTEN:UPSTREAM ...
 * ```
 *
 * - `http:` a `Deno.serve` forwarder over pooled keep-alive HTTP/1.1
 *   connections to 127.0.0.1:UPSTREAM (an idle stack): it writes the request
 *   head with the client's header fields as they are, and the body streamed
 *   with Content-Length or chunked framing, parses the status line and header
 *   fields and streams the response body by Content-Length or chunked
 *   framing (a body that arrived whole with its head is passed as bytes).
 *   Interim 1xx answers are skipped. Nothing else: no forwarding headers, no hop-by-hop filtering
 *   beyond the framing fields, no timeouts.
 * - `tcp:` a relay: two read/write loops on 64 KiB buffers, no delay on both
 *   sides, half-close passed on.
 *
 * It prints `ready` once every listener is bound.
 * @module
 */
import { body, framing, type Head, Reader } from "./http1.ts";
import { closeQuietly, writeAll } from "./socket_io.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");

/** A pooled upstream connection and its reader. */
interface Upstream {
  readonly conn: Deno.TcpConn;
  readonly reader: Reader;
}

async function open(port: number): Promise<Upstream> {
  const conn = await Deno.connect({ hostname: HOST, port });
  conn.setNoDelay(true);
  return { conn, reader: new Reader(conn) };
}

/** Writes the request head and its body with the client's framing. */
async function send(up: Upstream, req: Request): Promise<void> {
  const path = req.url.slice(req.url.indexOf("/", 8));
  let head = `${req.method} ${path} HTTP/1.1\r\n`;
  let length: string | null = null;
  for (const [name, value] of req.headers) {
    if (name === "content-length") length = value;
    else if (name !== "transfer-encoding") head += `${name}: ${value}\r\n`;
  }
  if (req.body === null) {
    await writeAll(up.conn, encoder.encode(head + "\r\n"));
    return;
  }
  const chunked = length === null;
  head += chunked
    ? "transfer-encoding: chunked\r\n\r\n"
    : `content-length: ${length}\r\n\r\n`;
  await writeAll(up.conn, encoder.encode(head));
  for await (const chunk of req.body) {
    if (chunk.length === 0) continue;
    await writeAll(up.conn, chunked ? frame(chunk) : chunk);
  }
  if (chunked) await writeAll(up.conn, encoder.encode("0\r\n\r\n"));
}

/** `chunk` as one chunk of chunked encoding, in one array: one write per chunk. */
function frame(chunk: Uint8Array): Uint8Array {
  const size = encoder.encode(`${chunk.length.toString(16)}\r\n`);
  const out = new Uint8Array(size.length + chunk.length + 2);
  out.set(size);
  out.set(chunk, size.length);
  out.set(CRLF, size.length + chunk.length);
  return out;
}

/** Forwards HTTP from `listen` to `port`. */
function serveHttp(listen: number, port: number): void {
  const idle: Upstream[] = [];
  const handler = async (req: Request): Promise<Response> => {
    let up = idle.pop();
    const reused = up !== undefined;
    up ??= await open(port);
    let sent = send(up, req);
    sent.catch(() => {}); // observed below, after the response head
    let head: Head | null;
    try {
      head = await up.reader.head();
      // interim answers (100 Continue to a forwarded Expect): the final one follows
      while (head?.first.startsWith("HTTP/1.1 1")) {
        head = await up.reader.head();
      }
    } catch (error) {
      closeQuietly(up.conn);
      throw error;
    }
    if (head === null) {
      closeQuietly(up.conn);
      // an idle connection the upstream closed: once more on a new one
      if (!reused || req.body !== null) throw new Error("upstream closed");
      up = await open(port);
      sent = send(up, req);
      head = await up.reader.head();
      if (head === null) throw new Error("upstream closed");
    }
    const status = Number(head.first.slice(9, 12));
    const headers: [string, string][] = [];
    let reusable = true;
    for (const field of head.fields) {
      if (field[0] === "connection") reusable = !/close/i.test(field[1]);
      else if (field[0] !== "transfer-encoding") headers.push(field);
    }
    const f = framing(
      head.fields,
      req.method === "HEAD" || status === 204 || status === 304,
    );
    const conn = up;
    const done = async () => {
      await sent;
      if (reusable && f.kind !== "close") idle.push(conn);
      else closeQuietly(conn.conn);
    };
    // a body that came whole with the head goes out as bytes, without a stream
    const whole = f.kind === "length"
      ? conn.reader.buffered(f.length)
      : undefined;
    if (whole) {
      await done();
      return new Response(whole.length === 0 ? null : whole, {
        status,
        headers,
      });
    }
    const chunks = body(conn.reader, f);
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          try {
            const next = await chunks.next();
            if (next.done) {
              controller.close();
              await done();
            } else controller.enqueue(next.value);
          } catch (error) {
            closeQuietly(conn.conn);
            controller.error(error);
          }
        },
        cancel() {
          closeQuietly(conn.conn);
        },
      }, { highWaterMark: 0 }),
      { status, headers },
    );
  };
  Deno.serve({ hostname: HOST, port: listen, onListen() {} }, handler);
}

/** Copies `from` to `to` until EOF, then half-closes `to`. */
async function pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    await writeAll(to, buf.subarray(0, n));
  }
  await to.closeWrite();
}

/** Relays TCP from `listen` to `port`. */
function serveTcp(listen: number, port: number): void {
  const listener = Deno.listen({ hostname: HOST, port: listen });
  (async () => {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return; // closed
        continue; // a connection reset before it was accepted fails alone
      }
      client.setNoDelay(true);
      Deno.connect({ hostname: HOST, port }).then(async (upstream) => {
        upstream.setNoDelay(true);
        await Promise.all([pump(client, upstream), pump(upstream, client)])
          .catch(() => {});
        closeQuietly(client);
        closeQuietly(upstream);
      }, () => closeQuietly(client));
    }
  })();
}

for (const arg of Deno.args) {
  const [kind, listen, port] = arg.split(":");
  if (kind === "http") serveHttp(Number(listen), Number(port));
  else if (kind === "tcp") serveTcp(Number(listen), Number(port));
  else {throw new Error(
      `unknown service ${arg}: use http:LISTEN:UPSTREAM or tcp:LISTEN:UPSTREAM`,
    );}
}
console.log("ready");

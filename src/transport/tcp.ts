/**
 * The TCP transport: copies bytes both ways between a client and an upstream
 * connection with read/write loops over pooled buffers (Web Streams cost about
 * three times the CPU here), respecting half-close: when one side ends its
 * writes, the other side sees EOF and the reply still flows back.
 * @module
 */
import { closeQuietly, writeAll } from "./connect.ts";
import { IdleTimer } from "./idle_timer.ts";

/**
 * Each direction starts with a small buffer and moves to a large one once a
 * read fills it: chatty connections stay cheap (200 of them hold 6 MiB, not
 * 50), and bulk transfers get the large buffers that throughput needs.
 */
const SMALL_BYTES = 16 * 1024;
const LARGE_BYTES = 256 * 1024;
/** What the pools keep after a burst, per size: 256 small or 16 large buffers. */
const POOLED_BYTES_PER_SIZE = 4 * 1024 * 1024;
const pools = new Map<number, Uint8Array[]>([[SMALL_BYTES, []], [
  LARGE_BYTES,
  [],
]]);

function takeBuffer(size: number): Uint8Array {
  return pools.get(size)!.pop() ?? new Uint8Array(size);
}

function returnBuffer(buffer: Uint8Array): void {
  const pool = pools.get(buffer.length)!;
  if ((pool.length + 1) * buffer.length <= POOLED_BYTES_PER_SIZE) {
    pool.push(buffer);
  }
}

/** How a relayed connection ended. */
export interface RelayResult {
  /** Bytes from client to upstream. */
  readonly sent: number;
  /** Bytes from upstream to client. */
  readonly received: number;
  /** Why it ended: both sides finished, one failed, it idled out, or it was cut. */
  readonly end: "closed" | "error" | "idle" | "cut";
}

/** Bytes a relay has read so far from each side, to write to the other. */
export interface RelayBytes {
  /** From client to upstream. */
  readonly sent: number;
  /** From upstream to client. */
  readonly received: number;
}

/** A running relay; `cut()` closes both sides at once. */
export interface Relay {
  /** What has moved so far, for metrics of connections that last. */
  readonly bytes: RelayBytes;
  /** Settles when both directions are done and both connections are closed. */
  readonly done: Promise<RelayResult>;
  /** Closes both connections now, e.g. when a drain deadline passes. */
  cut(): void;
}

/**
 * Relays bytes between `client` and `upstream` until both directions end, one
 * side fails, or nothing moves for `idleMs`. Both connections are closed after.
 *
 * @example Relays both ways and reports the bytes
 * ```ts
 * import assert from "node:assert/strict";
 * import { relay } from "./tcp.ts";
 * // An upstream that answers "pong" once the client is done sending.
 * using upstreams = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * (async () => {
 *   const conn = await upstreams.accept();
 *   while (await conn.read(new Uint8Array(64)) !== null);
 *   await conn.write(new TextEncoder().encode("pong"));
 *   conn.close();
 * })();
 * using clients = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const port = (listener: Deno.Listener) => (listener.addr as Deno.NetAddr).port;
 * const client = await Deno.connect({ hostname: "127.0.0.1", port: port(clients) });
 * const { done } = relay(
 *   await clients.accept(),
 *   await Deno.connect({ hostname: "127.0.0.1", port: port(upstreams) }),
 *   60_000,
 * );
 * await client.write(new TextEncoder().encode("ping"));
 * await client.closeWrite(); // half-close: the reply still comes back
 * const reply = new Uint8Array(4);
 * assert.equal(await client.read(reply), 4);
 * assert.equal(new TextDecoder().decode(reply), "pong");
 * assert.deepEqual(await done, { sent: 4, received: 4, end: "closed" });
 * client.close();
 * ```
 */
export function relay(
  client: Deno.Conn,
  upstream: Deno.Conn,
  idleMs: number,
): Relay {
  let end: RelayResult["end"] = "closed";
  const closeBoth = (reason: RelayResult["end"]) => {
    if (end === "closed") end = reason;
    closeQuietly(client);
    closeQuietly(upstream);
  };
  const idle = new IdleTimer(idleMs, () => closeBoth("idle"));
  const bytes = { sent: 0, received: 0 };
  const copy = async (
    from: Deno.Conn,
    to: Deno.Conn,
    direction: "sent" | "received",
  ): Promise<void> => {
    let buffer = takeBuffer(SMALL_BYTES);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        idle.touch();
        bytes[direction] += n;
        await writeAll(to, buffer.subarray(0, n));
        if (n === buffer.length && buffer.length === SMALL_BYTES) {
          returnBuffer(buffer);
          buffer = takeBuffer(LARGE_BYTES);
        }
      }
      await to.closeWrite();
    } catch {
      // A reset or a write to a closed peer ends the whole relay.
      closeBoth("error");
    } finally {
      returnBuffer(buffer);
    }
  };
  const done = Promise.all([
    copy(client, upstream, "sent"),
    copy(upstream, client, "received"),
  ]).then(() => {
    idle.stop();
    closeQuietly(client);
    closeQuietly(upstream);
    return { sent: bytes.sent, received: bytes.received, end };
  });
  return { bytes, done, cut: () => closeBoth("cut") };
}

/**
 * The TCP transport: copies bytes both ways between a client and an upstream
 * connection with read/write loops over pooled buffers (Web Streams cost about
 * three times the CPU here), respecting half-close: when one side ends its
 * writes, the other side sees EOF and the reply still flows back.
 * @module
 */
import { closeQuietly, writeAll } from "./connect.ts";
import { IdleTimer } from "./idle_timer.ts";

const BUFFER_BYTES = 64 * 1024;
const POOLED_BUFFERS = 256;
const freeBuffers: Uint8Array[] = [];

function takeBuffer(): Uint8Array {
  return freeBuffers.pop() ?? new Uint8Array(BUFFER_BYTES);
}

function returnBuffer(buffer: Uint8Array): void {
  if (freeBuffers.length < POOLED_BUFFERS) freeBuffers.push(buffer);
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

/** A running relay; `cut()` closes both sides at once. */
export interface Relay {
  /** Settles when both directions are done and both connections are closed. */
  readonly done: Promise<RelayResult>;
  /** Closes both connections now, e.g. when a drain deadline passes. */
  cut(): void;
}

/**
 * Relays bytes between `client` and `upstream` until both directions end, one
 * side fails, or nothing moves for `idleMs`. Both connections are closed after.
 *
 * @example Usage
 * ```ts ignore
 * import { relay } from "./tcp.ts";
 * const { done } = relay(client, upstream, 3_600_000);
 * const { sent, received } = await done;
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
  const copy = async (from: Deno.Conn, to: Deno.Conn): Promise<number> => {
    const buffer = takeBuffer();
    let total = 0;
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        idle.touch();
        await writeAll(to, buffer.subarray(0, n));
        total += n;
      }
      await to.closeWrite();
    } catch {
      // A reset or a write to a closed peer ends the whole relay.
      closeBoth("error");
    } finally {
      returnBuffer(buffer);
    }
    return total;
  };
  const done = Promise.all([copy(client, upstream), copy(upstream, client)])
    .then(
      ([sent, received]) => {
        idle.stop();
        closeQuietly(client);
        closeQuietly(upstream);
        return { sent, received, end };
      },
    );
  return { done, cut: () => closeBoth("cut") };
}

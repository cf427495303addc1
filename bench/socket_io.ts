/**
 * Socket helpers shared by the bench's upstream and load client, which run as
 * processes of their own: legate's write-all and quiet close, and a read of
 * exactly one buffer.
 * @module
 */
export { closeQuietly, writeAll } from "../src/transport/connect.ts";

/** Fills `buf` from `conn`; throws when the connection ends first. */
export async function readFull(
  conn: Deno.Conn,
  buf: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await conn.read(buf.subarray(off));
    if (n === null) throw new Error("unexpected EOF");
    off += n;
  }
}

/**
 * One upstream HTTP/1.1 connection with its read buffer: reading a response
 * head, CRLF-terminated lines and body bytes, and the idle read that notices
 * an upstream closing a pooled connection.
 *
 * It knows bytes and line endings; what the bytes mean is parse's job.
 * @module
 */
import { closeQuietly } from "../connect.ts";
import { ProxyError } from "../errors.ts";
import { decodeLatin1, MAX_HEAD_BYTES } from "./parse.ts";

/** The socket operations a connection uses; `Deno.Conn` has them. */
export interface ByteStream {
  /** Reads into `buffer`; resolves with the byte count, or null at EOF. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; resolves with how much. */
  write(data: Uint8Array): Promise<number>;
  /** Closes the stream. */
  close(): void;
}

/**
 * The size of a connection's first read of body bytes, and of the reads after
 * one that came back small.
 */
export const READ_CHUNK_BYTES = 64 * 1024;
/**
 * The largest read of body bytes. A read that fills its buffer makes the next
 * one 4 times larger, up to this: each chunk costs the same to pass through
 * JavaScript into Deno's server whatever its size, and 10 MiB downloads ran at
 * 0.87–0.94 GB/s in 64 KiB chunks, 1.26–1.32 GB/s in 1 MiB ones.
 */
const MAX_READ_CHUNK_BYTES = 1024 * 1024;

/** One upstream connection and the bytes read from it but not yet used. */
export class Http1Connection {
  /** The socket. */
  readonly conn: ByteStream;
  #buffer = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;
  /** Whether it was closed; a closed connection is never used again. */
  closed = false;
  /** Whether an earlier exchange used it, so a failure may mean it went stale while idle. */
  reused = false;
  /** Whether any byte arrived during the current exchange. */
  receivedAny = false;
  /** When it last entered the pool, in epoch milliseconds. */
  idleSince = 0;
  /** Until when the upstream said it keeps the connection open, in epoch milliseconds. */
  usableUntil = Infinity;
  /** How long opening it took, in milliseconds, until its first exchange reports it. */
  connectMs: number | null = null;
  /** A read issued while pooled, so a close by the upstream is noticed at once. */
  #pendingRead: Promise<number | null> | null = null;
  #pendingSettled = false;
  #inPool = false;
  /** The size of the next read of body bytes. */
  #readBytes = READ_CHUNK_BYTES;

  /** Wraps `conn`. */
  constructor(conn: ByteStream) {
    this.conn = conn;
  }

  /** Bytes read but not consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Closes the socket (again is harmless). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn as Deno.Conn);
  }

  /**
   * Marks the connection idle and starts a read: any outcome of it while
   * pooled (EOF, reset, stray bytes) calls `retire`, which drops it.
   */
  enterPool(retire: () => void): void {
    this.#inPool = true;
    this.idleSince = Date.now();
    this.receivedAny = false;
    this.#start = this.#end = 0;
    const read = this.conn.read(this.#buffer);
    this.#pendingRead = read;
    this.#pendingSettled = false;
    const settled = () => {
      this.#pendingSettled = true;
      if (this.#inPool) {
        retire();
        this.close();
      }
    };
    read.then(settled, settled);
  }

  /** Marks the connection in use again. */
  leavePool(): void {
    this.#inPool = false;
  }

  /**
   * Whether the upstream closed the connection, or sent something, since it
   * was pooled: then it must not carry a request.
   */
  get stale(): boolean {
    return this.#pendingSettled || this.closed;
  }

  /** Reads more bytes into the buffer; false at EOF. */
  async fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buffer.length) {
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else {
        const grown = new Uint8Array(this.#buffer.length * 2);
        grown.set(this.#buffer);
        this.#buffer = grown;
      }
    }
    let n: number | null;
    if (this.#pendingRead) {
      const pending = this.#pendingRead;
      this.#pendingRead = null;
      n = await pending;
    } else {
      n = await this.conn.read(this.#buffer.subarray(this.#end));
    }
    if (n === null) return false;
    this.receivedAny = true;
    this.#end += n;
    return true;
  }

  /**
   * Reads up to the blank line that ends a head and returns the head's bytes
   * without it; the rest stays buffered.
   *
   * @throws {ProxyError} When the head exceeds 64 KiB or the upstream closes first.
   */
  async readHead(): Promise<Uint8Array> {
    let searched = this.#start;
    while (true) {
      const buffer = this.#buffer;
      // Only the first 64 KiB may hold the head, however much has arrived.
      const end = Math.min(this.#end, this.#start + MAX_HEAD_BYTES + 4);
      for (let i = Math.max(searched, this.#start); i + 3 < end; i++) {
        if (
          buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 &&
          buffer[i + 3] === 10
        ) {
          const head = buffer.slice(this.#start, i);
          this.#start = i + 4;
          return head;
        }
      }
      // More than the head and the first 3 bytes of its blank line can hold.
      if (this.#end - this.#start > MAX_HEAD_BYTES + 3) {
        throw new ProxyError(
          "http_protocol_error",
          "upstream response headers exceed 64 KiB",
        );
      }
      // Resume the search where it stopped, less the 3 bytes that may start a CRLF CRLF.
      searched = Math.max(this.#start, end - 3);
      const offset = searched - this.#start;
      if (!(await this.fill())) {
        throw new ProxyError(
          "connection_terminated",
          this.receivedAny
            ? "upstream closed the connection inside the response headers"
            : "upstream closed the connection without responding",
        );
      }
      searched = this.#start + offset;
    }
  }

  /**
   * Copies out up to `max` buffered bytes, or reads a fresh chunk; null at
   * EOF. Reads grow while they come back full (see
   * MAX_READ_CHUNK_BYTES); a small read after large ones is
   * copied out, so that a few bytes never hold a large buffer.
   */
  async readChunk(max: number): Promise<Uint8Array | null> {
    if (this.#end > this.#start) {
      const n = Math.min(max, this.#end - this.#start);
      const chunk = this.#buffer.slice(this.#start, this.#start + n);
      this.#start += n;
      return chunk;
    }
    const chunk = new Uint8Array(Math.min(max, this.#readBytes));
    const n = await this.conn.read(chunk);
    if (n === null) return null;
    this.receivedAny = true;
    if (n === this.#readBytes) {
      this.#readBytes = Math.min(n * 4, MAX_READ_CHUNK_BYTES);
    } else if (chunk.length > READ_CHUNK_BYTES && n <= chunk.length / 4) {
      this.#readBytes = READ_CHUNK_BYTES;
      return chunk.slice(0, n);
    }
    return chunk.subarray(0, n);
  }

  /** Reads exactly `length` bytes; throws when the upstream ends first. */
  async readExactly(length: number): Promise<Uint8Array<ArrayBuffer>> {
    while (this.#end - this.#start < length) {
      if (!(await this.fill())) {
        throw new ProxyError(
          "connection_terminated",
          "upstream closed the connection before the body ended",
        );
      }
    }
    const bytes = this.#buffer.slice(this.#start, this.#start + length);
    this.#start += length;
    return bytes;
  }

  /**
   * Reads one line ended by CRLF and returns it without the CRLF; null at
   * EOF. A bare LF is a protocol error: a line that ends differently for
   * legate and for the upstream is how responses get split two ways.
   */
  async readLine(): Promise<string | null> {
    let searched = this.#start;
    while (true) {
      const index = this.#buffer.subarray(searched, this.#end).indexOf(10);
      if (index >= 0) {
        const lineEnd = searched + index;
        if (lineEnd - this.#start > MAX_HEAD_BYTES) throw lineTooLong();
        if (lineEnd === this.#start || this.#buffer[lineEnd - 1] !== 13) {
          throw new ProxyError(
            "http_protocol_error",
            "upstream sent a line ending in a bare LF",
          );
        }
        const text = decodeLatin1(
          this.#buffer.subarray(this.#start, lineEnd - 1),
        );
        this.#start = lineEnd + 1;
        if (text.includes("\r")) {
          throw new ProxyError(
            "http_protocol_error",
            "upstream sent a bare CR inside a line",
          );
        }
        return text;
      }
      if (this.#end - this.#start > MAX_HEAD_BYTES) throw lineTooLong();
      const offset = this.#end - this.#start;
      if (!(await this.fill())) return null;
      searched = this.#start + offset;
    }
  }
}

function lineTooLong(): ProxyError {
  return new ProxyError(
    "http_protocol_error",
    "upstream sent a line longer than 64 KiB",
  );
}

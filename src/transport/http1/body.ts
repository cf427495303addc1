/**
 * Body framing in both directions: the request body written upstream (with
 * Content-Length or chunked framing) and the response body read back as a
 * stream, decoding Content-Length, chunked or close-delimited framing.
 *
 * Bodies stream: a response stream holds at most one chunk read ahead of
 * its reader, an upload at most its 2 MiB read-ahead and the write on its way.
 * @module
 */
import { writeAll } from "../connect.ts";
import { classifySocketError, ProxyError } from "../errors.ts";
import { IdleTimer } from "../idle_timer.ts";
import { type Http1Connection, READ_CHUNK_BYTES } from "./connection.ts";
import { frameChunk } from "./encode.ts";
import {
  checkTrailerLine,
  type Framing,
  MAX_HEAD_BYTES,
  parseChunkSize,
} from "./parse.ts";

/**
 * How many bytes of a request body may wait in legate to be written upstream
 * while the next ones are read from the client: 2 MiB. Reading ahead keeps a
 * backlog out of Deno's HTTP/1.1 server, which moves the rest of its buffer
 * after each chunk of a chunked body it hands over: with reading paused during
 * every upstream write, a piped 200 MB upload took 3–5 s instead of 0.25 s.
 * The same upload took (medians) 2.7 s with 256 KiB, 0.65 s with 1 MiB, 0.43
 * s with 2 MiB and 0.40 s with 4 MiB, against 0.24 s with Content-Length; so an
 * upload holds at most about 4 MiB (what waits, and the write on its way).
 */
const READ_AHEAD_BYTES = 2 * 1024 * 1024;

/**
 * Writes `body` to the connection: chunk-framed when `length` is null, else
 * exactly `length` bytes (a body that disagrees with its length is refused
 * rather than letting its excess reach the upstream as another request).
 * `progress` hears of every chunk read (the upload's idle timer).
 *
 * Reading and writing overlap: while one write is on its way, up to
 * {@link READ_AHEAD_BYTES} more are read, and what has gathered goes out as
 * one write (one chunk when chunked) when the write before it is done.
 *
 * Resolves with the body bytes written.
 *
 * @throws {ProxyError} `client_gone` when reading the client's body fails,
 *   `http_request_error` when it does not match its length; a socket error
 *   as it is when writing upstream fails.
 */
export async function writeRequestBody(
  connection: Http1Connection,
  body: ReadableStream<Uint8Array>,
  length: number | null,
  progress: IdleTimer,
): Promise<number> {
  const reader = body.getReader();
  // A failed write ends a wait for the client's next chunk.
  const upload = new Upload(
    connection.conn as Deno.Conn,
    length === null,
    (error) => reader.cancel(error).catch(() => {}),
  );
  let read = 0;
  try {
    while (true) {
      const chunk = await readChunk(reader);
      upload.check();
      if (chunk.done) break;
      if (chunk.value.length === 0) continue;
      read += chunk.value.length;
      if (length !== null && read > length) throw lengthMismatch(length);
      progress.touch();
      await upload.push(chunk.value);
    }
    if (length !== null && read !== length) throw lengthMismatch(length);
    await upload.end();
  } catch (error) {
    reader.cancel(error).catch(() => {});
    throw error;
  }
  return read;
}

async function readChunk(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  try {
    return await reader.read();
  } catch (error) {
    throw new ProxyError(
      "client_gone",
      `client request body failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/**
 * The writing half of an upload: chunks pushed while a write is on its way
 * wait, and go out together as the next write.
 */
class Upload {
  readonly #conn: Deno.Conn;
  readonly #chunked: boolean;
  readonly #onFailure: (error: unknown) => void;
  readonly #framing = { bytes: new Uint8Array(0) };
  #failure: { error: unknown } | undefined;
  #waiting: Uint8Array[] = [];
  #waitingBytes = 0;
  #writing: Promise<void> | undefined;
  /** The write on its way, when one is. */
  #write: Promise<void> | undefined;

  constructor(
    conn: Deno.Conn,
    chunked: boolean,
    onFailure: (error: unknown) => void,
  ) {
    this.#conn = conn;
    this.#chunked = chunked;
    this.#onFailure = onFailure;
  }

  /** Throws the error of a write that failed. */
  check(): void {
    if (this.#failure) throw this.#failure.error;
  }

  /** Queues `data`; waits only while the read-ahead is full. */
  async push(data: Uint8Array): Promise<void> {
    this.check();
    this.#waiting.push(data);
    this.#waitingBytes += data.length;
    if (!this.#writing) {
      this.#writing = this.#flush(false);
      // a failure is seen by the next step of the upload, not here
      this.#writing.catch(() => {});
    }
    // Reading goes on as soon as the write on its way is done and what
    // waits has been taken for the next one.
    if (this.#waitingBytes >= READ_AHEAD_BYTES) await this.#write;
  }

  /** Writes what waits, and the last chunk when chunked. */
  async end(): Promise<void> {
    if (this.#writing) await this.#writing;
    this.check();
    if (this.#waitingBytes > 0 || this.#chunked) await this.#flush(true);
  }

  /** Writes until nothing waits; `last` ends a chunked body with the rest. */
  async #flush(last: boolean): Promise<void> {
    try {
      while (this.#waiting.length > 0 || last) {
        const parts = this.#waiting;
        this.#waiting = [];
        this.#waitingBytes = 0;
        this.#write = writeAll(this.#conn, this.#frame(parts, last));
        await this.#write;
        last = false;
      }
    } catch (error) {
      this.#failure = { error };
      this.#onFailure(error);
      throw error;
    } finally {
      this.#writing = undefined;
    }
  }

  #frame(parts: Uint8Array[], last: boolean): Uint8Array {
    if (this.#chunked) return frameChunk(parts, this.#framing, last);
    if (parts.length === 1) return parts[0]!;
    let bytes = 0;
    for (const part of parts) bytes += part.length;
    if (this.#framing.bytes.length < bytes) {
      this.#framing.bytes = new Uint8Array(bytes);
    }
    let at = 0;
    for (const part of parts) {
      this.#framing.bytes.set(part, at);
      at += part.length;
    }
    return this.#framing.bytes.subarray(0, bytes);
  }
}

function lengthMismatch(length: number): ProxyError {
  return new ProxyError(
    "http_request_error",
    `client request body does not match its Content-Length of ${length}`,
  );
}

/**
 * The response body as a stream. `finish` learns once whether the
 * connection ended cleanly after it (the whole body read, nothing left over)
 * and may be reused, and how many body bytes were read.
 *
 * One chunk is read ahead, so that reading the upstream overlaps writing the
 * chunk before to the client: a 1 GiB download through one connection took
 * 0.94–1.09 s so, 0.87–1.39 s without.
 */
export function responseBodyStream(
  connection: Http1Connection,
  framing: Framing,
  idleMs: number,
  where: string,
  finish: (clean: boolean, received: number) => void,
): ReadableStream<Uint8Array> {
  const next = bodyReader(connection, framing, where);
  let settled = false;
  let received = 0;
  let idleFailure: ProxyError | undefined;
  const idle = new IdleTimer(idleMs, () => {
    idleFailure = new ProxyError(
      "idle_timeout",
      `${where}: no body bytes for ${idleMs}ms`,
    );
    connection.close();
  });
  const settle = (clean: boolean) => {
    if (settled) return;
    settled = true;
    idle.stop();
    finish(clean, received);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await next();
        if (chunk === null) {
          controller.close();
          settle(true);
          return;
        }
        idle.touch();
        received += chunk.length;
        controller.enqueue(chunk);
      } catch (error) {
        settle(false);
        controller.error(idleFailure ?? classifySocketError(error, where));
      }
    },
    cancel() {
      settle(false);
    },
  }, { highWaterMark: 1 });
}

/** A function that returns the next piece of the body, or null at its end. */
function bodyReader(
  connection: Http1Connection,
  framing: Framing,
  where: string,
): () => Promise<Uint8Array | null> {
  const truncated = () =>
    new ProxyError(
      "connection_terminated",
      `${where}: upstream closed the connection before the body ended`,
    );
  switch (framing.kind) {
    case "none":
      return () => Promise.resolve(null);
    case "close":
      return () => connection.readChunk(READ_CHUNK_BYTES);
    case "length": {
      let remaining = framing.length;
      return async () => {
        if (remaining === 0) return null;
        const chunk = await connection.readChunk(remaining);
        if (chunk === null) throw truncated();
        remaining -= chunk.length;
        return chunk;
      };
    }
    case "chunked": {
      let remaining = 0;
      let done = false;
      const line = async () => {
        const text = await connection.readLine();
        if (text === null) throw truncated();
        return text;
      };
      return async () => {
        if (done) return null;
        if (remaining === 0) {
          remaining = parseChunkSize(await line());
          if (remaining === 0) {
            // Trailers are read and dropped: Deno.serve cannot send them.
            let trailerBytes = 0;
            for (let text = await line(); text !== ""; text = await line()) {
              checkTrailerLine(text);
              trailerBytes += text.length + 2;
              if (trailerBytes > MAX_HEAD_BYTES) {
                throw new ProxyError(
                  "http_protocol_error",
                  `${where}: trailer section exceeds 64 KiB`,
                );
              }
            }
            done = true;
            return null;
          }
        }
        const chunk = await connection.readChunk(remaining);
        if (chunk === null) throw truncated();
        remaining -= chunk.length;
        if (remaining === 0 && (await line()) !== "") {
          throw new ProxyError(
            "http_protocol_error",
            `${where}: chunk not followed by CRLF`,
          );
        }
        return chunk;
      };
    }
  }
}

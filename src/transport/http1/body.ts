/**
 * Body framing in both directions: the request body written upstream (with
 * Content-Length or chunked framing) and the response body read back as a
 * stream, decoding Content-Length, chunked or close-delimited framing.
 *
 * Bodies stream: at most one chunk is held at a time, and a response stream
 * pulls from the socket only when its reader asks.
 * @module
 */
import { writeAll } from "../connect.ts";
import { classifySocketError, ProxyError } from "../errors.ts";
import { IdleTimer } from "../idle_timer.ts";
import { type Http1Connection, READ_CHUNK_BYTES } from "./connection.ts";
import { frameChunk, LAST_CHUNK } from "./encode.ts";
import {
  checkTrailerLine,
  type Framing,
  MAX_HEAD_BYTES,
  parseChunkSize,
} from "./parse.ts";

/**
 * Writes `body` to the connection: chunk-framed when `length` is null, else
 * exactly `length` bytes (a body that disagrees with its length is refused
 * rather than letting its excess reach the upstream as another request).
 * `progress` hears of every chunk (the upload's idle timer).
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
  const chunked = length === null;
  const reader = body.getReader();
  const framing = { bytes: new Uint8Array(0) };
  let sent = 0;
  while (true) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (error) {
      throw new ProxyError(
        "client_gone",
        `client request body failed: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (chunk.done) break;
    if (chunk.value.length === 0) continue;
    sent += chunk.value.length;
    if (!chunked && sent > length) {
      reader.cancel().catch(() => {});
      throw lengthMismatch(length);
    }
    progress.touch();
    try {
      await writeAll(
        connection.conn as Deno.Conn,
        chunked ? frameChunk(chunk.value, framing) : chunk.value,
      );
    } catch (error) {
      reader.cancel(error).catch(() => {});
      throw error;
    }
  }
  if (chunked) await writeAll(connection.conn as Deno.Conn, LAST_CHUNK);
  else if (sent !== length) throw lengthMismatch(length);
  return sent;
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
  }, { highWaterMark: 0 });
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

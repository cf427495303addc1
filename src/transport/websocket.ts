/**
 * WebSocket towards upstreams (RFC 6455, client role) over legate's own
 * connection to the chosen endpoint: the opening handshake is an HTTP/1.1
 * request on a new connection (TCP, TLS or a Unix socket, as for any
 * request), then frames. Messages are read one at a time, when the caller
 * asks: while the other side is slow, nothing is read, and the upstream's
 * writes wait in TCP.
 *
 * No extension (permessage-deflate) is offered: messages pass as they are.
 * @module
 */
import { Buffer } from "node:buffer";
import { connectEndpoint, type Endpoint, writeAll } from "./connect.ts";
import { ProxyError } from "./errors.ts";
import type { HeaderPair } from "./headers.ts";
import { Http1Connection } from "./http1/connection.ts";
import { encodeRequestHead } from "./http1/encode.ts";
import { parseResponseHead } from "./http1/parse.ts";
import { schedule } from "./timer_wheel.ts";

/** The GUID RFC 6455 4.2.2 hashes with the key. */
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Frame opcodes (RFC 6455 5.2). */
export const Opcode = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/** Request headers the handshake sets itself; the client's are not forwarded. */
const HANDSHAKE_HEADERS = new Set([
  "sec-websocket-protocol",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-accept",
]);

/** How long an upstream may take to answer a close frame before its connection is closed. */
const CLOSE_GRACE_MS = 1_000;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A frame's header, as {@linkcode decodeFrameHeader} reads it. */
export interface FrameHeader {
  /** Whether this frame ends its message. */
  readonly fin: boolean;
  /** RSV1 to RSV3, which an extension would have had to negotiate. */
  readonly rsv: number;
  /** What the frame carries. */
  readonly opcode: number;
  /** The masking key, or null for an unmasked frame. */
  readonly mask: Uint8Array | null;
  /** Payload bytes. */
  readonly length: number;
  /** Header bytes, extended length and mask included. */
  readonly headerLength: number;
}

/**
 * Reads a frame header from the start of `bytes`; null when more bytes are
 * needed.
 *
 * @example A server's unmasked text frame
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeFrameHeader } from "./websocket.ts";
 * const header = decodeFrameHeader(new Uint8Array([0x81, 0x05, 0x68, 0x65]));
 * assert.equal(header?.fin, true);
 * assert.equal(header?.opcode, 1);
 * assert.equal(header?.length, 5);
 * assert.equal(header?.headerLength, 2);
 * assert.equal(decodeFrameHeader(new Uint8Array([0x82, 0x7e, 0x01])), null);
 * ```
 * @throws {RangeError} When a 64-bit length is over 2^53 - 1 or has its top bit set.
 */
export function decodeFrameHeader(bytes: Uint8Array): FrameHeader | null {
  if (bytes.length < 2) return null;
  const first = bytes[0]!;
  const second = bytes[1]!;
  const masked = (second & 0x80) !== 0;
  let length = second & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (bytes.length < 4) return null;
    length = (bytes[2]! << 8) | bytes[3]!;
    offset = 4;
  } else if (length === 127) {
    if (bytes.length < 10) return null;
    const view = new DataView(bytes.buffer, bytes.byteOffset + 2, 8);
    const high = view.getUint32(0);
    if (high > 0x1fffff) {
      throw new RangeError("frame length over 2^53 - 1 bytes");
    }
    length = high * 2 ** 32 + view.getUint32(4);
    offset = 10;
  }
  let mask: Uint8Array | null = null;
  if (masked) {
    if (bytes.length < offset + 4) return null;
    mask = bytes.slice(offset, offset + 4);
    offset += 4;
  }
  return {
    fin: (first & 0x80) !== 0,
    rsv: (first >> 4) & 0x7,
    opcode: first & 0x0f,
    mask,
    length,
    headerLength: offset,
  };
}

/**
 * One whole frame (FIN set) carrying `payload`, masked with `mask` as a
 * client must (RFC 6455 5.3). `payload` is left as it is.
 *
 * @example A masked text frame, and its header read back
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeFrameHeader, encodeFrame, Opcode } from "./websocket.ts";
 * const mask = new Uint8Array([1, 2, 3, 4]);
 * const frame = encodeFrame(Opcode.text, new TextEncoder().encode("hi"), mask);
 * assert.deepEqual([...frame], [0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]);
 * assert.equal(decodeFrameHeader(frame)?.length, 2);
 * ```
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  mask: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const length = payload.length;
  const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const headerLength = 2 + lengthBytes + 4;
  const frame = new Uint8Array(headerLength + length);
  frame[0] = 0x80 | opcode;
  const view = new DataView(frame.buffer);
  if (lengthBytes === 0) frame[1] = 0x80 | length;
  else if (lengthBytes === 2) {
    frame[1] = 0x80 | 126;
    view.setUint16(2, length);
  } else {
    frame[1] = 0x80 | 127;
    view.setUint32(2, Math.floor(length / 2 ** 32));
    view.setUint32(6, length >>> 0);
  }
  frame.set(mask, 2 + lengthBytes);
  for (let i = 0; i < length; i++) {
    frame[headerLength + i] = payload[i]! ^ mask[i & 3]!;
  }
  return frame;
}

/**
 * The payload of a close frame: the code (when there is one) and a reason,
 * cut to the 123 bytes a close frame has room for.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { closePayload } from "./websocket.ts";
 * assert.deepEqual([...closePayload(1001, "")], [0x03, 0xe9]);
 * assert.equal(closePayload(null, "ignored").length, 0);
 * assert.equal(closePayload(1000, "é".repeat(100)).length, 2 + 122);
 * ```
 */
export function closePayload(code: number | null, reason: string): Uint8Array {
  if (code === null) return new Uint8Array(0);
  let text = utf8.encode(reason);
  if (text.length > 123) {
    // Cut on a character boundary: a UTF-8 continuation byte is 10xxxxxx.
    let end = 123;
    while (end > 0 && (text[end]! & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}

/** What the upstream sent: a message, or its close frame (already answered). */
export type UpstreamEvent =
  | { readonly type: "message"; readonly data: string | Uint8Array }
  | {
    readonly type: "close";
    /** The close code, or null when the frame had none. */
    readonly code: number | null;
    readonly reason: string;
  };

/**
 * A violation that ends the upstream connection: legate has sent the upstream
 * a close frame with `code` (1002 protocol error, 1007 invalid text, 1009
 * message too big).
 */
export class WebSocketFailure extends Error {
  /** The close code legate sent the upstream. */
  readonly code: number;

  /** `message` says what the upstream did. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "WebSocketFailure";
    this.code = code;
  }
}

/** What the opening handshake sends. */
export interface WebSocketHandshake {
  /** The request target, after prefix stripping. */
  readonly target: string;
  /**
   * The end-to-end headers, Host and `Sec-WebSocket-Protocol` included; the
   * client's own key, version and extensions are replaced.
   */
  readonly headers: readonly HeaderPair[];
  /** Milliseconds to connect, and then to receive the response head. */
  readonly timeouts: { readonly connect: number; readonly request: number };
  /** The largest message accepted from the upstream, in bytes. */
  readonly maxMessage: number;
}

/**
 * Opens a WebSocket to `endpoint`.
 *
 * @throws {ProxyError} `http_upgrade_failed` (with `receivedStatus` when the
 * upstream answered with another status) when the upstream does not accept
 * the handshake as RFC 6455 requires; the connection's own errors otherwise.
 */
export async function openUpstreamWebSocket(
  endpoint: Endpoint,
  handshake: WebSocketHandshake,
): Promise<UpstreamWebSocket> {
  const conn = await connectEndpoint(endpoint, handshake.timeouts.connect);
  const connection = new Http1Connection(conn);
  const key = base64(crypto.getRandomValues(new Uint8Array(16)));
  const headers: HeaderPair[] = [];
  for (const pair of handshake.headers) {
    if (!HANDSHAKE_HEADERS.has(pair[0])) headers.push(pair);
  }
  const offered = offeredProtocols(handshake.headers);
  // One header, ", "-separated: Deno's servers split offers on ", " alone.
  if (offered.size > 0) {
    headers.push(["sec-websocket-protocol", [...offered].join(", ")]);
  }
  headers.push(
    ["connection", "upgrade"],
    ["upgrade", "websocket"],
    ["sec-websocket-version", "13"],
    ["sec-websocket-key", key],
  );
  const cancel = schedule(handshake.timeouts.request, () => connection.close());
  try {
    await writeAll(
      conn,
      encodeRequestHead("GET", handshake.target, headers, "none"),
    );
    const head = parseResponseHead(await connection.readHead(), "GET");
    const problem = await handshakeProblem(head, key, offered);
    if (problem !== null) {
      throw new ProxyError(
        "http_upgrade_failed",
        `${endpoint.url} refused the WebSocket handshake: ${problem}`,
        head.status === 101 ? {} : { receivedStatus: head.status },
      );
    }
    const protocol = head.headers.find(([n]) => n === "sec-websocket-protocol");
    return new UpstreamWebSocket(
      connection,
      protocol?.[1] ?? "",
      head.headers.filter(([name]) =>
        name !== "connection" && name !== "upgrade" &&
        !name.startsWith("sec-websocket-")
      ),
      handshake.maxMessage,
    );
  } catch (error) {
    connection.close();
    if (error instanceof ProxyError) {
      throw connection.closed && error.kind === "connection_terminated" &&
          !connection.receivedAny
        ? new ProxyError(
          "http_response_timeout",
          `${endpoint.url} did not answer the WebSocket handshake within ${handshake.timeouts.request}ms`,
        )
        : error;
    }
    throw new ProxyError(
      "connection_terminated",
      `WebSocket handshake with ${endpoint.url}: ${String(error)}`,
      { cause: error },
    );
  } finally {
    cancel();
  }
}

/** The subprotocols a handshake's `Sec-WebSocket-Protocol` headers offer. */
function offeredProtocols(headers: readonly HeaderPair[]): Set<string> {
  const offered = new Set<string>();
  for (const [name, value] of headers) {
    if (name !== "sec-websocket-protocol") continue;
    for (const token of value.split(",")) {
      if (token.trim() !== "") offered.add(token.trim());
    }
  }
  return offered;
}

/** What is wrong with an upstream's answer to the handshake, or null. */
async function handshakeProblem(
  head: { status: number; statusText: string; headers: readonly HeaderPair[] },
  key: string,
  offered: Set<string>,
): Promise<string | null> {
  if (head.status !== 101) {
    return `it answered ${head.status}${
      head.statusText ? ` ${head.statusText}` : ""
    }, not 101 Switching Protocols`;
  }
  const values = (name: string) =>
    head.headers.filter(([n]) => n === name).map(([, v]) => v.toLowerCase());
  if (!values("upgrade").some((v) => v.includes("websocket"))) {
    return "its 101 has no Upgrade: websocket";
  }
  if (
    !values("connection").some((v) => /(?:^|,)\s*upgrade\s*(?:,|$)/.test(v))
  ) {
    return "its 101 has no Connection: upgrade";
  }
  const expected = base64(
    new Uint8Array(
      await crypto.subtle.digest("SHA-1", utf8.encode(key + GUID)),
    ),
  );
  const accept = head.headers.find(([n]) => n === "sec-websocket-accept");
  if (accept?.[1] !== expected) return "its Sec-WebSocket-Accept is wrong";
  const protocol = head.headers.find(([n]) => n === "sec-websocket-protocol");
  if (protocol !== undefined && !offered.has(protocol[1])) {
    return `it chose subprotocol "${
      protocol[1]
    }", which the client did not offer`;
  }
  if (head.headers.some(([n]) => n === "sec-websocket-extensions")) {
    return "it chose an extension, which legate did not offer";
  }
  return null;
}

/**
 * An open WebSocket to an upstream. {@linkcode UpstreamWebSocket.next}
 * reads the next message (answering pings on the way);
 * {@linkcode UpstreamWebSocket.send} writes one. Writes are serialized:
 * each waits for the one before.
 */
export class UpstreamWebSocket {
  /** The subprotocol the upstream chose, or "" for none. */
  readonly protocol: string;
  /** The end-to-end headers of the upstream's 101 (such as Set-Cookie). */
  readonly headers: readonly HeaderPair[];
  readonly #connection: Http1Connection;
  readonly #maxMessage: number;
  #writing: Promise<void> = Promise.resolve();
  #closeSent = false;

  /** Use {@linkcode openUpstreamWebSocket}. */
  constructor(
    connection: Http1Connection,
    protocol: string,
    headers: readonly HeaderPair[],
    maxMessage: number,
  ) {
    this.#connection = connection;
    this.protocol = protocol;
    this.headers = headers;
    this.#maxMessage = maxMessage;
  }

  /**
   * Reads the next message or close frame. A close frame is answered and
   * the connection closed before it is returned.
   *
   * @throws {WebSocketFailure} When the upstream broke the protocol or sent a
   * message over the limit; a close frame saying so has been sent.
   * @throws {ProxyError} `connection_terminated` when the connection ended
   * without a close frame.
   */
  async next(): Promise<UpstreamEvent> {
    const parts: Uint8Array[] = [];
    let size = 0;
    let opcode = -1;
    while (true) {
      const header = await this.#readHeader();
      if (header.rsv !== 0) {
        return await this.#fail(1002, "upstream set a reserved bit");
      }
      if (header.mask !== null) {
        return await this.#fail(1002, "upstream masked a frame");
      }
      if (header.opcode >= 0x8) {
        if (!header.fin || header.length > 125) {
          return await this.#fail(1002, "upstream sent a bad control frame");
        }
        const payload = await this.#readPayload(header.length);
        if (header.opcode === Opcode.ping) {
          await this.#write(Opcode.pong, payload);
          continue;
        }
        if (header.opcode === Opcode.pong) continue;
        if (header.opcode !== Opcode.close) {
          return await this.#fail(
            1002,
            `upstream sent opcode ${header.opcode}`,
          );
        }
        return await this.#closed(payload);
      }
      if (
        (opcode === -1) === (header.opcode === Opcode.continuation) ||
        header.opcode > Opcode.binary
      ) {
        return await this.#fail(
          1002,
          `upstream sent opcode ${header.opcode} out of sequence`,
        );
      }
      if (opcode === -1) opcode = header.opcode;
      size += header.length;
      if (size > this.#maxMessage) {
        return await this.#fail(
          1009,
          `upstream sent a message over max_message (${this.#maxMessage} bytes)`,
        );
      }
      parts.push(await this.#readPayload(header.length));
      if (!header.fin) continue;
      const data = parts.length === 1 ? parts[0]! : concat(parts, size);
      if (opcode === Opcode.binary) return { type: "message", data };
      try {
        return { type: "message", data: strictUtf8.decode(data) };
      } catch {
        return await this.#fail(1007, "upstream sent text that is not UTF-8");
      }
    }
  }

  /** Sends one message. */
  send(data: string | Uint8Array): Promise<void> {
    return typeof data === "string"
      ? this.#write(Opcode.text, utf8.encode(data))
      : this.#write(Opcode.binary, data);
  }

  /**
   * Sends a close frame (once) and closes the connection when the upstream
   * answers it, or after a second.
   */
  close(code: number | null, reason: string): void {
    if (this.#closeSent || this.#connection.closed) return;
    this.#write(Opcode.close, closePayload(code, reason)).catch(() => {});
    this.#closeSent = true;
    // Closing an already closed connection does nothing.
    schedule(CLOSE_GRACE_MS, () => this.#connection.close());
  }

  /** Closes the connection now, without a close frame. */
  abort(): void {
    this.#connection.close();
  }

  async #closed(payload: Uint8Array): Promise<UpstreamEvent> {
    if (payload.length === 1) {
      return await this.#fail(1002, "upstream sent a one-byte close frame");
    }
    const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : null;
    let reason: string;
    try {
      reason = strictUtf8.decode(payload.subarray(2));
    } catch {
      return await this.#fail(
        1007,
        "upstream sent a close reason that is not UTF-8",
      );
    }
    if (!this.#closeSent) {
      // Echoed whole: the upstream hears its own code and reason back.
      this.#closeSent = true;
      await this.#write(Opcode.close, payload).catch(() => {});
    }
    this.#connection.close();
    return { type: "close", code, reason };
  }

  async #fail(code: number, message: string): Promise<never> {
    if (!this.#closeSent) {
      this.#closeSent = true;
      await this.#write(Opcode.close, closePayload(code, "")).catch(() => {});
    }
    this.#connection.close();
    throw new WebSocketFailure(code, message);
  }

  async #readHeader(): Promise<FrameHeader> {
    const first = await this.#connection.readExactly(2);
    const second = first[1]! & 0x7f;
    const rest = (second === 126 ? 2 : second === 127 ? 8 : 0) +
      ((first[1]! & 0x80) !== 0 ? 4 : 0);
    const bytes = rest === 0 ? first : concat(
      [first, await this.#connection.readExactly(rest)],
      2 + rest,
    );
    try {
      return decodeFrameHeader(bytes)!;
    } catch (error) {
      return await this.#fail(1002, (error as Error).message);
    }
  }

  /** Reads a payload; a large one straight into its own buffer, never into the connection's. */
  async #readPayload(length: number): Promise<Uint8Array> {
    if (length <= 64 * 1024) return await this.#connection.readExactly(length);
    const payload = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const chunk = await this.#connection.readChunk(length - filled);
      if (chunk === null) {
        throw new ProxyError(
          "connection_terminated",
          "upstream closed the connection inside a WebSocket message",
        );
      }
      payload.set(chunk, filled);
      filled += chunk.length;
    }
    return payload;
  }

  #write(opcode: number, payload: Uint8Array): Promise<void> {
    const frame = encodeFrame(
      opcode,
      payload,
      crypto.getRandomValues(new Uint8Array(4)),
    );
    const conn = this.#connection.conn;
    const written = this.#writing.then(() => writeAll(conn, frame));
    this.#writing = written.catch(() => {});
    return written;
  }
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

function concat(parts: readonly Uint8Array[], size: number): Uint8Array {
  const joined = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

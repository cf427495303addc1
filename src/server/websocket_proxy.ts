/**
 * The WebSocket hook of the HTTP pipeline: a request with
 * `Upgrade: websocket` takes this path instead of select-and-send. legate
 * ends the WebSocket on both sides: towards the upstream with its own
 * client (src/transport/websocket.ts) on a connection to the chosen
 * endpoint, towards the client with `Deno.upgradeWebSocket`, once the
 * upstream has accepted (so the client gets the subprotocol the upstream
 * chose, and a refused handshake is a 502). Messages are then bridged one by
 * one, in order, both ways; close codes and reasons are carried across.
 *
 * Backpressure: from the upstream, the next message is read only once the
 * client's send buffer is below {@linkcode SEND_HIGH_WATER}. From the client,
 * Deno reads messages as they arrive and cannot be paused, so what waits for
 * a slow upstream is bounded instead: past `max_message` plus
 * {@linkcode SEND_HIGH_WATER} queued, the client is closed with 1013 (try
 * again later).
 * @module
 */
import type { ClientConnection } from "./http_listener.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import type { Cluster } from "../upstream/cluster.ts";
import { ProxyError } from "../transport/errors.ts";
import type { HeaderPair } from "../transport/headers.ts";
import {
  openUpstreamWebSocket,
  type UpstreamWebSocket,
  WebSocketFailure,
} from "../transport/websocket.ts";

/** A route's WebSocket settings. */
export interface WebSocketSettings {
  /** The largest message passed either way, in bytes. */
  readonly maxMessage: number;
}

/** Counts WebSocket connections and messages. */
export interface WebSocketMetrics {
  /** A WebSocket of `service` was bridged. */
  webSocketOpened(service: string): void;
  /** A bridged WebSocket of `service` ended. */
  webSocketClosed(service: string): void;
  /** A message was passed; `direction` is `upstream` (from the client) or `downstream`. */
  webSocketMessage(service: string, direction: "upstream" | "downstream"): void;
}

/** What a bridged WebSocket moved, as it ended. */
export interface WebSocketStats {
  /** Message bytes from the client to the upstream. */
  readonly bytesIn: number;
  /** Message bytes from the upstream to the client. */
  readonly bytesOut: number;
}

/** What the WebSocket path needs from the request it takes over. */
export interface WebSocketRequest {
  /** The client's request. */
  readonly request: Request;
  /** The client connection, which tracks the bridge so a drain can close it. */
  readonly client: ClientConnection;
  /** The service's name. */
  readonly service: string;
  /** The service's endpoints. */
  readonly cluster: Cluster;
  /** What a hash policy hashes, if it hashes. */
  readonly hash: number | undefined;
  /** The target after prefix stripping. */
  readonly target: string;
  /** The upstream request's headers; index 0 is Host, which the endpoint fills in. */
  readonly headers: HeaderPair[];
  /** The Host to send to `endpoint`. */
  readonly host: (endpoint: Endpoint) => string;
  /** Connect and handshake timeouts, in milliseconds. */
  readonly timeouts: { readonly connect: number; readonly request: number };
  /** The route's WebSocket settings. */
  readonly settings: WebSocketSettings;
  /** Counts connections and messages. */
  readonly metrics: WebSocketMetrics;
  /** Adds the trace headers of the try on `endpoint` to the headers. */
  readonly traced: (endpoint: Endpoint) => void;
  /** Adjusts the upstream's end-to-end 101 headers for the client (the response header rules). */
  readonly responseHeaders: (headers: HeaderPair[]) => void;
  /** Hears when the bridge ends. */
  readonly ended: (endpoint: Endpoint, stats: WebSocketStats) => void;
}

/**
 * Client send buffer, in bytes, above which legate stops reading from the
 * upstream.
 */
export const SEND_HIGH_WATER = 1024 * 1024;
/**
 * How often a paused bridge looks at the client's send buffer: Deno's
 * WebSocket has no event for a drained buffer.
 */
const DRAIN_POLL_MS = 5;

const utf8 = new TextEncoder();

/**
 * Takes over a WebSocket upgrade: opens the upstream side, then answers the
 * client with the 101 that starts the bridge. A failure is returned, for the
 * pipeline to answer and log.
 */
export async function proxyWebSocket(
  ws: WebSocketRequest,
): Promise<
  Response | {
    readonly failure: ProxyError;
    readonly endpoint: Endpoint | null;
  }
> {
  const { request, cluster } = ws;
  if (
    request.method !== "GET" ||
    request.headers.get("sec-websocket-version") !== "13" ||
    !request.headers.has("sec-websocket-key")
  ) {
    return {
      failure: new ProxyError(
        "http_request_error",
        "a WebSocket upgrade is a GET with Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
      ),
      endpoint: null,
    };
  }
  let endpoint: Endpoint;
  try {
    endpoint = cluster.pick(ws.hash, new Set()) ??
      await cluster.acquire(ws.hash, new Set(), true);
  } catch (error) {
    return { failure: error as ProxyError, endpoint: null };
  }
  ws.headers[0] = ["host", ws.host(endpoint)];
  ws.traced(endpoint);
  cluster.started(endpoint);
  let upstream: UpstreamWebSocket;
  try {
    upstream = await openUpstreamWebSocket(endpoint, {
      target: ws.target,
      headers: ws.headers,
      timeouts: ws.timeouts,
      maxMessage: ws.settings.maxMessage,
    });
  } catch (error) {
    const failure = error instanceof ProxyError
      ? error
      : new ProxyError("proxy_internal_error", String(error), { cause: error });
    cluster.released(endpoint);
    cluster.finished(
      endpoint,
      failure.source === "upstream" ? failure.message : null,
    );
    return { failure, endpoint };
  }
  cluster.finished(endpoint, null);
  let upgraded: { socket: WebSocket; response: Response };
  try {
    // The subprotocol goes in as a header: Deno's own check splits the
    // client's offers on ", " alone and refuses "a,b".
    upgraded = Deno.upgradeWebSocket(request);
  } catch (error) {
    upstream.close(1001, "client went away");
    cluster.released(endpoint);
    return {
      failure: new ProxyError("client_gone", String(error), { cause: error }),
      endpoint,
    };
  }
  const { headers } = upgraded.response;
  if (upstream.protocol !== "") {
    headers.set("sec-websocket-protocol", upstream.protocol);
  }
  const passed = [...upstream.headers];
  ws.responseHeaders(passed);
  for (const [name, value] of passed) headers.append(name, value);
  const bridge = new Bridge(upgraded.socket, upstream, ws, () => {
    cluster.released(endpoint);
    ws.ended(endpoint, bridge.stats);
  });
  return upgraded.response;
}

/** One client WebSocket bridged to one upstream WebSocket. */
class Bridge {
  readonly #socket: WebSocket;
  readonly #upstream: UpstreamWebSocket;
  readonly #ws: WebSocketRequest;
  readonly #ended: () => void;
  /** Bytes from the client not yet written upstream. */
  #queued = 0;
  #bytesIn = 0;
  #bytesOut = 0;
  #clientDone = false;
  #upstreamDone = false;
  #finished = false;

  constructor(
    socket: WebSocket,
    upstream: UpstreamWebSocket,
    ws: WebSocketRequest,
    ended: () => void,
  ) {
    this.#socket = socket;
    this.#upstream = upstream;
    this.#ws = ws;
    this.#ended = ended;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      ws.metrics.webSocketOpened(ws.service);
      this.#pumpDownstream();
    };
    socket.onmessage = (event) => this.#fromClient(event.data);
    socket.onclose = (event) => this.#clientClosed(event.code, event.reason);
    // An error is followed by close, which does the work.
    socket.onerror = () => {};
    ws.client.add(this);
  }

  /** What it moved so far. */
  get stats(): WebSocketStats {
    return { bytesIn: this.#bytesIn, bytesOut: this.#bytesOut };
  }

  /** Closes both sides with 1001 (going away): a drain has run out of time. */
  close(): void {
    const reason = "legate is shutting down";
    this.#closeClient(1001, reason);
    this.#upstream.close(1001, reason);
    this.#upstreamDone = true;
    this.#settle();
  }

  #fromClient(data: string | ArrayBuffer): void {
    if (this.#upstreamDone) return;
    const bytes = typeof data === "string"
      ? utf8.encode(data)
      : new Uint8Array(data);
    const { maxMessage } = this.#ws.settings;
    if (bytes.length > maxMessage) {
      const reason = `message over max_message (${maxMessage} bytes)`;
      this.#closeClient(1009, reason);
      this.#upstream.close(1009, reason);
      this.#upstreamDone = true;
      return;
    }
    if (this.#queued + bytes.length > maxMessage + SEND_HIGH_WATER) {
      this.#closeClient(1013, "upstream is not keeping up");
      this.#upstream.close(1001, "client went away");
      this.#upstreamDone = true;
      return;
    }
    this.#queued += bytes.length;
    this.#bytesIn += bytes.length;
    this.#ws.metrics.webSocketMessage(this.#ws.service, "upstream");
    this.#upstream.send(typeof data === "string" ? data : bytes).then(
      () => this.#queued -= bytes.length,
      () => {},
    );
  }

  #clientClosed(code: number, reason: string): void {
    this.#clientDone = true;
    if (!this.#upstreamDone) {
      // 1005 (no code) and 1006 (no close frame) never go on the wire.
      if (code === 1005) this.#upstream.close(null, "");
      else if (code === 1006) this.#upstream.close(1001, "client went away");
      else this.#upstream.close(code, reason);
      this.#upstreamDone = true;
    }
    this.#settle();
  }

  async #pumpDownstream(): Promise<void> {
    const socket = this.#socket;
    try {
      while (!this.#upstreamDone) {
        const event = await this.#upstream.next();
        if (event.type === "close") {
          this.#upstreamDone = true;
          this.#closeClient(event.code, event.reason);
          break;
        }
        if (socket.readyState !== WebSocket.OPEN) break;
        const { data } = event;
        socket.send(data);
        this.#bytesOut += typeof data === "string"
          ? utf8.encode(data).length
          : data.length;
        this.#ws.metrics.webSocketMessage(this.#ws.service, "downstream");
        while (
          socket.bufferedAmount > SEND_HIGH_WATER &&
          socket.readyState === WebSocket.OPEN
        ) {
          await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
        }
      }
    } catch (error) {
      if (!this.#upstreamDone) {
        this.#upstreamDone = true;
        this.#upstream.abort();
        if (error instanceof WebSocketFailure) {
          this.#closeClient(
            error.code === 1009 ? 1009 : 1011,
            error.code === 1009
              ? "upstream message too big"
              : "upstream broke the WebSocket protocol",
          );
        } else {
          this.#closeClient(1011, "upstream connection lost");
        }
      }
    }
    this.#settle();
  }

  #closeClient(code: number | null, reason: string): void {
    const socket = this.#socket;
    if (
      socket.readyState === WebSocket.CLOSING ||
      socket.readyState === WebSocket.CLOSED
    ) {
      return;
    }
    try {
      if (code === null) socket.close();
      else socket.close(code, reason);
    } catch {
      // A code the upstream may send but a server may not (1004, 1015): say it failed.
      socket.close(1011, "upstream closed with an invalid code");
    }
  }

  /** Reports the end once both sides are done, once. */
  #settle(): void {
    if (this.#finished || !this.#upstreamDone) return;
    if (!this.#clientDone && this.#socket.readyState !== WebSocket.CLOSED) {
      return;
    }
    this.#finished = true;
    this.#ws.client.delete(this, {
      connectMs: null,
      headMs: null,
      bytesSent: this.#bytesIn,
      bytesReceived: this.#bytesOut,
    });
    this.#ws.metrics.webSocketClosed(this.#ws.service);
    this.#ended();
  }
}

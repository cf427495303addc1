/**
 * HTTP listeners: legate accepts each client connection itself and serves
 * HTTP/1.1 and h2c on it with Deno's HTTP server, one connection at a time.
 *
 * `Deno.serve` owns its accept loop and hides its connections: it ends for
 * good on the first failed accept (too many open files ended the whole
 * process), it has no timeout for reading a request head, and its graceful
 * shutdown cuts request bodies still being uploaded. Holding the connections
 * gives legate all three: accept failures are survived as on TCP listeners
 * (out of descriptors, the longest idle connection is closed to make room),
 * a connection must send a request head within the header timeout (after it
 * opens and after each response), idle connections are capped per listener,
 * and a drain closes each connection only once its requests are done.
 *
 * Each connection is served by `serveHttpOnConnection`, the function
 * `Deno.serve` itself uses per connection, reached through `Deno.internal`.
 * Listeners whose connections may upgrade to WebSocket serve through a hop
 * to `serveHttpOnListener` instead (see http_hop.ts). These are the only
 * runtime internals legate uses; a Deno without them fails the first
 * listener with a clear message.
 * @module
 */
import type { ListenAddress } from "../address.ts";
import type { ExchangeTracker } from "../transport/http1/client.ts";
import { closeQuietly } from "../transport/connect.ts";
import { type Relay, relay } from "../transport/tcp.ts";
import { abandonHop, denoHttpServer, HttpHop } from "./http_hop.ts";
import { type TlsMaterial, TlsTermination } from "./tls_termination.ts";
import {
  acceptConnections,
  bindListener,
  closeListener,
  type RunningListener,
  withDeadline,
} from "./listeners.ts";

/** A client connection as the request pipeline sees it. */
export interface ClientConnection extends ExchangeTracker {
  /** The client's address. */
  readonly remoteAddr: Deno.Addr;
}

/** Handles one request of a client connection. */
export type HttpHandler = (
  request: Request,
  client: ClientConnection,
) => Response | Promise<Response>;

/** Options of {@linkcode serveHttp}. */
export interface HttpListenerOptions {
  /**
   * How long a client connection may take to deliver a complete request
   * head, counted from when it opens and from the end of each response (so
   * it also bounds how long a keep-alive connection stays idle), in
   * milliseconds.
   * @default {30000}
   */
  readonly headerTimeout?: number;
  /**
   * Idle client connections (none of their requests in flight) kept by this
   * listener; past it, the longest idle one is closed.
   * @default {1024}
   */
  readonly maxIdleConnections?: number;
  /** Hears of accept failures and whether the client caused them. */
  readonly onAcceptError?: (error: Error, transient: boolean) => void;
  /**
   * Serve HTTPS (ALPN `h2` and `http/1.1`) with this certificate; plain
   * HTTP/1.1 and h2c when absent.
   */
  readonly tls?: TlsMaterial;
  /** `unix:` addresses: the socket file's permissions; as created when absent. */
  readonly socketMode?: number | null;
  /**
   * Let connections upgrade (WebSocket): serve through a loopback hop to
   * Deno's server on a whole listener (see http_hop.ts), at the cost of one
   * relay per connection. Deno 2.9's per-connection server closes upgraded
   * connections at once.
   * @default {false}
   */
  readonly upgrades?: boolean;
  /** Hears why an inner server of an upgrading listener stopped and was replaced. */
  readonly onHopRestart?: (error: unknown) => void;
}

/** `Deno.internal`'s per-connection HTTP server, as Deno 2.9 has it. */
type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal | undefined,
  handler: (request: Request) => Response | Promise<Response>,
  onError: (error: unknown) => Response,
  onListen: () => void,
) => Deno.HttpServer;

/** How often idle connections are checked against the header timeout. */
const SWEEP_MS = 1_000;
/**
 * How long a connection must have been idle before it may be closed to free
 * a descriptor. Linux fails the accept right after one that took the last
 * descriptor, queue empty or not; the connection just accepted, still on its
 * way to its first request, must not pay for that.
 */
const RELIEF_MIN_IDLE_MS = 1_000;
/** How long cut requests get to unwind before drain() returns anyway. */
const CUT_GRACE_MS = 1_000;
/**
 * How long a cut connection served over a hop stays open, so that close
 * frames (WebSocket 1001) reach the client; less than CUT_GRACE_MS.
 */
const HOP_CUT_GRACE_MS = 500;
/**
 * How long a hop may carry no bytes before both sides are closed, in
 * milliseconds: longer than anything the serving side waits for itself (the
 * header timeout, idle WebSockets), so that side decides when a connection ends.
 */
const HOP_IDLE_MS = 24 * 3_600_000;

/**
 * Serves HTTP on `address`. Responses are sent as the handler builds them:
 * no automatic compression.
 *
 * @throws {ListenError} When the address cannot be bound.
 */
export async function serveHttp(
  address: ListenAddress,
  handler: HttpHandler,
  options: HttpListenerOptions = {},
): Promise<RunningListener> {
  const serveOnConnection = denoHttpServer<ServeOnConnection>(
    "serveHttpOnConnection",
    "per connection",
  );
  const headerTimeout = options.headerTimeout ?? 30_000;
  const maxIdle = options.maxIdleConnections ?? 1024;
  /** Upgrading listeners: the client connection of each hop, by the hop's port. */
  const hopped = new Map<number, Client>();
  const hop = options.upgrades
    ? new HttpHop(
      (request, port) => {
        const client = hopped.get(port);
        return client === undefined
          ? new Response("legate: connection closed\n", { status: 421 })
          : client.handle(handler, request);
      },
      options.tls ?? null,
      options.onHopRestart ?? (() => {}),
    )
    : null;
  const termination = options.tls && hop === null
    ? new TlsTermination(options.tls, ["h2", "http/1.1"])
    : null;
  const listener = await bindListener(address, options.socketMode ?? null)
    .catch((error) => {
      termination?.close();
      hop?.close();
      throw error;
    });
  const connections = new Set<Client>();
  /** Idle connections, longest idle first (a Set keeps insertion order). */
  const idle = new Set<Client>();
  let draining = false;

  const onIdle = (client: Client) => {
    idle.delete(client);
    if (draining) {
      client.close();
      return;
    }
    idle.add(client);
  };
  const onBusy = (client: Client) => idle.delete(client);
  const evictOldestIdle = (): boolean => {
    const [oldest] = idle;
    if (oldest === undefined) return false;
    idle.delete(oldest);
    oldest.close();
    return true;
  };
  /** Closes the longest idle connection, if idle long enough, and waits until it is gone. */
  const relieve = async (): Promise<boolean> => {
    const [oldest] = idle;
    if (
      oldest === undefined ||
      Date.now() - oldest.idleSince < RELIEF_MIN_IDLE_MS
    ) {
      return false;
    }
    evictOldestIdle();
    await oldest.done;
    return true;
  };

  const track = (client: Client) => {
    connections.add(client);
    idle.add(client);
    client.done.then(() => {
      connections.delete(client);
      idle.delete(client);
    });
  };
  const serve = (conn: Deno.Conn, remoteAddr: Deno.Addr) => {
    if (draining) {
      conn.close();
      return;
    }
    while (idle.size >= maxIdle) evictOldestIdle();
    const client = new Client(remoteAddr, onIdle, onBusy);
    client.serve(serveOnConnection(
      conn,
      client.signal,
      (request) => client.handle(handler, request),
      () => new Response("legate: internal error\n", { status: 500 }),
      () => {},
    ));
    track(client);
  };
  const serveOverHop = async (conn: Deno.Conn, hop: HttpHop) => {
    const made = await hop.handoff();
    if (made === null || draining) {
      closeQuietly(conn);
      if (made !== null) abandonHop(made);
      return;
    }
    while (idle.size >= maxIdle) evictOldestIdle();
    const port = made.conn.localAddr.port;
    const client = new Client(conn.remoteAddr, onIdle, onBusy);
    hopped.set(port, client);
    client.relay(relay(conn, made.conn, HOP_IDLE_MS));
    track(client);
    client.done.then(() => {
      hopped.delete(port);
      made.release();
    });
  };
  const accepting = acceptConnections(listener, (conn) => {
    if (hop !== null) return void serveOverHop(conn, hop);
    if (termination === null) return serve(conn, conn.remoteAddr);
    termination.terminate(conn).then((tls) => {
      if (tls) serve(tls, conn.remoteAddr);
    });
  }, {
    onError: options.onAcceptError ?? (() => {}),
    relieve,
  });

  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const client of idle) {
      // Idle connections are in the order they became idle: stop at the first fresh one.
      if (now - client.idleSince < headerTimeout) break;
      idle.delete(client);
      client.close();
    }
  }, Math.min(SWEEP_MS, headerTimeout));
  Deno.unrefTimer(sweeper);

  return {
    addr: listener.addr,
    useCertificate: hop && options.tls
      ? (material) => hop.useCertificate(material)
      : termination
      ? (material) => termination.useCertificate(material)
      : undefined,
    active: () => {
      let busy = 0;
      for (const client of connections) busy += client.inFlight;
      return busy;
    },
    async drain(deadlineMs) {
      draining = true;
      closeListener(listener);
      await accepting;
      termination?.close();
      hop?.close();
      clearInterval(sweeper);
      for (const client of idle) client.close();
      idle.clear();
      const all = Promise.all([...connections].map((c) => c.done));
      if (await withDeadline(all, deadlineMs)) return 0;
      let cut = 0;
      for (const client of connections) {
        cut += client.inFlight;
        client.cut();
      }
      await withDeadline(all, CUT_GRACE_MS);
      return cut;
    },
  };
}

/**
 * One accepted client connection and the work in flight on it, served
 * either by Deno's server on this connection or over a hop (upgrading
 * listeners).
 */
class Client implements ClientConnection {
  readonly remoteAddr: Deno.Addr;
  /** Settles when the connection is closed. */
  readonly done: Promise<void>;
  /** When the connection last became idle, in epoch milliseconds. */
  idleSince = Date.now();
  readonly #done = Promise.withResolvers<void>();
  readonly #abort = new AbortController();
  readonly #exchanges = new Set<{ close(): void }>();
  readonly #onIdle: (client: Client) => void;
  readonly #onBusy: (client: Client) => void;
  /** Ends the connection once idle: graceful for Deno's server, a close for a hop. */
  #end: () => void = () => {};
  /** Ends the connection now. */
  #cut: () => void = () => {};
  #handlers = 0;
  #closing = false;
  #finished = false;

  constructor(
    remoteAddr: Deno.Addr,
    onIdle: (client: Client) => void,
    onBusy: (client: Client) => void,
  ) {
    this.remoteAddr = remoteAddr;
    this.#onIdle = onIdle;
    this.#onBusy = onBusy;
    this.done = this.#done.promise.finally(() => {
      this.#finished = true;
    });
  }

  /** Aborts Deno's server on this connection. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Served by Deno's server on this connection. */
  serve(server: Deno.HttpServer): void {
    this.#end = () => void server.shutdown().catch(() => {});
    // Aborting after shutdown() throws inside Deno; a connection that was
    // shut down ends when its requests end, which cut() just closed.
    this.#cut = () => {
      if (!this.#closing) this.#abort.abort();
    };
    // A connection's server rejects when the client sent something Deno
    // could not parse (a malformed chunked body): that connection ends, and
    // nothing else does.
    server.finished.then(this.#done.resolve, this.#done.resolve);
  }

  /** Served over a hop, which `hop` relays. */
  relay(hop: Relay): void {
    this.#end = () => hop.cut();
    // Upgraded connections get to send their close frames first.
    this.#cut = () => {
      const timer = setTimeout(() => hop.cut(), HOP_CUT_GRACE_MS);
      hop.done.finally(() => clearTimeout(timer));
    };
    hop.done.then(() => this.#done.resolve());
  }

  /** Requests in flight: handlers running, or bodies still streaming. */
  get inFlight(): number {
    return Math.max(this.#handlers, this.#exchanges.size);
  }

  add(connection: { close(): void }): void {
    if (this.#exchanges.size === 0 && this.#handlers === 0) this.#onBusy(this);
    this.#exchanges.add(connection);
  }

  delete(connection: { close(): void }): void {
    if (this.#exchanges.delete(connection)) this.#settle();
  }

  /** Closes the connection once nothing is in flight: idle now, or when its requests end. */
  close(): void {
    if (this.#closing || this.#finished) return;
    this.#closing = true;
    if (this.inFlight === 0) this.#end();
  }

  /** Ends the work in flight now: upstream exchanges are closed, the connection too. */
  cut(): void {
    for (const connection of this.#exchanges) connection.close();
    this.#exchanges.clear();
    if (!this.#finished) this.#cut();
  }

  /** Runs `handler` on a request of this connection, counting it in flight. */
  async handle(handler: HttpHandler, request: Request): Promise<Response> {
    if (this.#handlers === 0 && this.#exchanges.size === 0) this.#onBusy(this);
    this.#handlers++;
    try {
      return await handler(request, this);
    } finally {
      this.#handlers--;
      this.#settle();
    }
  }

  #settle(): void {
    if (this.inFlight > 0) return;
    this.idleSince = Date.now();
    if (this.#closing) this.#end();
    else this.#onIdle(this);
  }
}

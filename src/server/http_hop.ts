/**
 * HTTP served through a loopback hop, for listeners whose connections may
 * upgrade to WebSocket.
 *
 * Deno 2.9's per-connection HTTP server (what legate serves ordinary
 * listeners with) closes a connection's upgraded socket as soon as the `101`
 * is sent; Deno's server on a whole listener does not. So a listener with a
 * WebSocket service still accepts each connection itself (its accept loop
 * and its bookkeeping stay legate's), then relays it over loopback to an
 * inner listener on 127.0.0.1 that Deno's whole-listener server owns: plain,
 * or TLS with the listener's certificate. Each request arriving there is
 * matched to the accepted connection it came from by the hop's port.
 *
 * Deno's server on a listener stops for good on a failed accept (out of
 * file descriptors): the inner server is then replaced by a new one on a
 * new port, and connections go there from then on. A new certificate also
 * starts a new inner server; the old one closes once the connections sent
 * to it have ended.
 *
 * Requests on the inner port from connections legate did not make are
 * refused with `421`.
 * @module
 */
import { closeQuietly } from "../transport/connect.ts";
import type { TlsMaterial } from "./tls_termination.ts";
import { closeListener } from "./listeners.ts";

/** Handles one request that came over the hop from `port`, or refuses it. */
export type HopHandler = (
  request: Request,
  port: number,
) => Response | Promise<Response>;

/** `Deno.internal`'s server on a whole listener, as Deno 2.9 has it. */
type ServeOnListener = (
  listener: Deno.Listener,
  signal: AbortSignal | undefined,
  handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
  onError: (error: unknown) => Response,
  onListen: () => void,
) => Deno.HttpServer;

/** A connection handed over to the inner server. */
export interface Hop {
  /** legate's side of the hop; the inner server's request info names its local port. */
  readonly conn: Deno.TcpConn;
  /** Call once the connection has ended, so a retired inner server can close. */
  readonly release: () => void;
}

/** A failed restart is tried again after a pause that doubles up to 1 s. */
const RESTART_BACKOFF_MS = { first: 10, max: 1_000 } as const;

/** The inner servers of one listener. */
export class HttpHop {
  readonly #handler: HopHandler;
  readonly #onRestart: (error: unknown) => void;
  #current: InnerServer;
  #closed = false;

  /**
   * Starts the inner server; `tls` makes it an HTTPS server. `onRestart`
   * hears why an inner server stopped and was replaced.
   *
   * @throws {Error} When Deno refuses the certificate or key.
   */
  constructor(
    handler: HopHandler,
    tls: TlsMaterial | null,
    onRestart: (error: unknown) => void,
  ) {
    this.#handler = handler;
    this.#onRestart = onRestart;
    this.#current = this.#start(tls);
  }

  /**
   * Connects a new hop to the inner server, or null when that fails. The
   * caller relays the accepted connection to `conn` once it knows the hop's
   * port; requests can arrive only then.
   */
  async handoff(): Promise<Hop | null> {
    const inner = this.#current;
    inner.outstanding++;
    try {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: inner.port,
      });
      conn.setNoDelay(true);
      const port = conn.localAddr.port;
      inner.ports.add(port);
      let released = false;
      return {
        conn,
        release: () => {
          if (released) return;
          released = true;
          inner.ports.delete(port);
          inner.outstanding--;
          inner.settle();
        },
      };
    } catch {
      inner.outstanding--;
      inner.settle();
      return null;
    }
  }

  /**
   * Serves `material` to connections from now on; those already handed over
   * keep theirs.
   *
   * @throws {Error} When Deno refuses the certificate or key; the current one stays.
   */
  useCertificate(material: TlsMaterial): void {
    const next = this.#start(material);
    this.#current.retire();
    this.#current = next;
  }

  /** Closes the inner server once the connections sent to it have ended. */
  close(): void {
    this.#closed = true;
    this.#current.retire();
  }

  #start(tls: TlsMaterial | null): InnerServer {
    const inner = new InnerServer(tls, this.#handler);
    inner.stopped.then(async (error) => {
      if (this.#closed || inner !== this.#current) return;
      this.#onRestart(error);
      // Out of descriptors, the new listener may fail too: try again, with a
      // backoff; new connections fail their hop (and are closed) meanwhile.
      for (let pause = RESTART_BACKOFF_MS.first;; pause *= 2) {
        try {
          this.#current = this.#start(tls);
          break;
        } catch (reason) {
          this.#onRestart(reason);
          await new Promise((resolve) =>
            setTimeout(resolve, Math.min(pause, RESTART_BACKOFF_MS.max))
          );
          if (this.#closed) return;
        }
      }
      inner.retire();
    });
    return inner;
  }
}

/** One inner listener on a loopback port and the Deno server on it. */
class InnerServer {
  readonly port: number;
  /** Ports of hops made to it and not yet ended. */
  readonly ports = new Set<number>();
  /** Settles, with why, when Deno's server stopped on its own. */
  readonly stopped: Promise<unknown>;
  /** Hops being made or running. */
  outstanding = 0;
  readonly #listener: Deno.Listener;
  readonly #server: Deno.HttpServer;
  #retiring = false;

  constructor(tls: TlsMaterial | null, handler: HopHandler) {
    this.#listener = tls === null
      ? Deno.listen({ hostname: "127.0.0.1", port: 0 })
      : Deno.listenTls({
        hostname: "127.0.0.1",
        port: 0,
        cert: tls.cert,
        key: tls.key,
        alpnProtocols: ["h2", "http/1.1"],
      });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#server = denoHttpServer<ServeOnListener>(
      "serveHttpOnListener",
      "on a listener it did not open",
    )(
      this.#listener,
      undefined,
      (request, info) => {
        const { hostname, port } = info.remoteAddr;
        return hostname === "127.0.0.1" && this.ports.has(port)
          ? handler(request, port)
          : new Response("legate: not a connection legate made\n", {
            status: 421,
          });
      },
      () => new Response("legate: internal error\n", { status: 500 }),
      () => {},
    );
    this.stopped = this.#server.finished.then(
      () => new Error("the server ended"),
      (error) => error,
    );
  }

  retire(): void {
    this.#retiring = true;
    this.settle();
  }

  settle(): void {
    if (!this.#retiring || this.outstanding > 0) return;
    closeListener(this.#listener);
    this.#server.shutdown().catch(() => {});
  }
}

/** Closes a hop that was made but will not be used. */
export function abandonHop(hop: Hop): void {
  closeQuietly(hop.conn);
  hop.release();
}

/**
 * One of the HTTP servers Deno keeps in `Deno[Deno.internal]`: legate needs
 * Deno 2.9's, and says so when the runtime has none by that name.
 *
 * @throws {Error} When this Deno has no such server.
 */
export function denoHttpServer<T>(
  name: "serveHttpOnConnection" | "serveHttpOnListener",
  what: string,
): T {
  const internal = (Deno as unknown as Record<symbol, unknown>)[
    (Deno as unknown as { internal: symbol }).internal
  ] as Record<string, unknown> | undefined;
  const serve = internal?.[name];
  if (typeof serve !== "function") {
    throw new Error(
      `This Deno (${Deno.version.deno}) cannot serve HTTP ${what} (Deno.internal ${name} is missing); legate needs Deno 2.9`,
    );
  }
  return serve as T;
}

/**
 * Opening and draining listeners: `Deno.serve` for HTTP, `Deno.listen` for
 * TCP, on TCP addresses or Unix sockets.
 * @module
 */
import type { ListenAddress } from "../config/address.ts";
import { formatListenAddress } from "../config/address.ts";
import { setNoDelay } from "../transport/connect.ts";

/** A listener that is accepting. */
export interface RunningListener {
  /** The bound address (the real port when 0 was asked for). */
  readonly addr: Deno.Addr;
  /** Work in flight: HTTP requests or TCP connections. */
  readonly active: () => number;
  /**
   * Stops accepting, lets work in flight finish for up to `deadlineMs`, then
   * cuts what is left. Resolves with the number of requests or connections cut.
   */
  drain(deadlineMs: number): Promise<number>;
}

/** Binding failed; the message names the address and why. */
export class ListenError extends Error {
  /** Makes the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}

/** How long cut requests get to unwind before drain() returns anyway. */
const CUT_GRACE_MS = 1_000;

/** The work in flight on an HTTP listener, as its request pipeline tracks it. */
export interface InFlight {
  /** Requests in flight. */
  readonly size: number;
  /** Ends every request in flight. */
  cutAll(): void;
}

const NOTHING_IN_FLIGHT: InFlight = { size: 0, cutAll() {} };

/**
 * Serves HTTP on `address`. Responses are sent as the handler builds them:
 * no automatic compression. `inFlight` counts the handler's work and cuts it
 * when a drain deadline passes.
 */
export async function serveHttp(
  address: ListenAddress,
  handler: Deno.ServeHandler,
  inFlight: InFlight = NOTHING_IN_FLIGHT,
): Promise<RunningListener> {
  const common = {
    automaticCompression: false,
    onListen() {},
    onError: () => new Response("legate: internal error\n", { status: 500 }),
  };
  let server: Deno.HttpServer;
  try {
    if (address.transport === "unix") {
      await removeStaleSocket(address.path);
      server = Deno.serve(
        { ...common, transport: "unix", path: address.path },
        handler,
      );
    } else {
      server = Deno.serve(
        { ...common, hostname: address.hostname, port: address.port },
        handler,
      );
    }
  } catch (cause) {
    throw listenError(address, cause);
  }
  return {
    addr: server.addr,
    active: () => inFlight.size,
    async drain(deadlineMs) {
      const finished = await withDeadline(server.shutdown(), deadlineMs);
      if (finished) return 0;
      const cut = inFlight.size;
      // Aborting Deno.serve's signal after shutdown() throws inside Deno
      // (BadResource), so requests are cut where they touch their upstream.
      inFlight.cutAll();
      await withDeadline(server.finished.catch(() => {}), CUT_GRACE_MS);
      return cut;
    },
  };
}

/** Something a TCP listener is running for one accepted connection. */
export interface Connection {
  /** Settles when the connection is over. */
  readonly done: Promise<unknown>;
  /** Closes it now. */
  cut(): void;
}

/** Accept failures are retried after a pause that doubles up to 1 s. */
const ACCEPT_BACKOFF_MS = { first: 5, max: 1_000 } as const;

/**
 * Accepts TCP (or Unix socket) connections on `address` and hands each to
 * `onConnection`. A failed accept never stops the listener: a connection the
 * client reset before it was accepted fails alone (ENOTCONN, ECONNABORTED),
 * and running out of file descriptors pauses accepting with a backoff.
 * `onAcceptError` hears of each failure and whether the client caused it.
 */
export async function serveTcp(
  address: ListenAddress,
  onConnection: (conn: Deno.Conn) => Connection,
  onAcceptError: (error: Error, transient: boolean) => void = () => {},
): Promise<RunningListener> {
  let listener: Deno.Listener;
  try {
    if (address.transport === "unix") {
      await removeStaleSocket(address.path);
      listener = Deno.listen({ transport: "unix", path: address.path });
    } else {
      listener = Deno.listen({
        hostname: address.hostname,
        port: address.port,
      });
    }
  } catch (cause) {
    throw listenError(address, cause);
  }
  const connections = new Set<Connection>();
  let closed = false;
  const accepting = (async () => {
    let backoff = 0;
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (closed) return; // drain() closed the listener
        const transient = error instanceof Deno.errors.NotConnected ||
          error instanceof Deno.errors.ConnectionAborted ||
          error instanceof Deno.errors.ConnectionReset;
        onAcceptError(error as Error, transient);
        if (!transient) {
          backoff = Math.min(
            backoff * 2 || ACCEPT_BACKOFF_MS.first,
            ACCEPT_BACKOFF_MS.max,
          );
          await new Promise((resolve) => setTimeout(resolve, backoff));
        }
        continue;
      }
      backoff = 0;
      setNoDelay(conn);
      const connection = onConnection(conn);
      connections.add(connection);
      connection.done.finally(() => connections.delete(connection));
    }
  })();
  return {
    addr: listener.addr,
    active: () => connections.size,
    async drain(deadlineMs) {
      closed = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      await accepting;
      const all = Promise.all([...connections].map((c) => c.done));
      if (await withDeadline(all, deadlineMs)) return 0;
      const cut = connections.size;
      for (const connection of connections) connection.cut();
      await all;
      return cut;
    },
  };
}

async function withDeadline(
  work: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<false>((resolve) =>
    timer = setTimeout(() => resolve(false), ms)
  );
  try {
    return await Promise.race([work.then(() => true), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Removes a Unix socket file left by a process that is gone. A socket that
 * still accepts connections, or a path that is not a socket, is left alone.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Deno.errors.AlreadyExists(
      "the path exists and is not a socket; legate will not remove it",
    );
  }
  try {
    (await Deno.connect({ transport: "unix", path })).close();
  } catch {
    await Deno.remove(path);
    return;
  }
  throw new Deno.errors.AddrInUse(
    "another process is accepting on this socket",
  );
}

function listenError(address: ListenAddress, cause: unknown): ListenError {
  const reason = cause instanceof Deno.errors.AddrInUse
    ? "address already in use"
    : cause instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : cause instanceof Deno.errors.AddrNotAvailable
    ? "address not available on this host"
    : (cause as Error).message;
  return new ListenError(
    `Cannot listen on ${formatListenAddress(address)}: ${reason}`,
    { cause },
  );
}

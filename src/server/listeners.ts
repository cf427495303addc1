/**
 * What HTTP and TCP listeners share: binding a TCP address or Unix socket,
 * the accept loop that survives every accept failure, and draining with a
 * deadline.
 * @module
 */
import type { ListenAddress } from "../address.ts";
import { formatListenAddress } from "../address.ts";
import { setNoDelay } from "../transport/connect.ts";
import type { TlsMaterial } from "./tls_termination.ts";

/** A listener that is accepting. */
export interface RunningListener {
  /** The bound address (the real port when 0 was asked for). */
  readonly addr: Deno.Addr;
  /** Work in flight: HTTP requests or TCP connections. */
  readonly active: () => number;
  /**
   * TLS listeners: serves another certificate to new connections; absent on
   * plain listeners.
   *
   * @throws {Error} When Deno refuses the certificate; the old one stays.
   */
  readonly useCertificate: ((material: TlsMaterial) => void) | undefined;
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

/**
 * Binds `address`: a TCP socket, or a Unix socket whose stale file (left by
 * a process that is gone) is replaced, given `socketMode` when not null.
 *
 * @throws {ListenError} When the address cannot be bound.
 */
export async function bindListener(
  address: ListenAddress,
  socketMode: number | null = null,
): Promise<Deno.Listener> {
  try {
    if (address.transport === "unix") {
      await removeStaleSocket(address.path);
      const listener = Deno.listen({ transport: "unix", path: address.path });
      if (socketMode !== null) {
        try {
          await Deno.chmod(address.path, socketMode);
        } catch (error) {
          listener.close();
          throw error;
        }
      }
      return listener;
    }
    return Deno.listen({ hostname: address.hostname, port: address.port });
  } catch (cause) {
    throw listenError(address, cause);
  }
}

/** Accept failures are retried after a pause that doubles up to 1 s. */
const ACCEPT_BACKOFF_MS = { first: 5, max: 1_000 } as const;

/** How an accept loop reports and relieves failures. */
export interface AcceptHooks {
  /** Hears of each failure and whether the client caused it (a reset before accept). */
  onError(error: Error, transient: boolean): void;
  /**
   * Asked to free a file descriptor when accepting failed for want of one
   * (too many open files); resolves, once the descriptor is free, with
   * whether it freed one, so accepting resumes at once.
   */
  relieve?(): Promise<boolean>;
}

/**
 * Accepts connections until `listener` is closed, handing each to
 * `onConnection` with Nagle's algorithm off. A failed accept never stops the
 * loop: a connection the client reset before it was accepted fails alone
 * (ENOTCONN, ECONNABORTED); running out of file descriptors first asks
 * `relieve` to close an idle connection, one at a time, else pauses
 * accepting with a backoff (the kernel's backlog holds new connections
 * meanwhile).
 * Resolves when the listener is closed.
 */
export async function acceptConnections(
  listener: Deno.Listener,
  onConnection: (conn: Deno.Conn) => void,
  hooks: AcceptHooks,
): Promise<void> {
  let backoff = 0;
  while (true) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return; // closed by drain()
      const transient = error instanceof Deno.errors.NotConnected ||
        error instanceof Deno.errors.ConnectionAborted ||
        error instanceof Deno.errors.ConnectionReset;
      hooks.onError(error as Error, transient);
      if (transient || await hooks.relieve?.()) continue;
      backoff = Math.min(
        backoff * 2 || ACCEPT_BACKOFF_MS.first,
        ACCEPT_BACKOFF_MS.max,
      );
      await new Promise((resolve) => setTimeout(resolve, backoff));
      continue;
    }
    backoff = 0;
    setNoDelay(conn);
    onConnection(conn);
  }
}

/** Closes a listener that may already be closed. */
export function closeListener(listener: Deno.Listener): void {
  try {
    listener.close();
  } catch {
    // Already closed.
  }
}

/** Whether `work` settled within `ms` milliseconds. */
export async function withDeadline(
  work: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<false>((resolve) =>
    timer = setTimeout(() => resolve(false), ms)
  );
  try {
    return await Promise.race([work.then(() => true, () => true), deadline]);
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

/**
 * TCP listeners: accept connections (TCP or Unix sockets) and hand each to
 * the TCP pipeline; drain by letting the connections finish.
 * @module
 */
import type { ListenAddress } from "../address.ts";
import { type TlsMaterial, TlsTermination } from "./tls_termination.ts";
import {
  acceptConnections,
  bindListener,
  closeListener,
  type RunningListener,
  withDeadline,
} from "./listeners.ts";

/** Something a TCP listener is running for one accepted connection. */
export interface Connection {
  /** Settles when the connection is over. */
  readonly done: Promise<unknown>;
  /** Closes it now. */
  cut(): void;
}

/** Options of {@linkcode serveTcp}. */
export interface TcpListenerOptions {
  /** Hears of each failed accept and whether the client caused it. */
  readonly onAcceptError?: (error: Error, transient: boolean) => void;
  /** Terminate TLS with this certificate (no ALPN); plain TCP when absent. */
  readonly tls?: TlsMaterial;
  /** `unix:` addresses: the socket file's permissions; as created when absent. */
  readonly socketMode?: number | null;
}

/**
 * Accepts connections on `address` and hands each to `onConnection` with the
 * client's address (with TLS, the connection is the TLS one and its own
 * addresses are a loopback hop's). Accepting goes on through failed accepts.
 *
 * @throws {ListenError} When the address cannot be bound.
 */
export async function serveTcp(
  address: ListenAddress,
  onConnection: (conn: Deno.Conn, remoteAddr: Deno.Addr) => Connection,
  options: TcpListenerOptions = {},
): Promise<RunningListener> {
  const termination = options.tls ? new TlsTermination(options.tls, []) : null;
  const listener = await bindListener(address, options.socketMode ?? null)
    .catch((error) => {
      termination?.close();
      throw error;
    });
  const connections = new Set<Connection>();
  let draining = false;
  const serve = (conn: Deno.Conn, remoteAddr: Deno.Addr) => {
    if (draining) {
      conn.close();
      return;
    }
    const connection = onConnection(conn, remoteAddr);
    connections.add(connection);
    const remove = () => connections.delete(connection);
    connection.done.then(remove, remove);
  };
  const accepting = acceptConnections(listener, (conn) => {
    if (termination === null) return serve(conn, conn.remoteAddr);
    termination.terminate(conn).then((tls) => {
      if (tls) serve(tls, conn.remoteAddr);
    });
  }, { onError: options.onAcceptError ?? (() => {}) });
  return {
    addr: listener.addr,
    useCertificate: termination
      ? (material) => termination.useCertificate(material)
      : undefined,
    active: () => connections.size,
    async drain(deadlineMs) {
      draining = true;
      closeListener(listener);
      await accepting;
      termination?.close();
      const all = Promise.all([...connections].map((c) => c.done));
      if (await withDeadline(all, deadlineMs)) return 0;
      const cut = connections.size;
      for (const connection of connections) connection.cut();
      await all;
      return cut;
    },
  };
}

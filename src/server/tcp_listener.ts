/**
 * TCP listeners: accept connections (TCP or Unix sockets) and hand each to
 * the TCP pipeline; drain by letting the connections finish.
 * @module
 */
import type { ListenAddress } from "../address.ts";
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

/**
 * Accepts connections on `address` and hands each to `onConnection`.
 * `onAcceptError` hears of each failed accept and whether the client caused
 * it; accepting goes on regardless.
 *
 * @throws {ListenError} When the address cannot be bound.
 */
export async function serveTcp(
  address: ListenAddress,
  onConnection: (conn: Deno.Conn) => Connection,
  onAcceptError: (error: Error, transient: boolean) => void = () => {},
): Promise<RunningListener> {
  const listener = await bindListener(address);
  const connections = new Set<Connection>();
  const accepting = acceptConnections(listener, (conn) => {
    const connection = onConnection(conn);
    connections.add(connection);
    const remove = () => connections.delete(connection);
    connection.done.then(remove, remove);
  }, { onError: onAcceptError });
  return {
    addr: listener.addr,
    active: () => connections.size,
    async drain(deadlineMs) {
      closeListener(listener);
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

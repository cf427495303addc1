/**
 * The TCP pipeline of one listener: admit the connection under the
 * service's limits, pick an endpoint (hashing the client's address when the
 * policy hashes), connect (trying another endpoint when connecting fails, as
 * the retry policy allows), then relay bytes until both sides are done.
 *
 * Over a limit, or with no endpoint to go to, the client's connection is
 * closed at once: TCP has no way to say why.
 * @module
 */
import type { Logger } from "../log.ts";
import { closeQuietly, connectEndpoint } from "../transport/connect.ts";
import { classifySocketError, ProxyError } from "../transport/errors.ts";
import { relay } from "../transport/tcp.ts";
import type { Cluster } from "../upstream/cluster.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import { hashKey } from "../upstream/hash.ts";
import type { Connection } from "./tcp_listener.ts";
import type { Traffic } from "./traffic.ts";

/** One TCP service as its listener runs it. */
export interface TcpRoute {
  /** The service name. */
  readonly name: string;
  /** Timeouts in milliseconds: opening a connection, and no bytes either way. */
  readonly timeouts: { readonly connect: number; readonly idle: number };
  /** Whether the policy hashes the client's address (ring_hash, maglev). */
  readonly hashSourceIp: boolean;
  /** The service's endpoints and policies. */
  readonly cluster: Cluster;
}

/**
 * Makes the connection handler of one TCP listener. `route()` is read once
 * per connection, so a reload never changes a connection in flight.
 */
export function createTcpHandler(
  route: () => TcpRoute,
  context: { readonly log: Logger; readonly traffic: Traffic },
): (client: Deno.Conn) => Connection {
  return (client) => {
    const { name, cluster, timeouts, hashSourceIp } = route();
    let cut = false;
    let cutRelay: (() => void) | undefined;
    const done = (async () => {
      if (!cluster.admit()) {
        closeQuietly(client);
        return;
      }
      try {
        const upstream = await connectUpstream();
        if (upstream === null) {
          closeQuietly(client);
          return;
        }
        const [endpoint, conn] = upstream;
        const running = relay(client, conn, timeouts.idle);
        cutRelay = running.cut;
        context.traffic.connectionOpened(name);
        const result = await running.done;
        cluster.released(endpoint);
        context.traffic.connectionClosed(name, result.sent, result.received);
        if (context.log.enabled("debug")) {
          context.log.debug("connection closed", { service: name, ...result });
        }
      } finally {
        cluster.leave();
      }
    })();

    /** Connects to an endpoint, retrying others on connect failures; null when none could be reached. */
    async function connectUpstream(): Promise<[Endpoint, Deno.Conn] | null> {
      const remote = client.remoteAddr;
      const hash = hashSourceIp && remote.transport === "tcp"
        ? hashKey(remote.hostname)
        : undefined;
      const { retries } = cluster.settings;
      const tried = new Set<Endpoint>();
      let attempts = 0;
      while (!cut) {
        let endpoint: Endpoint;
        try {
          // Over a limit a TCP connection cannot wait: it is closed at once.
          endpoint = await cluster.acquire(hash, tried, false);
        } catch {
          return null;
        }
        tried.add(endpoint);
        attempts++;
        cluster.started(endpoint);
        let conn: Deno.Conn;
        try {
          conn = await connectEndpoint(endpoint, timeouts.connect);
        } catch (error) {
          cluster.released(endpoint);
          const failure = error instanceof ProxyError
            ? error
            : classifySocketError(error, `connect to ${endpoint.url}`);
          cluster.finished(endpoint, failure.message);
          context.traffic.upstreamError(name, failure.kind);
          // A failed connect holds no share of the retry budget.
          if (
            attempts >= retries.attempts ||
            !retries.on.includes("connect_failure") ||
            !cluster.retryAllowed("connect_failure")
          ) {
            return null;
          }
          continue;
        }
        cluster.finished(endpoint, null);
        if (cut) {
          closeQuietly(conn);
          cluster.released(endpoint);
          return null;
        }
        return [endpoint, conn];
      }
      return null;
    }

    return {
      done,
      cut() {
        cut = true;
        if (cutRelay) cutRelay();
        else closeQuietly(client);
      },
    };
  };
}

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

/** How one TCP connection ended, as the log phase hears it. */
export interface ConnectionOutcome {
  /** When it was accepted, in epoch milliseconds. */
  readonly startedAt: number;
  /** The service. */
  readonly service: string;
  /** The client's address (`unix` for a Unix socket). */
  readonly client: string;
  /** The endpoint it was relayed to, when one was reached. */
  readonly endpoint: Endpoint | null;
  /** Bytes from the client to the upstream. */
  readonly bytesIn: number;
  /** Bytes from the upstream to the client. */
  readonly bytesOut: number;
  /** From accept to close, in milliseconds. */
  readonly durationMs: number;
  /** Why it ended early (an RFC 9209 error type), or null. */
  readonly error: string | null;
}

/** What the TCP pipeline needs besides its route. */
export interface TcpProxyContext {
  /** Logs. */
  readonly log: Logger;
  /** Counts connections, bytes and upstream failures. */
  readonly traffic: Traffic;
  /** The log phase: each hears how every connection ended. */
  readonly logPhase: readonly ((outcome: ConnectionOutcome) => void)[];
}

/**
 * Makes the connection handler of one TCP listener. `route()` is read once
 * per connection, so a reload never changes a connection in flight.
 */
export function createTcpHandler(
  route: () => TcpRoute,
  context: TcpProxyContext,
): (client: Deno.Conn, remote: Deno.Addr) => Connection {
  return (client, remote) => {
    const started = performance.now();
    const startedAt = Date.now();
    const { name, cluster, timeouts, hashSourceIp } = route();
    let cut = false;
    let cutRelay: (() => void) | undefined;
    // Why no upstream took the connection, for the log phase.
    let refusal = "destination_unavailable";
    const ended = (
      endpoint: Endpoint | null,
      bytesIn: number,
      bytesOut: number,
      error: string | null,
    ) => {
      const outcome: ConnectionOutcome = {
        startedAt,
        service: name,
        client: remote.transport === "tcp" ? remote.hostname : remote.transport,
        endpoint,
        bytesIn,
        bytesOut,
        durationMs: performance.now() - started,
        error,
      };
      for (const hook of context.logPhase) hook(outcome);
    };
    const done = (async () => {
      if (!cluster.admit()) {
        closeQuietly(client);
        ended(null, 0, 0, "connection_limit_reached");
        return;
      }
      try {
        const upstream = await connectUpstream();
        if (upstream === null) {
          closeQuietly(client);
          ended(null, 0, 0, cut ? null : refusal);
          return;
        }
        const [endpoint, conn] = upstream;
        const running = relay(client, conn, timeouts.idle);
        cutRelay = running.cut;
        context.traffic.connectionOpened(name, running.bytes);
        const result = await running.done;
        cluster.released(endpoint);
        context.traffic.connectionClosed(
          name,
          running.bytes,
          (performance.now() - started) / 1000,
        );
        ended(
          endpoint,
          result.sent,
          result.received,
          result.end === "idle"
            ? "idle_timeout"
            : result.end === "error"
            ? "connection_terminated"
            : null,
        );
        if (context.log.enabled("debug")) {
          context.log.debug("connection closed", { service: name, ...result });
        }
      } finally {
        cluster.leave();
      }
    })();

    /** Connects to an endpoint, retrying others on connect failures; null when none could be reached. */
    async function connectUpstream(): Promise<[Endpoint, Deno.Conn] | null> {
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
        } catch (error) {
          refusal = (error as ProxyError).kind;
          return null;
        }
        tried.add(endpoint);
        attempts++;
        cluster.started(endpoint);
        let conn: Deno.Conn;
        const connecting = performance.now();
        try {
          conn = await connectEndpoint(endpoint, timeouts.connect);
        } catch (error) {
          cluster.released(endpoint);
          const failure = error instanceof ProxyError
            ? error
            : classifySocketError(error, `connect to ${endpoint.url}`);
          refusal = failure.kind;
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
        context.traffic.connected(
          name,
          (performance.now() - connecting) / 1000,
        );
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

/**
 * The TCP pipeline of one listener: pick an endpoint (falling back to the
 * next when connecting fails), then relay bytes until both sides are done.
 * @module
 */
import type { ServiceConfig, UpstreamConfig } from "../config/service.ts";
import type { Logger } from "../log.ts";
import { closeQuietly, connectEndpoint } from "../transport/connect.ts";
import { classifySocketError, ProxyError } from "../transport/errors.ts";
import { relay } from "../transport/tcp.ts";
import type { Balancer } from "../upstream/balancer.ts";
import type { Reachability } from "../upstream/reachability.ts";
import type { Connection } from "./tcp_listener.ts";
import type { Traffic } from "./traffic.ts";

/** One TCP service as its listener runs it. */
export interface TcpRoute {
  /** The service. */
  readonly service: ServiceConfig;
  /** Its endpoints. */
  readonly balancer: Balancer<UpstreamConfig>;
}

/**
 * Makes the connection handler of one TCP listener. `route()` is read once
 * per connection, so a reload never changes a connection in flight.
 */
export function createTcpHandler(
  route: () => TcpRoute,
  context: {
    readonly log: Logger;
    readonly reachability: Reachability;
    readonly traffic: Traffic;
  },
): (client: Deno.Conn) => Connection {
  return (client) => {
    const { service, balancer } = route();
    let cut = false;
    let cutRelay: (() => void) | undefined;
    const done = (async () => {
      for (const endpoint of balancer.candidates()) {
        let upstream: Deno.Conn;
        try {
          upstream = await connectEndpoint(endpoint, service.timeouts.connect);
        } catch (error) {
          const failure = error instanceof ProxyError
            ? error
            : classifySocketError(error, `connect to ${endpoint.url}`);
          context.reachability.failed(
            service.name,
            endpoint.url,
            failure.message,
          );
          context.traffic.upstreamError(service.name, failure.kind);
          if (cut) break;
          continue;
        }
        context.reachability.succeeded(service.name, endpoint.url);
        if (cut) {
          closeQuietly(upstream);
          break;
        }
        const running = relay(client, upstream, service.timeouts.idle);
        cutRelay = running.cut;
        context.traffic.connectionOpened(service.name);
        const result = await running.done;
        context.traffic.connectionClosed(
          service.name,
          result.sent,
          result.received,
        );
        if (context.log.enabled("debug")) {
          context.log.debug("connection closed", {
            service: service.name,
            ...result,
          });
        }
        return;
      }
      closeQuietly(client);
    })();
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

/**
 * The TCP pipeline of one listener: pick an endpoint (falling back to the
 * next when connecting fails), then relay bytes until both sides are done.
 * @module
 */
import type { ServiceConfig, UpstreamConfig } from "../config/service.ts";
import type { Logger } from "../log.ts";
import { closeQuietly, connectEndpoint } from "../transport/connect.ts";
import { ProxyError } from "../transport/errors.ts";
import { relay } from "../transport/tcp.ts";
import type { Balancer } from "../upstream/balancer.ts";
import type { Reachability } from "../upstream/reachability.ts";
import type { Connection } from "./listeners.ts";

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
  context: { readonly log: Logger; readonly reachability: Reachability },
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
          const reason = error instanceof ProxyError
            ? error.message
            : String(error);
          context.reachability.failed(service.name, endpoint.url, reason);
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
        const result = await running.done;
        context.log.debug("connection closed", {
          service: service.name,
          ...result,
        });
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

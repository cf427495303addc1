/**
 * The HTTP request pipeline of one listener: route, pick an endpoint, adjust
 * the request, send it, adjust the response. Failures become short plain-text
 * responses with a `Proxy-Status` header naming legate and the error.
 * @module
 */
import type { ServiceConfig, UpstreamConfig } from "../config/service.ts";
import type { Logger } from "../log.ts";
import type { HttpRouter, RouteMatch } from "../router/router.ts";
import { stripPrefix } from "../router/router.ts";
import { ProxyError, statusForError } from "../transport/errors.ts";
import {
  connectionTokens,
  type HeaderPair,
  isHopByHop,
  withoutHopByHop,
} from "../transport/headers.ts";
import type {
  HttpTransport,
  UpstreamResponse,
} from "../transport/http1/client.ts";
import type { Balancer } from "../upstream/balancer.ts";
import type { Reachability } from "../upstream/reachability.ts";
import type { ClientConnection, HttpHandler } from "./http_listener.ts";
import { requestTarget } from "./request_target.ts";
import type { Traffic } from "./traffic.ts";

/** One HTTP service as a listener routes to it. */
export interface HttpRoute {
  /** The service. */
  readonly service: ServiceConfig;
  /** What it matches. */
  readonly match: RouteMatch;
  /** Its endpoints. */
  readonly balancer: Balancer<UpstreamConfig>;
}

/** What the pipeline needs besides the routes. */
export interface HttpProxyContext {
  /** Sends requests upstream. */
  readonly transport: HttpTransport;
  /** Logs failures. */
  readonly log: Logger;
  /** Logs endpoints going down and coming back. */
  readonly reachability: Reachability;
  /** Counts requests and upstream failures. */
  readonly traffic: Traffic;
}

const VIA: HeaderPair = ["via", "1.1 legate"];

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  499: "Client Closed Request",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/**
 * Makes the handler of one HTTP listener. `router()` is read once per
 * request, so a reload that swaps it never changes a request in flight.
 */
export function createHttpHandler(
  router: () => HttpRouter<HttpRoute>,
  context: HttpProxyContext,
): HttpHandler {
  return (request, client) => proxyRequest(request, client, router(), context);
}

async function proxyRequest(
  request: Request,
  client: ClientConnection,
  router: HttpRouter<HttpRoute>,
  context: HttpProxyContext,
): Promise<Response> {
  const incoming = readRequestHeaders(request);
  if (request.method === "CONNECT") {
    return errorResponse(
      new ProxyError(
        "http_request_error",
        "legate does not tunnel CONNECT; use a TCP route for tunnels",
      ),
      501,
    );
  }
  const parsed = requestTarget(request.url, request.method, incoming.host);
  if (typeof parsed === "string") {
    return errorResponse(new ProxyError("http_request_error", parsed));
  }
  const { authority, path, target } = parsed;
  const route = router.route(authority, path === "*" ? "/" : path);
  if (!route) {
    const services = router.routes.map((r) =>
      `${r.service.name} (host ${
        r.match.host ?? "*"
      }, path ${r.match.pathPrefix})`
    ).join(", ");
    return errorResponse(
      new ProxyError(
        "destination_not_found",
        `no service on this listener matches host "${authority}" and path "${path}"; services: ${services}`,
      ),
    );
  }
  const { service } = route;
  const forwardedTarget = service.stripPrefix && path !== "*"
    ? stripPrefix(service.match.pathPrefix, path) + target.slice(path.length)
    : target;
  const headers = withForwardingHeaders(incoming, client, authority);
  // A request without Content-Length or Transfer-Encoding has no body (RFC
  // 9112 6.3); not touching request.body then saves creating its stream.
  const body = incoming.framed ? request.body : null;

  let failure: ProxyError | undefined;
  for (const endpoint of route.balancer.candidates()) {
    headers[0] = [
      "host",
      service.preserveHost ? authority : endpoint.authority,
    ];
    let response: Response;
    try {
      response = clientResponse(
        await context.transport.send(endpoint, {
          method: request.method,
          target: forwardedTarget,
          headers,
          body,
          bodyLength: incoming.bodyLength,
          signal: request.signal,
          tracker: client,
        }, service.timeouts),
      );
    } catch (error) {
      failure = error instanceof ProxyError
        ? error
        : new ProxyError("proxy_internal_error", String(error), {
          cause: error,
        });
      if (failure.source === "upstream") {
        context.reachability.failed(
          service.name,
          endpoint.url,
          failure.message,
        );
      }
      if (failure.retryable) continue;
      break;
    }
    context.reachability.succeeded(service.name, endpoint.url);
    context.traffic.request(service.name, response.status);
    if (context.log.enabled("debug")) {
      context.log.debug("request", {
        service: service.name,
        method: request.method,
        target: forwardedTarget,
        upstream: endpoint.url,
        status: response.status,
      });
    }
    return response;
  }
  if (failure!.kind === "client_gone") {
    context.log.debug("client went away", {
      service: service.name,
      reason: failure!.message,
    });
  } else if (failure!.source === "internal") {
    context.log.error("request failed", {
      service: service.name,
      reason: failure!.message,
    });
  }
  const response = errorResponse(failure!);
  if (failure!.source === "upstream") {
    context.traffic.upstreamError(service.name, failure!.kind);
  }
  context.traffic.request(service.name, response.status);
  return response;
}

/**
 * The upstream's response as the client gets it. A 205 carries no content
 * (RFC 9110 15.3.6) and `Response` refuses one with a body, even an empty
 * one; should the upstream have framed one anyway, its stream is cancelled,
 * which closes the connection rather than leaving it waiting.
 */
function clientResponse(upstream: UpstreamResponse): Response {
  const headers = withoutHopByHop(upstream.headers);
  headers.push(VIA);
  let body = upstream.body;
  if (upstream.status === 205 && body !== null) {
    if (body instanceof ReadableStream) body.cancel().catch(() => {});
    body = null;
  }
  return new Response(body, {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: headers as [string, string][],
  });
}

/** What the pipeline reads from the client's request headers in one pass. */
interface IncomingHeaders {
  /** A placeholder for Host, then the client's end-to-end headers. */
  readonly headers: HeaderPair[];
  /** The client's Host header, or null. */
  readonly host: string | null;
  /** The client's `X-Forwarded-For`, unless `Connection` named it. */
  readonly forwardedFor: string | undefined;
  /** The client's `Via`, unless `Connection` named it. */
  readonly via: string | undefined;
  /** Whether the request frames a body (Content-Length or Transfer-Encoding). */
  readonly framed: boolean;
  /** The body's length when Content-Length gives it. */
  readonly bodyLength: number | null;
}

/**
 * Reads the client's headers once: its end-to-end headers, without the
 * hop-by-hop ones and those its `Connection` names. The forwarding headers
 * legate sets are added afterwards, by {@linkcode withForwardingHeaders}, so
 * a client's `Connection` can never remove them (or the Host placeholder).
 */
function readRequestHeaders(request: Request): IncomingHeaders {
  const headers: HeaderPair[] = [["host", ""]];
  let host: string | null = null;
  let length: string | undefined;
  let framed = false;
  let connection: string | undefined;
  let forwardedFor: string | undefined;
  let via: string | undefined;
  for (const pair of request.headers) {
    switch (pair[0]) {
      case "host":
        host = pair[1];
        break;
      case "content-length":
        length = pair[1];
        framed = true;
        break;
      case "transfer-encoding":
        framed = true;
        break;
      case "connection":
        connection = pair[1];
        break;
      case "x-forwarded-for":
        forwardedFor = pair[1];
        break;
      case "via":
        via = pair[1];
        break;
      case "x-forwarded-proto":
      case "x-forwarded-host":
      case "expect":
        break;
      default:
        if (!isHopByHop(pair[0])) headers.push(pair);
    }
  }
  if (connection !== undefined) {
    const named = connectionTokens(connection);
    // Index 0 is legate's Host placeholder, never the client's to remove.
    let kept = 1;
    for (let i = 1; i < headers.length; i++) {
      if (!named.has(headers[i]![0])) headers[kept++] = headers[i]!;
    }
    headers.length = kept;
    if (named.has("x-forwarded-for")) forwardedFor = undefined;
    if (named.has("via")) via = undefined;
  }
  return {
    headers,
    host,
    forwardedFor,
    via,
    framed,
    bodyLength: length !== undefined && /^\d+$/.test(length)
      ? Number(length)
      : null,
  };
}

/**
 * The upstream's headers: the client's end-to-end headers, then
 * `X-Forwarded-For` (appended to), `X-Forwarded-Proto`, `X-Forwarded-Host`
 * and `Via` (appended to).
 */
function withForwardingHeaders(
  incoming: IncomingHeaders,
  client: ClientConnection,
  authority: string,
): HeaderPair[] {
  const { headers, forwardedFor, via } = incoming;
  const remote = client.remoteAddr;
  if (remote.transport === "tcp") {
    headers.push([
      "x-forwarded-for",
      forwardedFor ? `${forwardedFor}, ${remote.hostname}` : remote.hostname,
    ]);
  } else if (forwardedFor) {
    headers.push(["x-forwarded-for", forwardedFor]);
  }
  headers.push(["x-forwarded-proto", "http"]);
  headers.push(["x-forwarded-host", authority]);
  headers.push(via ? ["via", `${via}, 1.1 legate`] : VIA);
  return headers;
}

function errorResponse(
  error: ProxyError,
  status: number = statusForError(error),
): Response {
  const text = STATUS_TEXT[status] ?? "Error";
  return new Response(`legate: ${status} ${text}: ${error.message}\n`, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "proxy-status": `legate; error=${error.kind}`,
    },
  });
}

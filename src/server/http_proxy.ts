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
  type HeaderPair,
  isHopByHop,
  withoutConnectionNamed,
  withoutHopByHop,
} from "../transport/headers.ts";
import type {
  ExchangeGroup,
  HttpTransport,
  UpstreamResponse,
} from "../transport/http1.ts";
import type { Balancer } from "../upstream/balancer.ts";
import type { Reachability } from "../upstream/reachability.ts";
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
  /** The listener's exchanges, cut together when its drain deadline passes. */
  readonly group: ExchangeGroup;
  /** Counts requests and upstream failures. */
  readonly traffic: Traffic;
}

const VIA: HeaderPair = ["via", "1.1 legate"];

const STATUS_TEXT: Record<number, string> = {
  404: "Not Found",
  499: "Client Closed Request",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/**
 * Makes the `Deno.serve` handler of one HTTP listener. `router()` is read once
 * per request, so a reload that swaps it never changes a request in flight.
 */
export function createHttpHandler(
  router: () => HttpRouter<HttpRoute>,
  context: HttpProxyContext,
): Deno.ServeHandler {
  return (request, info) => proxyRequest(request, info, router(), context);
}

async function proxyRequest(
  request: Request,
  info: Deno.ServeHandlerInfo,
  router: HttpRouter<HttpRoute>,
  context: HttpProxyContext,
): Promise<Response> {
  const target = requestTarget(request.url);
  const query = target.indexOf("?");
  const path = query < 0 ? target : target.slice(0, query);
  const incoming = readRequestHeaders(request, info);
  const { host, headers } = incoming;
  const route = router.route(host, path);
  if (!route) {
    const services = router.routes.map((r) =>
      `${r.service.name} (host ${
        r.match.host ?? "*"
      }, path ${r.match.pathPrefix})`
    ).join(", ");
    return errorResponse(
      new ProxyError(
        "destination_not_found",
        `no service on this listener matches host "${host}" and path "${path}"; services: ${services}`,
      ),
    );
  }
  const { service } = route;
  const forwardedTarget = service.stripPrefix
    ? stripPrefix(service.match.pathPrefix, path) +
      (query < 0 ? "" : target.slice(query))
    : target;
  // A request without Content-Length or Transfer-Encoding has no body (RFC
  // 9112 6.3); not touching request.body then saves creating its stream.
  const body = incoming.framed ? request.body : null;

  let failure: ProxyError | undefined;
  for (const endpoint of route.balancer.candidates()) {
    headers[0] = [
      "host",
      service.preserveHost && host !== "" ? host : endpoint.authority,
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
          group: context.group,
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
        target,
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
  } else if (failure!.source !== "upstream") {
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

/** The request target exactly as the client sent it: path and query, undecoded. */
function requestTarget(url: string): string {
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash < 0 ? "/" : url.slice(slash);
}

/** What the pipeline reads from the client's request headers in one pass. */
interface IncomingHeaders {
  /** The headers for the upstream, with a placeholder for Host first. */
  readonly headers: HeaderPair[];
  /** The client's Host header, or "". */
  readonly host: string;
  /** Whether the request frames a body (Content-Length or Transfer-Encoding). */
  readonly framed: boolean;
  /** The body's length when Content-Length gives it. */
  readonly bodyLength: number | null;
}

/**
 * Reads the client's headers once and builds the upstream's: end-to-end
 * headers, `X-Forwarded-For` appended to, `X-Forwarded-Proto` and
 * `X-Forwarded-Host` set, `Via` appended to.
 */
function readRequestHeaders(
  request: Request,
  info: Deno.ServeHandlerInfo,
): IncomingHeaders {
  const headers: HeaderPair[] = [["host", ""]];
  let host = "";
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
  const remote = info.remoteAddr as Deno.Addr;
  if (remote.transport === "tcp" || remote.transport === "udp") {
    headers.push([
      "x-forwarded-for",
      forwardedFor ? `${forwardedFor}, ${remote.hostname}` : remote.hostname,
    ]);
  } else if (forwardedFor) {
    headers.push(["x-forwarded-for", forwardedFor]);
  }
  headers.push(["x-forwarded-proto", "http"]);
  if (host !== "") headers.push(["x-forwarded-host", host]);
  headers.push(via ? ["via", `${via}, 1.1 legate`] : VIA);
  return {
    headers: connection === undefined
      ? headers
      : withoutConnectionNamed(headers, connection),
    host,
    framed,
    bodyLength: length !== undefined && /^\d+$/.test(length)
      ? Number(length)
      : null,
  };
}

function errorResponse(error: ProxyError): Response {
  const status = statusForError(error);
  const text = STATUS_TEXT[status] ?? "Error";
  return new Response(`legate: ${status} ${text}: ${error.message}\n`, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "proxy-status": `legate; error=${error.kind}`,
    },
  });
}

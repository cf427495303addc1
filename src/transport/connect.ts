/**
 * Opening upstream connections with a deadline: TCP, TLS or a Unix socket.
 * @module
 */
import { classifySocketError, ProxyError } from "./errors.ts";
import { schedule } from "./timer_wheel.ts";

/** How legate speaks TLS to a service's upstreams, beyond verifying their names. */
export interface UpstreamTlsOptions {
  /** CA certificates (PEM) trusted besides the system roots and `DENO_CERT`. */
  readonly caCerts: readonly string[];
  /** The client certificate (PEM chain and key) to present, or null. */
  readonly clientCertificate:
    | { readonly cert: string; readonly key: string }
    | null;
  /** The name to verify and send as SNI instead of the endpoint's, or null. */
  readonly serverName: string | null;
}

/**
 * What Deno.connectTls reads as the name to verify and send as SNI when it
 * differs from the address it connects to: its own symbol, not yet in its
 * types.
 */
const SERVER_NAME = Symbol.for("unstableServerName");

/** Where and how to connect to one upstream endpoint. */
export interface Endpoint {
  /** Identity: keys its connection pool; one per address, TLS name and scheme. */
  readonly key: string;
  /** The URL the endpoint came from; names it in logs. */
  readonly url: string;
  /** Socket address: an IP address (or a name the OS resolves) and port, or a Unix socket. */
  readonly address:
    | {
      readonly transport: "tcp";
      readonly hostname: string;
      readonly port: number;
    }
    | { readonly transport: "unix"; readonly path: string };
  /** Speak TLS, verifying the certificate against `serverName`. */
  readonly tls: boolean;
  /** The name TLS sends (SNI) and verifies the certificate against. */
  readonly serverName: string;
  /** `host[:port]` as configured: the Host an HTTP upstream expects. */
  readonly authority: string;
  /** The service's TLS settings; the defaults when absent. */
  readonly upstreamTls?: UpstreamTlsOptions | null;
}

/**
 * Connects to `endpoint`, failing with a `connection_timeout` ProxyError after
 * `timeoutMs`. A connection that completes after the deadline is closed.
 *
 * @example Connects, or fails with a ProxyError saying why
 * ```ts
 * import assert from "node:assert/strict";
 * import { connectEndpoint } from "./connect.ts";
 * import { ProxyError } from "./errors.ts";
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const endpoint = {
 *   key: `127.0.0.1:${port}`,
 *   url: `tcp://127.0.0.1:${port}`,
 *   address: { transport: "tcp" as const, hostname: "127.0.0.1", port },
 *   tls: false,
 *   serverName: "127.0.0.1",
 *   authority: `127.0.0.1:${port}`,
 * };
 * const conn = await connectEndpoint(endpoint, 5_000);
 * conn.close();
 * listener.close();
 * await assert.rejects(
 *   () => connectEndpoint(endpoint, 5_000),
 *   (error) => error instanceof ProxyError && error.kind === "connection_refused",
 * );
 * ```
 */
export async function connectEndpoint(
  endpoint: Endpoint,
  timeoutMs: number,
): Promise<Deno.Conn> {
  const { address } = endpoint;
  const connecting: Promise<Deno.Conn> = address.transport === "unix"
    ? Deno.connect({ transport: "unix", path: address.path })
    : connectTcp(endpoint, address.hostname, address.port);
  let cancel: (() => void) | undefined;
  const deadline = new Promise<never>((_, reject) => {
    cancel = schedule(
      timeoutMs,
      () =>
        reject(
          new ProxyError(
            "connection_timeout",
            `connect to ${endpoint.url} took longer than ${timeoutMs}ms`,
          ),
        ),
    );
  });
  try {
    return await Promise.race([connecting, deadline]);
  } catch (error) {
    connecting.then((late) => late.close(), () => {});
    throw classifySocketError(error, `connect to ${endpoint.url}`);
  } finally {
    cancel?.();
  }
}

/** A TCP connection to `endpoint`, with TLS over it when the endpoint asks. */
async function connectTcp(
  endpoint: Endpoint,
  hostname: string,
  port: number,
): Promise<Deno.Conn> {
  // ALPN names HTTP/1.1 to HTTPS upstreams only: a TCP service with ALPN
  // names of its own refuses a client that offers only HTTP's.
  const alpnProtocols = endpoint.url.startsWith("https") ? ["http/1.1"] : [];
  const settings = endpoint.upstreamTls;
  const serverName = settings?.serverName ?? endpoint.serverName;
  const caCerts = [...(settings?.caCerts ?? [])];
  const client = settings?.clientCertificate;
  if (endpoint.tls && client) {
    // Only Deno.connectTls takes a client certificate, and it opens a socket
    // of its own whose Nagle's algorithm Deno gives no way to turn off.
    return await Deno.connectTls(
      {
        hostname,
        port,
        caCerts,
        alpnProtocols,
        cert: client.cert,
        key: client.key,
        [SERVER_NAME]: serverName,
      } as Deno.ConnectTlsOptions & Deno.TlsCertifiedKeyPem,
    );
  }
  const conn = await Deno.connect({ hostname, port });
  setNoDelay(conn);
  if (!endpoint.tls) return conn;
  return await Deno.startTls(conn, {
    hostname: serverName,
    caCerts,
    alpnProtocols,
  });
}

/**
 * Turns off Nagle's algorithm on a TCP connection (Deno leaves it on). With it
 * on, a message written in two parts waits for the peer's delayed ACK of the
 * first part before the second goes out: 40 ms and more per exchange.
 */
export function setNoDelay(conn: Deno.Conn): void {
  if (conn.remoteAddr.transport === "tcp") {
    (conn as Deno.TcpConn).setNoDelay(true);
  }
}

/** Closes a connection that may already be closed. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed: nothing left to release.
  }
}

/** Writes all of `data`; `Deno.Conn.write` may write only part of it. */
export async function writeAll(
  conn: { write(data: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(offset === 0 ? data : data.subarray(offset));
  }
}

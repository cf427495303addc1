/**
 * TLS on listeners, with a certificate that may change while legate runs.
 *
 * Deno fixes a TLS listener's certificate when it opens it (an SNI resolver
 * would be asked once per name and its answer kept for ever), and cannot act
 * as the TLS server on a connection it accepted itself. So a TLS listener
 * accepts plain TCP connections, as every listener does, and passes each over
 * a loopback hop to an inner `Deno.listenTls` listener holding the current
 * certificate; the TLS connection that listener accepts is what HTTP and TCP
 * serving see. A new certificate opens a new inner listener: new connections
 * go to it, and the old one closes once every connection sent to it has
 * arrived. No connection is refused while the certificate changes, and
 * connections already open keep the certificate they began with.
 *
 * The inner listeners accept only the connections legate itself made: any
 * other connection to their loopback port is closed at once.
 * @module
 */
import { closeQuietly } from "../transport/connect.ts";
import { relay } from "../transport/tcp.ts";
import { closeListener } from "./listeners.ts";

/** A certificate chain and its private key, PEM. */
export interface TlsMaterial {
  /** The certificate chain, leaf first. */
  readonly cert: string;
  /** The private key. */
  readonly key: string;
}

/**
 * How long the hop between a client and its TLS connection may carry no bytes
 * before both are closed, in milliseconds: longer than anything the serving
 * side waits for itself, so that side decides when a connection ends.
 */
const HOP_IDLE_MS = 24 * 3_600_000;

/** Terminates TLS for one listener, with the certificate of the moment. */
export class TlsTermination {
  readonly #alpnProtocols: readonly string[];
  #current: InnerListener;

  /**
   * Opens the inner listener for `material`, offering `alpnProtocols`.
   *
   * @throws {Error} When Deno refuses the certificate or key.
   */
  constructor(material: TlsMaterial, alpnProtocols: readonly string[]) {
    this.#alpnProtocols = alpnProtocols;
    this.#current = new InnerListener(material, alpnProtocols);
  }

  /**
   * Serves `material` to connections from now on; connections already
   * handed over keep theirs.
   *
   * @throws {Error} When Deno refuses the certificate or key; the current one stays.
   */
  useCertificate(material: TlsMaterial): void {
    const next = new InnerListener(material, this.#alpnProtocols);
    this.#current.retire();
    this.#current = next;
  }

  /**
   * The server side of TLS for `conn`, an accepted TCP connection, or null
   * when the hop cannot be made (the connection is then closed). The TLS
   * connection's own addresses are the hop's; the client's is `conn`'s.
   */
  async terminate(conn: Deno.Conn): Promise<Deno.TlsConn | null> {
    try {
      const { plain, tls } = await this.#current.handoff();
      relay(conn, plain, HOP_IDLE_MS);
      return tls;
    } catch {
      closeQuietly(conn);
      return null;
    }
  }

  /** Closes the inner listener once the connections sent to it have arrived. */
  close(): void {
    this.#current.retire();
  }
}

/** One inner TLS listener on a loopback port, holding one certificate. */
class InnerListener {
  readonly #listener: Deno.TlsListener;
  readonly #port: number;
  /** Connections made to it, by local port, until it accepts them. */
  readonly #waiting = new Map<number, (conn: Deno.TlsConn) => void>();
  /** Connections it accepted before their connect resolved, by remote port. */
  readonly #arrived = new Map<number, Deno.TlsConn>();
  #outstanding = 0;
  #retiring = false;

  constructor(material: TlsMaterial, alpnProtocols: readonly string[]) {
    this.#listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: material.cert,
      key: material.key,
      alpnProtocols: [...alpnProtocols],
    });
    this.#port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accept();
  }

  async handoff(): Promise<{ plain: Deno.TcpConn; tls: Deno.TlsConn }> {
    this.#outstanding++;
    try {
      const plain = await Deno.connect({
        hostname: "127.0.0.1",
        port: this.#port,
      });
      plain.setNoDelay(true);
      const port = plain.localAddr.port;
      const early = this.#arrived.get(port);
      this.#arrived.delete(port);
      const tls = early ??
        await new Promise<Deno.TlsConn>((resolve) =>
          this.#waiting.set(port, resolve)
        );
      return { plain, tls };
    } finally {
      this.#outstanding--;
      this.#settle();
    }
  }

  retire(): void {
    this.#retiring = true;
    this.#settle();
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return;
        continue;
      }
      const port = conn.remoteAddr.port;
      // legate's own hops come from 127.0.0.1; a port alone could be another
      // local process's, connecting from another loopback address
      if (conn.remoteAddr.hostname !== "127.0.0.1") {
        closeQuietly(conn);
        continue;
      }
      const waiting = this.#waiting.get(port);
      if (waiting) {
        this.#waiting.delete(port);
        waiting(conn);
      } else if (this.#outstanding > 0) {
        this.#arrived.set(port, conn);
      } else {
        closeQuietly(conn); // not a connection legate made
      }
    }
  }

  #settle(): void {
    if (this.#outstanding > 0) return;
    for (const stranger of this.#arrived.values()) closeQuietly(stranger);
    this.#arrived.clear();
    if (this.#retiring) closeListener(this.#listener);
  }
}

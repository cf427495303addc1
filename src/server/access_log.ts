/**
 * The access log: one line per HTTP request and per TCP connection, as
 * readable text or as JSON, to standard output (legate's own log goes to
 * standard error).
 *
 * Writing never holds up the proxy: lines are buffered and written in the
 * background, at most every 100 ms or once 64 KiB have gathered; should the
 * reader of standard output fall behind by more than 4 MiB, lines are
 * dropped and counted rather than waited for.
 * @module
 */
import type { RequestOutcome } from "./http_proxy.ts";
import type { ConnectionOutcome } from "./tcp_proxy.ts";

/** How lines are written. */
export type AccessLogFormat = "text" | "json";

/** Options of {@linkcode AccessLog}. */
export interface AccessLogOptions {
  /** Where the bytes go. @default {Deno.stdout} */
  readonly writer?: { write(bytes: Uint8Array): Promise<number> };
  /** Buffered bytes past which lines are dropped. @default {4194304} */
  readonly maxBuffered?: number;
  /** Longest time a line waits in the buffer, in milliseconds. @default {100} */
  readonly flushMs?: number;
}

/** Bytes gathered before a write starts without waiting for the timer. */
const WRITE_AT_BYTES = 64 * 1024;
const encoder = new TextEncoder();

/**
 * Formats and writes access log lines.
 *
 * @example A request as JSON
 * ```ts
 * import assert from "node:assert/strict";
 * import { AccessLog } from "./access_log.ts";
 * const written: string[] = [];
 * const log = new AccessLog("json", {
 *   writer: { write: (b) => (written.push(new TextDecoder().decode(b)), Promise.resolve(b.length)) },
 * });
 * log.request({
 *   startedAt: Date.UTC(2026, 10, 28, 17, 30), service: "users", client: "127.0.0.1",
 *   method: "GET", target: "/users/42", status: 200, bytesIn: 0, bytesOut: 512,
 *   durationMs: 3.25, endpoint: null, upstreamMs: 2.5, attempts: 1,
 *   requestId: "r1", traceId: null, error: null,
 * });
 * await log.flush();
 * assert.deepEqual(JSON.parse(written.join("")), {
 *   time: "2026-11-28T17:30:00.000Z", service: "users", client: "127.0.0.1",
 *   method: "GET", target: "/users/42", status: 200, bytes_in: 0, bytes_out: 512,
 *   duration_ms: 3.25, upstream: null, upstream_ms: 2.5, attempts: 1,
 *   request_id: "r1", trace_id: null, error: null,
 * });
 * ```
 */
export class AccessLog {
  readonly #format: AccessLogFormat;
  readonly #writer: { write(bytes: Uint8Array): Promise<number> };
  readonly #maxBuffered: number;
  readonly #flushMs: number;
  #buffer = "";
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> | null = null;
  #dropped = 0;

  /** Writes lines in `format`. */
  constructor(format: AccessLogFormat, options: AccessLogOptions = {}) {
    this.#format = format;
    this.#writer = options.writer ?? Deno.stdout;
    this.#maxBuffered = options.maxBuffered ?? 4 * 1024 * 1024;
    this.#flushMs = options.flushMs ?? 100;
  }

  /** Lines dropped because the reader of the log fell too far behind. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Logs an HTTP request. */
  request(outcome: RequestOutcome): void {
    const upstream = outcome.endpoint?.location ?? null;
    const error = outcome.error?.kind ?? null;
    const time = new Date(outcome.startedAt).toISOString();
    const duration = round(outcome.durationMs);
    const upstreamMs = outcome.upstreamMs === null
      ? null
      : round(outcome.upstreamMs);
    this.#add(
      this.#format === "json"
        ? JSON.stringify({
          time,
          service: outcome.service,
          client: outcome.client,
          method: outcome.method,
          target: outcome.target,
          status: outcome.status,
          bytes_in: outcome.bytesIn,
          bytes_out: outcome.bytesOut,
          duration_ms: duration,
          upstream,
          upstream_ms: upstreamMs,
          attempts: outcome.attempts,
          request_id: outcome.requestId,
          trace_id: outcome.traceId,
          error,
        })
        : `${outcome.client} [${time}] "${outcome.method} ${
          quoted(outcome.target)
        }" ${outcome.status} ${outcome.bytesOut} in=${outcome.bytesIn} ${duration}ms service=${
          outcome.service ?? "-"
        } upstream=${upstream ?? "-"} upstream_ms=${
          upstreamMs ?? "-"
        } attempts=${outcome.attempts} request_id=${
          outcome.requestId ?? "-"
        } trace_id=${outcome.traceId ?? "-"} error=${error ?? "-"}`,
    );
  }

  /** Logs a TCP connection. */
  connection(outcome: ConnectionOutcome): void {
    const upstream = outcome.endpoint?.location ?? null;
    const time = new Date(outcome.startedAt).toISOString();
    const duration = round(outcome.durationMs);
    this.#add(
      this.#format === "json"
        ? JSON.stringify({
          time,
          service: outcome.service,
          client: outcome.client,
          upstream,
          bytes_in: outcome.bytesIn,
          bytes_out: outcome.bytesOut,
          duration_ms: duration,
          error: outcome.error,
        })
        : `${outcome.client} [${time}] TCP ${outcome.bytesOut} in=${outcome.bytesIn} ${duration}ms service=${outcome.service} upstream=${
          upstream ?? "-"
        } error=${outcome.error ?? "-"}`,
    );
  }

  /** Writes what is buffered; resolves once it is written. */
  async flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#writing !== null || this.#buffer !== "") {
      if (this.#writing === null) this.#write();
      await this.#writing;
    }
  }

  #add(line: string): void {
    if (this.#buffer.length > this.#maxBuffered) {
      this.#dropped++;
      return;
    }
    this.#buffer += line + "\n";
    this.#schedule();
  }

  /** Starts a write now when enough has gathered, else within `flushMs`. */
  #schedule(): void {
    if (this.#writing !== null || this.#buffer === "") return;
    if (this.#buffer.length >= WRITE_AT_BYTES) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#write();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (this.#writing === null) this.#write();
      }, this.#flushMs);
      Deno.unrefTimer(this.#timer);
    }
  }

  #write(): void {
    const bytes = encoder.encode(this.#buffer);
    this.#buffer = "";
    this.#writing = (async () => {
      try {
        for (let offset = 0; offset < bytes.length;) {
          offset += await this.#writer.write(bytes.subarray(offset));
        }
      } catch {
        // A closed standard output: the lines are lost, the proxy goes on.
      }
    })().finally(() => {
      this.#writing = null;
      this.#schedule();
    });
  }
}

/** Milliseconds with at most three decimals. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** Text inside double quotes: quotes, backslashes and control characters escaped. */
function quoted(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

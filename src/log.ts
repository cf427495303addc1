/**
 * Structured logging: one line per event, as readable text or as one JSON
 * object per line, to stderr.
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Log line formats. */
export type LogFormat = "text" | "json";

/** Extra fields of a log event. */
export type LogFields = Record<string, unknown>;

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** The levels, for validating `LEGATE_LOG`. */
export const LOG_LEVELS: readonly LogLevel[] = [
  "debug",
  "info",
  "warn",
  "error",
];

/**
 * Writes log events at or above a level.
 *
 * @example One JSON object a line, at or above the level
 * ```ts
 * import assert from "node:assert/strict";
 * import { Logger } from "./log.ts";
 * const lines: string[] = []; // stderr when `write` is not given
 * const log = new Logger({
 *   level: "info",
 *   format: "json",
 *   write: (line) => lines.push(line),
 * });
 * log.debug("dropped: below the level");
 * log.info("listening", { address: "127.0.0.1:15001" });
 * assert.equal(lines.length, 1);
 * const { time, ...event } = JSON.parse(lines[0]!);
 * assert.ok(!Number.isNaN(Date.parse(time)));
 * assert.deepEqual(event, {
 *   level: "info",
 *   msg: "listening",
 *   address: "127.0.0.1:15001",
 * });
 * ```
 *
 * @example Readable text, values with spaces quoted
 * ```ts
 * import assert from "node:assert/strict";
 * import { Logger } from "./log.ts";
 * const lines: string[] = [];
 * const log = new Logger({
 *   level: "info",
 *   format: "text",
 *   write: (line) => lines.push(line),
 * });
 * log.warn("upstream unreachable", {
 *   endpoint: "http://users-1.internal:8080",
 *   reason: "connection refused",
 * });
 * assert.match(
 *   lines[0]!,
 *   / WARN  upstream unreachable endpoint=http:\/\/users-1\.internal:8080 reason="connection refused"$/,
 * );
 * ```
 */
export class Logger {
  readonly #level: number;
  readonly #format: LogFormat;
  readonly #write: (line: string) => void;

  /** Makes a logger; `write` defaults to stderr. */
  constructor(options: {
    level: LogLevel;
    format: LogFormat;
    write?: (line: string) => void;
  }) {
    this.#level = RANK[options.level];
    this.#format = options.format;
    this.#write = options.write ?? ((line) => console.error(line));
  }

  /** Whether lines are JSON; the startup summary is laid out differently. */
  get json(): boolean {
    return this.#format === "json";
  }

  /** Whether events at `level` are written; skips building fields that would be dropped. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#level;
  }

  /** Logs at debug level. */
  debug(message: string, fields: LogFields = {}): void {
    this.#log("debug", message, fields);
  }

  /** Logs at info level. */
  info(message: string, fields: LogFields = {}): void {
    this.#log("info", message, fields);
  }

  /** Logs at warn level. */
  warn(message: string, fields: LogFields = {}): void {
    this.#log("warn", message, fields);
  }

  /** Logs at error level. */
  error(message: string, fields: LogFields = {}): void {
    this.#log("error", message, fields);
  }

  /** Writes text lines as they are in text mode (the startup summary). */
  text(lines: readonly string[]): void {
    if (RANK.info >= this.#level && !this.json) {
      for (const line of lines) this.#write(line);
    }
  }

  #log(level: LogLevel, message: string, fields: LogFields): void {
    if (RANK[level] < this.#level) return;
    const time = new Date().toISOString();
    if (this.#format === "json") {
      this.#write(JSON.stringify({ time, level, msg: message, ...fields }));
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} ${message}`;
    for (const [key, value] of Object.entries(fields)) {
      const text = typeof value === "string" ? value : JSON.stringify(value);
      line += ` ${key}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`;
    }
    this.#write(line);
  }
}

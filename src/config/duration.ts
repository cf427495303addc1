/**
 * Durations and sizes as route files write them: `250ms`, `2s`, `5m`, `1h`.
 *
 * This module only converts text; it must not know where the text came from.
 * @module
 */

const UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/** The pattern a duration string must match; shared with the schema. */
export const DURATION_PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Converts a duration such as `250ms`, `2s`, `1.5m` or `1h` to milliseconds.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDuration } from "./duration.ts";
 * assert.equal(parseDuration("2s"), 2_000);
 * assert.equal(parseDuration("1.5m"), 90_000);
 * assert.equal(parseDuration("250ms"), 250);
 * assert.throws(() => parseDuration("5 seconds"), RangeError);
 * ```
 * @throws {RangeError} When the text is not a duration.
 */
export function parseDuration(text: string): number {
  const match = DURATION_PATTERN.exec(text);
  if (!match) {
    throw new RangeError(
      `"${text}" is not a duration (use a number and a unit: 250ms, 2s, 5m, 1h)`,
    );
  }
  return Math.round(Number(match[1]) * UNITS_MS[match[2]!]!);
}

/**
 * Formats milliseconds the way route files write them, e.g. `30s`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "./duration.ts";
 * assert.equal(formatDuration(30_000), "30s");
 * assert.equal(formatDuration(3_600_000), "1h");
 * assert.equal(formatDuration(1_500), "1500ms");
 * ```
 */
export function formatDuration(ms: number): string {
  for (const unit of ["h", "m", "s"]) {
    const size = UNITS_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

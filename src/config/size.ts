/**
 * Sizes in route files: a whole number of bytes with a unit, such as
 * `64KiB` or `16MiB`.
 * @module
 */

/** What a size looks like: digits and a unit (B, KiB, MiB, GiB). */
export const SIZE_PATTERN: RegExp = /^(\d+)(B|KiB|MiB|GiB)$/;

const UNITS: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
};

/**
 * Bytes in a size that matches {@linkcode SIZE_PATTERN}.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSize } from "./size.ts";
 * assert.equal(parseSize("16MiB"), 16 * 1024 * 1024);
 * assert.equal(parseSize("512B"), 512);
 * ```
 * @throws {SyntaxError} When `text` is not a size.
 */
export function parseSize(text: string): number {
  const match = SIZE_PATTERN.exec(text);
  if (!match) throw new SyntaxError(`Cannot parse size: "${text}"`);
  return Number(match[1]) * UNITS[match[2]!]!;
}

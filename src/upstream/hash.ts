/**
 * The one hash function of endpoint selection: ring_hash and maglev place
 * endpoints with it, and the proxy hashes a request's key (client IP,
 * header, cookie, path) with it, so both sides agree on where a key lands.
 *
 * MurmurHash3 (x86, 32-bit) over the UTF-8 bytes: fast on short strings,
 * good avalanche (one changed input bit flips about half the output bits),
 * and stable across releases, because a changed hash would move every key.
 * @module
 */

const encoder = new TextEncoder();
/** Reused for ASCII text (addresses, ring point names), the common case. */
const asciiBytes = new Uint8Array(256);

/**
 * A 32-bit unsigned MurmurHash3 (x86_32) of the UTF-8 bytes of `text`.
 *
 * @param text What to hash, e.g. an endpoint key or a client IP.
 * @param seed Selects an independent hash function (maglev draws two from
 * one key). @default {0}
 * @returns An integer in [0, 2³²).
 *
 * @example The reference MurmurHash3 x86_32 values
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashKey } from "./hash.ts";
 * assert.equal(hashKey(""), 0);
 * assert.equal(hashKey("", 1), 0x514e28b7);
 * assert.equal(hashKey("test"), 0xba6bd213);
 * assert.equal(hashKey("abc", 0x9747b28c), 0xc84a62dd);
 * assert.equal(hashKey("Hello, world!", 0x9747b28c), 0x24884cba);
 * ```
 *
 * @example Text is hashed as UTF-8 bytes, so normalize keys first if needed
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashKey } from "./hash.ts";
 * // "é" (U+00E9) is the bytes C3 A9.
 * assert.equal(hashKey("\u00e9"), 0x10110787);
 * // "e" + U+0301 (combining acute) looks the same but is other bytes.
 * assert.notEqual(hashKey("e\u0301"), hashKey("\u00e9"));
 * ```
 */
export function hashKey(text: string, seed = 0): number {
  if (copyAscii(text)) return murmur3(asciiBytes, text.length, seed);
  const bytes = encoder.encode(text);
  return murmur3(bytes, bytes.length, seed);
}

/**
 * Copies short ASCII text (addresses, ring point names: the common case)
 * into `asciiBytes`, whose bytes are then its UTF-8, and says whether it
 * did; TextEncoder costs more than the hash itself on short strings.
 */
function copyAscii(text: string): boolean {
  if (text.length > asciiBytes.length) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return false;
    asciiBytes[i] = code;
  }
  return true;
}

function murmur3(bytes: Uint8Array, length: number, seed: number): number {
  const blockEnd = length & ~3;
  let h = seed | 0;
  for (let i = 0; i < blockEnd; i += 4) {
    const block = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) |
      (bytes[i + 3]! << 24);
    h ^= scramble(block);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail > 0) {
    let block = bytes[blockEnd]!;
    if (tail > 1) block |= bytes[blockEnd + 1]! << 8;
    if (tail > 2) block |= bytes[blockEnd + 2]! << 16;
    h ^= scramble(block);
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function scramble(block: number): number {
  let k = Math.imul(block, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, 0x1b873593);
}

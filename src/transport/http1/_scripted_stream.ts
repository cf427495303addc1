/**
 * Test support for the HTTP/1.1 byte tests: an in-memory {@linkcode ByteStream}
 * that hands out scripted bytes in chosen segments and records what is
 * written, and helpers to write exact bytes as strings.
 *
 * Used by the `*_test.ts` files beside it only; no module imports it.
 * @module
 */
import type { ByteStream } from "./connection.ts";

/** What a read past the scripted bytes does. */
export type AfterEnd =
  /** Resolves null, as a socket at EOF does. */
  | "eof"
  /** Rejects: the code under test must not need a byte it was not sent. */
  | "fail";

/** Options of {@linkcode ScriptedStream}. */
export interface ScriptedStreamOptions {
  /**
   * The size of the next segment, given how many bytes remain; a read never
   * returns more than one segment (nor more than its buffer holds).
   * @default {all remaining bytes at once}
   */
  readonly segment?: (remaining: number) => number;
  /**
   * What a read past the scripted bytes does.
   * @default {"eof"}
   */
  readonly afterEnd?: AfterEnd;
  /**
   * How many reads are allowed in all; one more throws and sets
   * `overBudget`, so a loop that never ends fails the test instead of hanging.
   * @default {Infinity}
   */
  readonly readBudget?: number;
  /**
   * The most bytes one write accepts, to exercise partial writes.
   * @default {Infinity}
   */
  readonly maxWrite?: number;
}

/** A fake socket: scripted bytes in, recorded bytes out. */
export class ScriptedStream implements ByteStream {
  readonly #data: Uint8Array;
  readonly #segment: (remaining: number) => number;
  readonly #afterEnd: AfterEnd;
  readonly #readBudget: number;
  readonly #maxWrite: number;
  #position = 0;
  /** What is left of a segment that a small read buffer cut short. */
  #segmentLeft = 0;
  #written: number[] = [];
  /** How many reads were made. */
  reads = 0;
  /** How many writes were made. */
  writes = 0;
  /** How many times `close()` was called. */
  closes = 0;
  /** Whether a read went past the read budget. */
  overBudget = false;

  /** Serves `data` (a string is taken as one byte per character). */
  constructor(data: Uint8Array | string, options: ScriptedStreamOptions = {}) {
    this.#data = typeof data === "string" ? bytes(data) : data;
    this.#segment = options.segment ?? ((remaining) => remaining);
    this.#afterEnd = options.afterEnd ?? "eof";
    this.#readBudget = options.readBudget ?? Infinity;
    this.#maxWrite = options.maxWrite ?? Infinity;
  }

  /** Scripted bytes not yet handed to a reader. */
  get undelivered(): number {
    return this.#data.length - this.#position;
  }

  /** Every byte written, in order, as one string of one character per byte. */
  get written(): string {
    return String.fromCharCode(...this.#written);
  }

  read(buffer: Uint8Array): Promise<number | null> {
    if (++this.reads > this.#readBudget) {
      this.overBudget = true;
      return Promise.reject(new Error("read budget exhausted"));
    }
    const remaining = this.#data.length - this.#position;
    if (remaining === 0) {
      return this.#afterEnd === "eof"
        ? Promise.resolve(null)
        : Promise.reject(new Error("read past the scripted bytes"));
    }
    if (this.#segmentLeft === 0) {
      this.#segmentLeft = Math.max(
        1,
        Math.min(remaining, this.#segment(remaining)),
      );
    }
    const n = Math.min(this.#segmentLeft, buffer.length);
    buffer.set(this.#data.subarray(this.#position, this.#position + n));
    this.#position += n;
    this.#segmentLeft -= n;
    return Promise.resolve(n);
  }

  write(data: Uint8Array): Promise<number> {
    this.writes++;
    // Copied now, as a kernel does: the caller may reuse its buffer after.
    const n = Math.min(data.length, this.#maxWrite);
    for (let i = 0; i < n; i++) this.#written.push(data[i]!);
    return Promise.resolve(n);
  }

  close(): void {
    this.closes++;
  }
}

/** One byte per character: the exact bytes a string of code points 0–255 names. */
export function bytes(text: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new RangeError(`Not a byte: U+${code.toString(16)}`);
    out[i] = code;
  }
  return out;
}

/** The bytes as a string of one character per byte. */
export function text(data: Uint8Array): string {
  let out = "";
  for (const byte of data) out += String.fromCharCode(byte);
  return out;
}

/**
 * mulberry32: a small seeded PRNG, so a fuzz failure replays from its seed.
 * Returns floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

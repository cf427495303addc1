/**
 * The least HTTP/1.1 the bench's own Deno processes need on raw sockets: a
 * buffered reader for message heads, and body framing by Content-Length or
 * chunked encoding. Used by the Deno floor (bench/floor.ts) and by the upload
 * upstream (bench/upstream.ts), so that neither pays for Web Streams on the
 * side it reads.
 * @module
 */

const CR = 13;
const LF = 10;
const BUFFER = 64 * 1024;
const latin1 = new TextDecoder("latin1");

/** A message head: its first line and its header fields, names in lower case. */
export interface Head {
  /** Request line or status line. */
  readonly first: string;
  /** Header fields in order, names lower-cased. */
  readonly fields: [string, string][];
}

/** Where CR LF CR LF starts in `bytes`, or -1. */
function indexOfBlankLine(bytes: Uint8Array): number {
  for (
    let i = bytes.indexOf(CR);
    i >= 0 && i + 3 < bytes.length;
    i = bytes.indexOf(CR, i + 1)
  ) {
    if (bytes[i + 1] === LF && bytes[i + 2] === CR && bytes[i + 3] === LF) {
      return i;
    }
  }
  return -1;
}

/** How a message's body is delimited. */
export type Framing =
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  | { readonly kind: "close" };

/** Reads lines and body bytes from a connection through one 64 KiB buffer. */
export class Reader {
  readonly #conn: Deno.Conn;
  readonly #buf: Uint8Array<ArrayBuffer> = new Uint8Array(BUFFER);
  #start = 0;
  #end = 0;

  /** Reads from `conn`. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Reads more into the buffer; false at EOF. Throws when a line fills it. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    else if (this.#end === this.#buf.length) {
      if (this.#start === 0) throw new Error("line longer than 64 KiB");
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /** One line without its CRLF; null at EOF before any byte of it. */
  async line(): Promise<string | null> {
    for (let seen = 0;;) {
      const at = this.#buf.subarray(this.#start + seen, this.#end).indexOf(LF);
      if (at >= 0) {
        const lf = this.#start + seen + at;
        const end = lf > this.#start && this.#buf[lf - 1] === CR ? lf - 1 : lf;
        const text = latin1.decode(this.#buf.subarray(this.#start, end));
        this.#start = lf + 1;
        return text;
      }
      seen = this.#end - this.#start;
      if (!await this.#fill()) {
        if (this.#start === this.#end) return null;
        throw new Error("connection closed inside a line");
      }
    }
  }

  /** A message head; null when the connection ends before one starts. */
  async head(): Promise<Head | null> {
    // the whole head is decoded at once: one decode per message, not per line
    for (let seen = 0;;) {
      const from = Math.max(this.#start, this.#start + seen - 3);
      const at = indexOfBlankLine(this.#buf.subarray(from, this.#end));
      if (at >= 0) {
        const end = from + at;
        const lines = latin1.decode(this.#buf.subarray(this.#start, end))
          .split("\r\n");
        this.#start = end + 4;
        const fields: [string, string][] = [];
        for (let i = 1; i < lines.length; i++) {
          const line = lines[i]!;
          const colon = line.indexOf(":");
          if (colon <= 0) throw new Error(`malformed header line: ${line}`);
          fields.push([
            line.slice(0, colon).trim().toLowerCase(),
            line.slice(colon + 1).trim(),
          ]);
        }
        return { first: lines[0]!, fields };
      }
      seen = this.#end - this.#start;
      if (!await this.#fill()) {
        if (this.#start === this.#end) return null;
        throw new Error("connection closed inside a head");
      }
    }
  }

  /** The body bytes already read, if they are at least `length`: a copy of those `length` bytes. */
  buffered(length: number): Uint8Array<ArrayBuffer> | undefined {
    if (this.#end - this.#start < length) return undefined;
    const out = this.#buf.slice(this.#start, this.#start + length);
    this.#start += length;
    return out;
  }

  /** Up to `max` body bytes in a new array; null at EOF. */
  async some(max: number): Promise<Uint8Array | null> {
    if (this.#start < this.#end) {
      const n = Math.min(max, this.#end - this.#start);
      const out = this.#buf.slice(this.#start, this.#start + n);
      this.#start += n;
      return out;
    }
    const out = new Uint8Array(Math.min(max, BUFFER));
    const n = await this.#conn.read(out);
    return n === null ? null : out.subarray(0, n);
  }
}

/**
 * The framing of a message with these header fields: chunked, a length, or
 * (`close`) until the connection ends. `bodyless` messages (requests without
 * framing fields, HEAD responses, 1xx/204/304) have length 0.
 */
export function framing(
  fields: readonly [string, string][],
  bodyless: boolean,
): Framing {
  let length: number | undefined;
  for (const [name, value] of fields) {
    if (name === "transfer-encoding" && /chunked/i.test(value)) {
      return { kind: "chunked" };
    }
    if (name === "content-length") length = Number(value);
  }
  if (length !== undefined) {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new Error("malformed Content-Length");
    }
    return { kind: "length", length };
  }
  return bodyless ? { kind: "length", length: 0 } : { kind: "close" };
}

/** The body's bytes as they arrive, each chunk a new array; throws if it is cut short. */
export async function* body(
  r: Reader,
  f: Framing,
): AsyncGenerator<Uint8Array> {
  if (f.kind === "close") {
    for (let c = await r.some(BUFFER); c !== null; c = await r.some(BUFFER)) {
      yield c;
    }
    return;
  }
  if (f.kind === "length") {
    for (let left = f.length; left > 0;) {
      const c = await r.some(left);
      if (c === null) throw new Error("body cut short");
      left -= c.length;
      yield c;
    }
    return;
  }
  for (;;) {
    const sizeLine = await r.line();
    if (sizeLine === null) throw new Error("chunked body cut short");
    const size = parseInt(sizeLine, 16);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new Error(`malformed chunk size: ${sizeLine}`);
    }
    if (size === 0) {
      // trailer fields, then the empty line
      for (let t = await r.line(); t !== ""; t = await r.line()) {
        if (t === null) throw new Error("chunked body cut short");
      }
      return;
    }
    for (let left = size; left > 0;) {
      const c = await r.some(left);
      if (c === null) throw new Error("chunked body cut short");
      left -= c.length;
      yield c;
    }
    if (await r.line() !== "") throw new Error("chunk without its CRLF");
  }
}

/**
 * Files that header values read (`${file:...}`), kept current without a
 * reload: every 250 ms each file is looked at with `stat` (following
 * symlinks, so the `..data` swap of a Kubernetes projected volume is seen),
 * and read again when its identity, size or times change. A rotated token
 * applies to the requests after that look.
 *
 * A file that cannot be read, or now holds what a header cannot carry (a
 * line break, a control character), keeps its last value; a warning names
 * the file, never its content.
 * @module
 */
import {
  processReferences,
  type ReferenceSource,
} from "../config/interpolate.ts";
import type { TemplatePart } from "../config/interpolate.ts";
import type { Logger } from "../log.ts";
import type { HeaderValue } from "../server/header_rules.ts";

/** RFC 9110 field-value characters. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** One watched file. */
interface WatchedFile {
  signature: string;
  text: string;
}

/**
 * The files header values read, and the values made from them.
 *
 * @example A value follows its file
 * ```ts
 * import assert from "node:assert/strict";
 * import { Logger } from "../log.ts";
 * import { SecretFiles } from "./secret_files.ts";
 * const file = await Deno.makeTempFile();
 * await Deno.writeTextFile(file, "one\n");
 * const files = new SecretFiles(new Logger({ level: "error", format: "json" }), 10);
 * const value = files.value(["Bearer ", { file }]);
 * assert.equal(value.value, "Bearer one");
 * await Deno.writeTextFile(file, "two-two\n");
 * await files.refresh();
 * assert.equal(value.value, "Bearer two-two");
 * files.stop();
 * await Deno.remove(file);
 * ```
 */
export class SecretFiles {
  readonly #log: Logger;
  readonly #references: ReferenceSource;
  readonly #files = new Map<string, WatchedFile>();
  #generation = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #refreshing: Promise<void> | null = null;
  readonly #intervalMs: number;

  /** Looks at the files every `intervalMs` milliseconds once a value needs one. */
  constructor(
    log: Logger,
    intervalMs = 250,
    references: ReferenceSource = processReferences,
  ) {
    this.#log = log;
    this.#intervalMs = intervalMs;
    this.#references = references;
  }

  /** Bumped whenever a file's text changes. */
  get generation(): number {
    return this.#generation;
  }

  /** A value made of `parts`, current with its files. */
  value(parts: readonly TemplatePart[]): HeaderValue {
    if (parts.every((part) => typeof part === "string")) {
      return { value: parts.join("") };
    }
    for (const part of parts) {
      if (typeof part !== "string") this.#watch(part.file);
    }
    return new FileValue(parts, this);
  }

  /** The current text of a watched file. */
  text(path: string): string {
    return this.#files.get(path)?.text ?? "";
  }

  /** Stops watching files that no value of `paths` reads (after a reload). */
  retain(paths: ReadonlySet<string>): void {
    for (const path of this.#files.keys()) {
      if (!paths.has(path)) this.#files.delete(path);
    }
    if (this.#files.size === 0) this.stop();
  }

  /** Looks at every file now; resolves when done. */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#look().finally(() => this.#refreshing = null);
    return this.#refreshing;
  }

  /** Stops looking at files. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #watch(path: string): void {
    if (!this.#files.has(path)) {
      // Validation has just read it: it is readable and fits in a header.
      let text = "";
      let signature = "missing";
      try {
        signature = fileSignature(Deno.statSync(path));
        text = this.#read(path);
      } catch {
        // Gone since validation read it: the next look reads it when it is back.
      }
      this.#files.set(path, { signature, text });
      this.#generation++;
    }
    if (this.#timer === undefined) {
      const timer = setInterval(() => void this.refresh(), this.#intervalMs);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  #read(path: string): string {
    return this.#references.readFile(path).replace(/\r?\n$/, "");
  }

  async #look(): Promise<void> {
    await Promise.all([...this.#files].map(async ([path, file]) => {
      const signature = await Deno.stat(path).then(
        fileSignature,
        () => "missing",
      );
      if (signature === file.signature) return;
      file.signature = signature;
      if (signature === "missing") return;
      let text: string;
      try {
        text = this.#read(path);
      } catch (error) {
        this.#log.warn(
          "header value file cannot be read: keeping its last value",
          {
            file: path,
            reason: error instanceof Deno.errors.NotFound
              ? "no such file"
              : String((error as Error).message),
          },
        );
        return;
      }
      if (!FIELD_VALUE.test(text)) {
        this.#log.warn(
          "header value file holds a line break or control character: keeping its last value",
          { file: path },
        );
        return;
      }
      if (text !== file.text) {
        file.text = text;
        this.#generation++;
        this.#log.info("header value file changed", { file: path });
      }
    }));
  }
}

/** What a file's identity, size and times are now: a change means it was written or replaced. */
function fileSignature(info: Deno.FileInfo): string {
  return `${info.dev}:${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
}

/** A header value with file parts: recomposed when a file changed. */
class FileValue implements HeaderValue {
  readonly #parts: readonly TemplatePart[];
  readonly #files: SecretFiles;
  #generation = -1;
  #value = "";

  constructor(parts: readonly TemplatePart[], files: SecretFiles) {
    this.#parts = parts;
    this.#files = files;
  }

  get value(): string {
    if (this.#generation !== this.#files.generation) {
      this.#generation = this.#files.generation;
      this.#value = this.#parts.map((part) =>
        typeof part === "string" ? part : this.#files.text(part.file)
      ).join("");
    }
    return this.#value;
  }
}

/**
 * One timer per stream that fires after a quiet period. `touch()` on every
 * chunk only stores a timestamp; the timer re-arms itself when it fires early,
 * so a busy stream costs no timer churn.
 * @module
 */

/** Calls `onIdle` once no `touch()` happened for `idleMs`. */
export class IdleTimer {
  #last = Date.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #idleMs: number;
  readonly #onIdle: () => void;

  /** Starts the timer. */
  constructor(idleMs: number, onIdle: () => void) {
    this.#idleMs = idleMs;
    this.#onIdle = onIdle;
    this.#arm(idleMs);
  }

  /** Records activity. */
  touch(): void {
    this.#last = Date.now();
  }

  /** Stops the timer for good. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(delay: number): void {
    this.#timer = setTimeout(() => {
      const quiet = Date.now() - this.#last;
      if (quiet >= this.#idleMs) {
        this.#timer = undefined;
        this.#onIdle();
      } else {
        this.#arm(this.#idleMs - quiet);
      }
    }, delay);
  }
}

/**
 * One timer per stream that fires after a quiet period. `touch()` on every
 * chunk only stores a timestamp; the timer re-arms itself when it fires early,
 * so a busy stream costs no timer churn.
 * @module
 */
import { type Cancel, schedule } from "./timer_wheel.ts";

/** Calls `onIdle` once no `touch()` happened for `idleMs`. */
export class IdleTimer {
  #last = Date.now();
  #cancel: Cancel | undefined;
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
    this.#cancel?.();
    this.#cancel = undefined;
  }

  #arm(delay: number): void {
    this.#cancel = schedule(delay, () => {
      const quiet = Date.now() - this.#last;
      if (quiet >= this.#idleMs) {
        this.#cancel = undefined;
        this.#onIdle();
      } else {
        this.#arm(this.#idleMs - quiet);
      }
    });
  }
}

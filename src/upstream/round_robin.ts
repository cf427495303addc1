/**
 * Smooth weighted round robin, as nginx does it: with weights 5, 1, 1 the
 * order is a a b a c a a, spreading the heavy endpoint's turns out.
 * @module
 */
import type { Balancer, Weighted } from "./balancer.ts";

/**
 * Weighted round robin over a fixed set of endpoints.
 *
 * @example Turns in proportion to weight, spread out
 * ```ts
 * import assert from "node:assert/strict";
 * import { RoundRobin } from "./round_robin.ts";
 * const rr = new RoundRobin([
 *   { name: "a", weight: 5 },
 *   { name: "b", weight: 1 },
 *   { name: "c", weight: 1 },
 * ]);
 * const turns = Array.from({ length: 7 }, () => rr.candidates()[0]!.name);
 * assert.deepEqual(turns, ["a", "a", "b", "a", "c", "a", "a"]);
 * ```
 */
export class RoundRobin<T extends Weighted> implements Balancer<T> {
  readonly endpoints: readonly T[];
  readonly #current: number[];
  readonly #total: number;

  /** Balances over `endpoints`; there must be at least one. */
  constructor(endpoints: readonly T[]) {
    if (endpoints.length === 0) {
      throw new RangeError("Cannot balance over no endpoints");
    }
    this.endpoints = endpoints;
    this.#current = endpoints.map(() => 0);
    this.#total = endpoints.reduce((sum, e) => sum + e.weight, 0);
  }

  candidates(): T[] {
    const count = this.endpoints.length;
    if (count === 1) return [this.endpoints[0]!];
    let best = 0;
    for (let i = 0; i < count; i++) {
      this.#current[i]! += this.endpoints[i]!.weight;
      if (this.#current[i]! > this.#current[best]!) best = i;
    }
    this.#current[best]! -= this.#total;
    const order = [this.endpoints[best]!];
    for (let i = 1; i < count; i++) {
      order.push(this.endpoints[(best + i) % count]!);
    }
    return order;
  }
}

/**
 * Weighted random selection: each pick is independent, and an endpoint's
 * chance is its weight over the total weight of the endpoints `usable`
 * accepts. No state, so no rotation to disturb and nothing to synchronize
 * across many proxies.
 * @module
 */
import {
  drawWeighted,
  type Selectable,
  type Selector,
  usableWeighted,
} from "./selection.ts";

/**
 * Builds a weighted random selector over `endpoints`; `hash` is ignored.
 *
 * Each pick asks `usable` about every endpoint once, then draws among the
 * accepted ones, so the odds among them stay exactly in proportion to
 * their weights however many are rejected.
 *
 * @param endpoints The set to draw from; may be empty.
 * @param random A uniform source on [0, 1). @default {Math.random}
 *
 * @example Chances follow weights; rejected endpoints are never drawn
 * ```ts
 * import assert from "node:assert/strict";
 * import { createRandom } from "./random.ts";
 * const endpoints = [
 *   { key: "a", weight: 1, inFlight: 0 },
 *   { key: "b", weight: 3, inFlight: 0 },
 *   { key: "c", weight: 4, inFlight: 0 },
 * ];
 * // a covers [0, 1/8), b [1/8, 4/8), c [4/8, 1).
 * const draw = (r: number) =>
 *   createRandom(endpoints, () => r).pick(() => true, undefined)?.key;
 * assert.deepEqual([0.1, 0.2, 0.49, 0.5].map(draw), ["a", "b", "b", "c"]);
 * // Without c, a covers [0, 1/4) and b [1/4, 1).
 * const notC = createRandom(endpoints, () => 0.2);
 * assert.equal(notC.pick((e) => e.key !== "c", undefined)?.key, "a");
 * assert.equal(notC.pick(() => false, undefined), undefined);
 * ```
 */
export function createRandom<T extends Selectable>(
  endpoints: readonly T[],
  random: () => number = Math.random,
): Selector<T> {
  const members = [...endpoints];
  return {
    pick(usable) {
      const { candidates, total } = usableWeighted(members, usable);
      if (candidates.length <= 1) return candidates[0];
      return candidates[drawWeighted(candidates, total, random)];
    },
  };
}

/**
 * Least request by the power of two choices: draw two distinct usable
 * endpoints at random and send to the less loaded, where load is requests
 * in flight per unit of weight (Envoy's weighted least request with its
 * default `active_request_bias` of 1). Two random choices avoid the herd
 * that "always the least loaded" causes when many proxies see the same
 * counts, and still make the loaded endpoints rare picks.
 * @module
 */
import {
  drawWeighted,
  type Selectable,
  type Selector,
  usableWeighted,
} from "./selection.ts";

/**
 * Builds a power-of-two-choices least-request selector over `endpoints`;
 * `hash` is ignored.
 *
 * Each pick asks `usable` about every endpoint once; among the accepted
 * ones it draws a first endpoint with chances in proportion to weight, a
 * second the same way from the rest, and keeps the first unless the second
 * has fewer requests in flight per unit of weight. Keeping the first on a
 * tie means idle endpoints share traffic exactly by weight; under load,
 * heavier endpoints take more until their per-weight loads meet. The most
 * loaded endpoint is never picked while two or more are usable, unless it
 * ties. With one usable endpoint, that one is picked whatever its load.
 *
 * @param endpoints The set to choose from; `inFlight` is read at each pick.
 * @param random A uniform source on [0, 1). @default {Math.random}
 *
 * @example The less loaded of the two drawn wins
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLeastRequest } from "./least_request.ts";
 * const endpoints = [
 *   { key: "busy", weight: 1, inFlight: 7 },
 *   { key: "idle", weight: 1, inFlight: 0 },
 * ];
 * const selector = createLeastRequest(endpoints);
 * assert.equal(selector.pick(() => true, undefined)?.key, "idle");
 * // Alone, the busy one is still picked.
 * assert.equal(selector.pick((e) => e.key === "busy", undefined)?.key, "busy");
 * assert.equal(selector.pick(() => false, undefined), undefined);
 * ```
 *
 * @example Load is counted per unit of weight
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLeastRequest } from "./least_request.ts";
 * const endpoints = [
 *   { key: "big", weight: 4, inFlight: 6 }, // 1.5 per unit of weight
 *   { key: "small", weight: 1, inFlight: 2 }, // 2 per unit of weight
 * ];
 * assert.equal(
 *   createLeastRequest(endpoints).pick(() => true, undefined)?.key,
 *   "big",
 * );
 * ```
 */
export function createLeastRequest<T extends Selectable>(
  endpoints: readonly T[],
  random: () => number = Math.random,
): Selector<T> {
  const members = [...endpoints];
  return {
    pick(usable) {
      const { candidates, total } = usableWeighted(members, usable);
      if (candidates.length <= 1) return candidates[0];
      const first = drawWeighted(candidates, total, random);
      const second = drawWeighted(
        candidates,
        total - candidates[first]!.weight,
        random,
        first,
      );
      const a = candidates[first]!;
      const b = candidates[second]!;
      return b.inFlight / b.weight < a.inFlight / a.weight ? b : a;
    },
  };
}

/**
 * Maps a route file's `balance` policy name to the policy's selector
 * factory, so the proxy builds selectors without knowing the policies.
 * @module
 */
import { createLeastRequest } from "./least_request.ts";
import { createMaglev } from "./maglev.ts";
import { createRandom } from "./random.ts";
import { createRingHash } from "./ring_hash.ts";
import { createRoundRobin } from "./round_robin.ts";
import type { Selectable, SelectionPolicy, Selector } from "./selection.ts";

/**
 * Builds the selector `policy` names for one set of endpoints.
 *
 * @param policy The selection policy, by the name route files use.
 * @param endpoints The set to choose from; may be empty.
 * @param random A uniform source on [0, 1) for the policies that draw.
 * @default {Math.random}
 *
 * @example One call for any policy
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashKey } from "./hash.ts";
 * import { createSelector } from "./selectors.ts";
 * const endpoints = [
 *   { key: "10.0.0.1:80", weight: 1, inFlight: 3 },
 *   { key: "10.0.0.2:80", weight: 1, inFlight: 0 },
 * ];
 * const leastRequest = createSelector("least_request", endpoints);
 * assert.equal(leastRequest.pick(() => true, undefined), endpoints[1]);
 * const maglev = createSelector("maglev", endpoints);
 * const hash = hashKey("/users/42");
 * assert.equal(maglev.pick(() => true, hash), maglev.pick(() => true, hash));
 * assert.equal(createSelector("random", []).pick(() => true, 7), undefined);
 * ```
 */
export function createSelector<T extends Selectable>(
  policy: SelectionPolicy,
  endpoints: readonly T[],
  random?: () => number,
): Selector<T> {
  switch (policy) {
    case "round_robin":
      return createRoundRobin(endpoints, random);
    case "least_request":
      return createLeastRequest(endpoints, random);
    case "random":
      return createRandom(endpoints, random);
    case "ring_hash":
      return createRingHash(endpoints, random);
    case "maglev":
      return createMaglev(endpoints, random);
  }
}

/**
 * Smooth weighted round robin, as nginx does it: with weights 5, 1, 1 the
 * order is a a b a c a a, spreading the heavy endpoint's turns out instead
 * of sending it five in a row.
 *
 * Each pick, every usable endpoint earns its weight in credit, the richest
 * is chosen and pays back the usable endpoints' total weight. An endpoint
 * `usable` rejects (as nginx skips a down or failed peer) neither earns nor
 * pays while rejected: the others share its turns in their own smooth
 * ratio, and when it comes back it resumes with the credit it had, so it
 * gets no burst of make-up turns.
 * @module
 */
import type { Selectable, Selector } from "./selection.ts";

/**
 * Builds a smooth weighted round robin over `endpoints`; `hash` is ignored.
 *
 * A selector built anew (a reload, a discovery change) starts at a random
 * phase of its rotation, so that the many legates beside many application
 * instances do not all send their next request to the same endpoint (as
 * Envoy desynchronizes its weighted round robin).
 *
 * @param endpoints The set to rotate over, in configured order; may be empty.
 * @param random Chooses the starting phase: [0, 1). @default {Math.random}
 *
 * @example Turns in proportion to weight, spread out
 * ```ts
 * import assert from "node:assert/strict";
 * import { createRoundRobin } from "./round_robin.ts";
 * const endpoints = [
 *   { key: "a", weight: 5, inFlight: 0 },
 *   { key: "b", weight: 1, inFlight: 0 },
 *   { key: "c", weight: 1, inFlight: 0 },
 * ];
 * const selector = createRoundRobin(endpoints, () => 0); // phase 0
 * const turns = Array.from(
 *   { length: 7 },
 *   () => selector.pick(() => true, undefined)?.key,
 * );
 * assert.deepEqual(turns, ["a", "a", "b", "a", "c", "a", "a"]);
 * ```
 *
 * @example A rejected endpoint's turns go to the others
 * ```ts
 * import assert from "node:assert/strict";
 * import { createRoundRobin } from "./round_robin.ts";
 * const endpoints = [
 *   { key: "a", weight: 5, inFlight: 0 },
 *   { key: "b", weight: 1, inFlight: 0 },
 *   { key: "c", weight: 1, inFlight: 0 },
 * ];
 * const selector = createRoundRobin(endpoints, () => 0);
 * const notA = (endpoint: { key: string }) => endpoint.key !== "a";
 * const turns = Array.from(
 *   { length: 4 },
 *   () => selector.pick(notA, undefined)?.key,
 * );
 * assert.deepEqual(turns, ["b", "c", "b", "c"]);
 * assert.equal(selector.pick(() => false, undefined), undefined);
 * ```
 */
export function createRoundRobin<T extends Selectable>(
  endpoints: readonly T[],
  random: () => number = Math.random,
): Selector<T> {
  const members = [...endpoints];
  const weights = members.map((endpoint) => endpoint.weight);
  const credit = new Float64Array(members.length);

  function pick(usable: (endpoint: T) => boolean): T | undefined {
    let best = -1;
    let total = 0;
    for (let i = 0; i < members.length; i++) {
      if (!usable(members[i]!)) continue;
      credit[i]! += weights[i]!;
      total += weights[i]!;
      if (best < 0 || credit[i]! > credit[best]!) best = i;
    }
    if (best < 0) return undefined;
    credit[best]! -= total;
    return members[best];
  }

  // One step per endpoint is enough to spread the first picks over every
  // endpoint; stepping through a whole period would cost the sum of weights.
  const phase = Math.floor(random() * members.length);
  for (let step = 0; step < phase; step++) pick(() => true);

  return { pick: (usable) => pick(usable) };
}

/**
 * Endpoint selection behind one small interface: one file per policy, each
 * building a {@linkcode Selector} for one set of endpoints, and one shared
 * conformance test (selection_test.ts) that every policy passes.
 *
 * A selector only orders; whether an endpoint may take the request
 * (healthy, not ejected, not full, not tried already) is the caller's
 * `usable` predicate, so selection walks candidates until one is accepted.
 * @module
 */

/** What a policy may know of an endpoint. */
export interface Selectable {
  /** Identity within the set, e.g. `10.0.0.1:8080`: hash policies place endpoints by it. */
  readonly key: string;
  /** Relative share of traffic, at least 1. */
  readonly weight: number;
  /** Requests in flight now (least_request reads it). */
  readonly inFlight: number;
}

/** Chooses endpoints from one fixed set; built anew when the set changes. */
export interface Selector<T extends Selectable> {
  /**
   * The endpoint for one request or connection: the policy's choice among
   * those `usable` accepts, or undefined when it accepts none. `hash` is the
   * request's hash key (ring_hash, maglev; a 32-bit unsigned integer, as
   * `hashKey` gives); other policies ignore it.
   *
   * `usable` is asked at most once per endpoint in one pick, possibly about
   * every endpoint, so it should be a cheap check without side effects.
   */
  pick(
    usable: (endpoint: T) => boolean,
    hash: number | undefined,
  ): T | undefined;
}

/** The selection policies, by the name route files use. */
export type SelectionPolicy =
  | "round_robin"
  | "least_request"
  | "random"
  | "ring_hash"
  | "maglev";

/** The endpoints `usable` accepts, in their order, and their total weight. */
export function usableWeighted<T extends Selectable>(
  members: readonly T[],
  usable: (endpoint: T) => boolean,
): { candidates: T[]; total: number } {
  const candidates: T[] = [];
  let total = 0;
  for (const endpoint of members) {
    if (!usable(endpoint)) continue;
    candidates.push(endpoint);
    total += endpoint.weight;
  }
  return { candidates, total };
}

/**
 * Draws the index of one candidate by weight, skipping the one at `skip`
 * (whose weight `total` already leaves out); -1 when none is left.
 */
export function drawWeighted(
  candidates: readonly Selectable[],
  total: number,
  random: () => number,
  skip = -1,
): number {
  let remaining = random() * total;
  let last = -1;
  for (let i = 0; i < candidates.length; i++) {
    if (i === skip) continue;
    remaining -= candidates[i]!.weight;
    if (remaining < 0) return i;
    last = i;
  }
  // Rounding can leave a sliver past the last weight: it is the last's.
  return last;
}

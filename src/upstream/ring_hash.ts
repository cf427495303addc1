/**
 * Consistent hashing on a ring (Ketama-like, as Envoy's ring_hash): each
 * endpoint owns points on a 32-bit ring, at `hashKey(`${key}_${i}`)` for
 * i = 0, 1, ...; a request's hash goes to the owner of the first point at
 * or after it. Removing an endpoint only hands its own arcs to the next
 * points' owners, so other keys stay where they were.
 *
 * Points per endpoint are its weight times a per-weight count that is a
 * power of two, the smallest that gives the ring at least 2048 points. A
 * power of two, rather than Envoy's exact scaling to the ring size, keeps
 * every other endpoint's points unchanged when one endpoint comes or goes,
 * so only the changed endpoint's keys move. The exception: when the total
 * weight crosses a power of two the per-weight count halves or doubles,
 * and about half of all keys move once.
 * @module
 */
import { hashKey } from "./hash.ts";
import type { Selectable, Selector } from "./selection.ts";

/**
 * The fewest points on the ring. What an endpoint with p points owns is
 * off its share by about 1/√p of it (one standard deviation): with 2048
 * for weights 1, 2, 5 the lightest gets 256 points, 6%; Envoy's default
 * of 1024 would leave it 9%.
 */
const MIN_RING_SIZE = 2048;
/** Endpoints a ring can tell apart: 2²⁰, far beyond any real set. */
const OWNER_RANGE = 2 ** 20;

/**
 * Builds a consistent hash ring over `endpoints`. `pick(usable, hash)`
 * starts at the first point at or after `hash` and walks forward
 * (wrapping) to the first endpoint `usable` accepts, so a key whose
 * endpoint is unusable goes to the same other endpoint every time. With
 * no `hash`, the start is a random point: traffic spreads by weight.
 *
 * The ring depends on the endpoints' keys and weights, not on their order.
 * It has from 2048 to 4096 points, plus at most one per endpoint; building
 * is O(n log n) in the points, under a millisecond.
 *
 * @param endpoints The set to place on the ring; keys should be unique.
 * @param random Where a pick without a hash starts: [0, 1).
 * @default {Math.random}
 *
 * @example A key keeps its endpoint, and its fallback, across rebuilds
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashKey } from "./hash.ts";
 * import { createRingHash } from "./ring_hash.ts";
 * const endpoints = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(
 *   (key) => ({ key, weight: 1, inFlight: 0 }),
 * );
 * const hash = hashKey("203.0.113.9"); // the client's IP
 * const first = createRingHash(endpoints).pick(() => true, hash)!;
 * const again = createRingHash([...endpoints].reverse());
 * assert.equal(again.pick(() => true, hash), first);
 * const fallback = again.pick((e) => e !== first, hash);
 * assert.notEqual(fallback, undefined);
 * assert.notEqual(fallback, first);
 * assert.equal(again.pick((e) => e !== first, hash), fallback);
 * assert.equal(again.pick(() => false, hash), undefined);
 * ```
 */
export function createRingHash<T extends Selectable>(
  endpoints: readonly T[],
  random: () => number = Math.random,
): Selector<T> {
  // Ordered by key so that the ring, including which of two points on the
  // same position wins, does not depend on the order endpoints came in.
  const members = [...endpoints].sort(byKey);
  const { positions, owners } = buildRing(members);

  return {
    pick(usable, hash) {
      if (positions.length === 0) return undefined;
      const point = hash === undefined
        ? Math.floor(random() * 2 ** 32)
        : hash >>> 0;
      let slot = firstAtOrAfter(positions, point);
      // An endpoint owns many points: ask `usable` once per endpoint, and
      // stop once every endpoint has said no.
      const rejected = new Set<number>();
      for (let step = 0; step < positions.length; step++) {
        const owner = owners[slot]!;
        if (!rejected.has(owner)) {
          if (usable(members[owner]!)) return members[owner];
          rejected.add(owner);
          if (rejected.size === members.length) return undefined;
        }
        slot = slot + 1 === positions.length ? 0 : slot + 1;
      }
      return undefined;
    },
  };
}

function byKey(a: Selectable, b: Selectable): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function buildRing(
  members: readonly Selectable[],
): { positions: Uint32Array; owners: Uint32Array } {
  const totalWeight = members.reduce((sum, e) => sum + e.weight, 0);
  let pointsPerWeight = 1;
  if (totalWeight > 0 && Number.isFinite(totalWeight)) {
    while (totalWeight * pointsPerWeight < MIN_RING_SIZE) pointsPerWeight *= 2;
    while (totalWeight * pointsPerWeight >= 2 * MIN_RING_SIZE) {
      pointsPerWeight /= 2;
    }
  }
  // Every endpoint gets a point, or a usable one could be unreachable.
  const counts = members.map((endpoint) =>
    Math.max(1, Math.ceil(endpoint.weight * pointsPerWeight) || 1)
  );
  // Position and owner in one number (position · 2²⁰ + owner, exact in a
  // double), so a numeric typed-array sort orders by position, then owner.
  const points = new Float64Array(counts.reduce((sum, n) => sum + n, 0));
  let filled = 0;
  members.forEach((endpoint, owner) => {
    for (let i = 0; i < counts[owner]!; i++) {
      points[filled++] = hashKey(`${endpoint.key}_${i}`) * OWNER_RANGE + owner;
    }
  });
  points.sort();
  const positions = new Uint32Array(points.length);
  const owners = new Uint32Array(points.length);
  points.forEach((point, i) => {
    owners[i] = point % OWNER_RANGE;
    positions[i] = (point - owners[i]!) / OWNER_RANGE;
  });
  return { positions, owners };
}

/** The index of the first position ≥ `point`, wrapping to 0 past the end. */
function firstAtOrAfter(positions: Uint32Array, point: number): number {
  let low = 0;
  let high = positions.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (positions[middle]! < point) low = middle + 1;
    else high = middle;
  }
  return low === positions.length ? 0 : low;
}

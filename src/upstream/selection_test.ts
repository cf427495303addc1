/**
 * The conformance suite every selection policy passes: one table of
 * policies, every case run for each, and the cases a policy skips listed
 * with the reason (as Hono's router suite does). A new policy gets a row
 * here and passes the same cases.
 *
 * Randomness comes from a seeded PRNG, so every run picks the same, and
 * the tolerances below are margins on fixed numbers, not on chance.
 */
import assert from "node:assert/strict";
import { hashKey } from "./hash.ts";
import type { Selectable, SelectionPolicy } from "./selection.ts";
import { createSelector } from "./selectors.ts";

/** The cases, by name; a policy's `skip` names them. */
type Case =
  | "gives undefined for an empty set"
  | "gives undefined when no endpoint is usable"
  | "finds the one usable endpoint"
  | "picks only endpoints usable accepts"
  | "asks usable about each endpoint at most once per pick"
  | "shares traffic in proportion to weight"
  | "shares traffic in proportion to weight without a hash"
  | "avoids an endpoint with more requests in flight"
  | "maps the same hash to the same endpoint"
  | "maps a hash whose endpoint is unusable to the same other endpoint"
  | "moves only about 1/N of keys when one of N endpoints goes, and restores them when it comes back"
  | "ignores the hash"
  | "repeats its picks for the same seeded random"
  | "never mutates the endpoints";

interface Traits {
  /**
   * How far an endpoint's share of 16,000 picks (weights 1, 2, 5) may be
   * from its weight's share, relative to that share.
   */
  readonly shareTolerance: number;
  /** Cases that do not apply, and why. */
  readonly skip: Partial<Record<Case, string>>;
}

const IGNORES_LOAD = "chooses without looking at requests in flight";
const IGNORES_HASH = "ignores the hash, so no key has a home endpoint";
const USES_HASH = "the hash chooses the endpoint";

const POLICIES: Record<SelectionPolicy, Traits> = {
  // Smooth weighted round robin repeats exactly every sum-of-weights picks.
  round_robin: {
    shareTolerance: 0,
    skip: {
      "avoids an endpoint with more requests in flight": IGNORES_LOAD,
      "maps the same hash to the same endpoint": IGNORES_HASH,
      "maps a hash whose endpoint is unusable to the same other endpoint":
        IGNORES_HASH,
      "moves only about 1/N of keys when one of N endpoints goes, and restores them when it comes back":
        IGNORES_HASH,
    },
  },
  // Binomial spread: at 16,000 picks the lightest share's standard
  // deviation is 2.1% of it, so 10% is a margin of about 5 deviations.
  least_request: {
    shareTolerance: 0.1,
    skip: {
      "maps the same hash to the same endpoint": IGNORES_HASH,
      "maps a hash whose endpoint is unusable to the same other endpoint":
        IGNORES_HASH,
      "moves only about 1/N of keys when one of N endpoints goes, and restores them when it comes back":
        IGNORES_HASH,
    },
  },
  random: {
    shareTolerance: 0.1,
    skip: {
      "avoids an endpoint with more requests in flight": IGNORES_LOAD,
      "maps the same hash to the same endpoint": IGNORES_HASH,
      "maps a hash whose endpoint is unusable to the same other endpoint":
        IGNORES_HASH,
      "moves only about 1/N of keys when one of N endpoints goes, and restores them when it comes back":
        IGNORES_HASH,
    },
  },
  // 2,048 points for weights 1, 2, 5: the lightest endpoint's 256 points
  // give its arcs a spread of about 1/√256 ≈ 6% of its share (8% measured
  // here), on top of the keys' binomial spread.
  ring_hash: {
    shareTolerance: 0.15,
    skip: {
      "avoids an endpoint with more requests in flight": IGNORES_LOAD,
      "ignores the hash": USES_HASH,
    },
  },
  // Table shares match weights within a slot; what is left is the keys'
  // binomial spread, as for random.
  maglev: {
    shareTolerance: 0.1,
    skip: {
      "avoids an endpoint with more requests in flight": IGNORES_LOAD,
      "ignores the hash": USES_HASH,
    },
  },
};

interface TestEndpoint extends Selectable {
  readonly key: string;
  readonly weight: number;
  readonly inFlight: number;
}

/** Endpoints with the given weights, keyed like real addresses. */
function endpointsOf(weights: readonly number[]): TestEndpoint[] {
  return weights.map((weight, i) => ({
    key: `10.0.0.${i + 1}:8080`,
    weight,
    inFlight: 0,
  }));
}

/** A small seeded PRNG (mulberry32): uniform on [0, 1), repeatable. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Hashes of client keys, as the proxy computes them. */
const KEYS = Array.from({ length: 1000 }, (_, i) => hashKey(`client-${i}`));

const all = () => true;

const CASES: Record<Case, (policy: SelectionPolicy, traits: Traits) => void> = {
  "gives undefined for an empty set"(policy) {
    const selector = createSelector(policy, [], mulberry32(1));
    assert.equal(selector.pick(all, undefined), undefined);
    assert.equal(selector.pick(all, KEYS[0]), undefined);
  },

  "gives undefined when no endpoint is usable"(policy) {
    const selector = createSelector(
      policy,
      endpointsOf([1, 2, 5]),
      mulberry32(1),
    );
    for (const hash of [undefined, ...KEYS.slice(0, 100)]) {
      assert.equal(selector.pick(() => false, hash), undefined);
    }
  },

  "finds the one usable endpoint"(policy) {
    // However light: the 1s get a single ring point or table slot.
    const endpoints = endpointsOf([100_000, 1, 2, 5, 1, 3, 1]);
    const selector = createSelector(policy, endpoints, mulberry32(1));
    for (const only of endpoints) {
      for (const hash of [undefined, ...KEYS.slice(0, 20)]) {
        assert.equal(selector.pick((e) => e === only, hash), only);
      }
    }
  },

  "picks only endpoints usable accepts"(policy) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3, 1, 1, 2, 4, 1]);
    const selector = createSelector(policy, endpoints, mulberry32(1));
    const coin = mulberry32(2);
    for (let i = 0; i < 2000; i++) {
      // A different random subset for every pick, from empty to full.
      const usable = new Set(endpoints.filter(() => coin() < 0.3));
      const picked = selector.pick((e) => usable.has(e), KEYS[i % 1000]);
      if (usable.size === 0) assert.equal(picked, undefined);
      else assert.ok(picked && usable.has(picked), `pick ${i}`);
    }
  },

  "asks usable about each endpoint at most once per pick"(policy) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3]);
    const selector = createSelector(policy, endpoints, mulberry32(1));
    const coin = mulberry32(2);
    for (let i = 0; i < 500; i++) {
      const asked = new Map<TestEndpoint, number>();
      selector.pick((e) => {
        asked.set(e, (asked.get(e) ?? 0) + 1);
        return coin() < 0.2; // mostly no: the fallbacks get walked
      }, i % 2 === 0 ? undefined : KEYS[i]);
      for (const [endpoint, times] of asked) {
        assert.equal(times, 1, `pick ${i} asked about ${endpoint.key}`);
      }
    }
  },

  "shares traffic in proportion to weight"(policy, { shareTolerance }) {
    assertShares(policy, shareTolerance, (i) => hashKey(`client-${i}`));
  },

  "shares traffic in proportion to weight without a hash"(
    policy,
    { shareTolerance },
  ) {
    assertShares(policy, shareTolerance, () => undefined);
  },

  "avoids an endpoint with more requests in flight"(policy) {
    const endpoints = endpointsOf([1, 1, 1, 1]).map((e, i) =>
      i === 2 ? { ...e, inFlight: 10 } : e
    );
    const selector = createSelector(policy, endpoints, mulberry32(1));
    const picks = Array.from(
      { length: 1000 },
      () => selector.pick(all, undefined),
    );
    // Two distinct endpoints are drawn, so the busiest always loses.
    assert.equal(picks.filter((e) => e === endpoints[2]).length, 0);
    // Even weighted five times heavier: 10/5 in flight per weight > 0.
    const heavy = endpoints.map((e, i) => i === 2 ? { ...e, weight: 5 } : e);
    const weighted = createSelector(policy, heavy, mulberry32(1));
    for (let i = 0; i < 1000; i++) {
      assert.notEqual(weighted.pick(all, undefined), heavy[2]);
    }
  },

  "maps the same hash to the same endpoint"(policy) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3]);
    const selector = createSelector(policy, endpoints, mulberry32(1));
    // Another build with another random source agrees: only the hash counts.
    const rebuilt = createSelector(policy, endpoints, mulberry32(99));
    for (const hash of KEYS) {
      const picked = selector.pick(all, hash);
      assert.ok(picked);
      assert.equal(selector.pick(all, hash), picked);
      assert.equal(rebuilt.pick(all, hash), picked);
    }
  },

  "maps a hash whose endpoint is unusable to the same other endpoint"(
    policy,
  ) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3]);
    const selector = createSelector(policy, endpoints, mulberry32(1));
    const rebuilt = createSelector(policy, endpoints, mulberry32(99));
    for (const hash of KEYS) {
      const first = selector.pick(all, hash);
      const notFirst = (e: TestEndpoint) => e !== first;
      const fallback = selector.pick(notFirst, hash);
      assert.ok(fallback && fallback !== first);
      assert.equal(selector.pick(notFirst, hash), fallback);
      assert.equal(rebuilt.pick(notFirst, hash), fallback);
    }
  },

  "moves only about 1/N of keys when one of N endpoints goes, and restores them when it comes back"(
    policy,
  ) {
    for (const count of [5, 10]) {
      const endpoints = endpointsOf(Array(count).fill(1));
      const before = homes(policy, endpoints);
      for (const removed of endpoints) {
        const rest = endpoints.filter((e) => e !== removed);
        const after = homes(policy, rest);
        let moved = 0;
        KEYS.forEach((_, i) => {
          if (before[i] === removed) assert.notEqual(after[i], removed);
          if (after[i] !== before[i]) moved++;
        });
        assert.ok(
          moved / KEYS.length <= 1.5 / count,
          `${moved} of ${KEYS.length} keys moved without ${removed.key} of ${count}`,
        );
        // Back again, at the end of the list this time: every key returns.
        assert.deepEqual(homes(policy, [...rest, removed]), before);
      }
    }
  },

  "ignores the hash"(policy) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3]);
    const withHash = createSelector(policy, endpoints, mulberry32(7));
    const without = createSelector(policy, endpoints, mulberry32(7));
    for (const hash of KEYS) {
      assert.equal(withHash.pick(all, hash), without.pick(all, undefined));
    }
  },

  "repeats its picks for the same seeded random"(policy) {
    const endpoints = endpointsOf([1, 2, 5, 1, 3]);
    const run = () => {
      const selector = createSelector(policy, endpoints, mulberry32(7));
      const coin = mulberry32(8);
      return Array.from({ length: 1000 }, () => {
        const usable = new Set(endpoints.filter(() => coin() < 0.7));
        return selector.pick((e) => usable.has(e), undefined)?.key;
      });
    };
    const first = run();
    assert.ok(new Set(first).size > 1);
    assert.deepEqual(run(), first);
  },

  "never mutates the endpoints"(policy) {
    // Frozen: any write throws, since modules run in strict mode.
    const endpoints = Object.freeze(
      endpointsOf([1, 2, 5]).map((e) => Object.freeze(e)),
    );
    const selector = createSelector(policy, endpoints, mulberry32(1));
    for (const hash of [undefined, ...KEYS.slice(0, 100)]) {
      assert.ok(selector.pick(all, hash));
      assert.ok(selector.pick((e) => e !== endpoints[2], hash));
    }
  },
};

/** Weights 1, 2, 5 over 16,000 picks: each share within tolerance. */
function assertShares(
  policy: SelectionPolicy,
  tolerance: number,
  hashOf: (i: number) => number | undefined,
): void {
  const endpoints = endpointsOf([1, 2, 5]);
  const selector = createSelector(policy, endpoints, mulberry32(3));
  const picks = 16_000;
  const counts = new Map<TestEndpoint | undefined, number>();
  for (let i = 0; i < picks; i++) {
    const picked = selector.pick(all, hashOf(i));
    counts.set(picked, (counts.get(picked) ?? 0) + 1);
  }
  for (const endpoint of endpoints) {
    const expected = endpoint.weight / 8;
    const share = (counts.get(endpoint) ?? 0) / picks;
    assert.ok(
      Math.abs(share / expected - 1) <= tolerance,
      `${endpoint.key} (weight ${endpoint.weight}) got ${share}, expected ${expected} ± ${
        tolerance * 100
      }%`,
    );
  }
}

/** Where each of KEYS goes with every endpoint usable. */
function homes(
  policy: SelectionPolicy,
  endpoints: readonly TestEndpoint[],
): (TestEndpoint | undefined)[] {
  const selector = createSelector(policy, endpoints, mulberry32(1));
  return KEYS.map((hash) => selector.pick(all, hash));
}

for (const [policy, traits] of Object.entries(POLICIES)) {
  for (const [name, run] of Object.entries(CASES)) {
    const skipped = name in traits.skip;
    Deno.test({
      name: `${policy}: ${name}`,
      ignore: skipped,
      fn: () => run(policy as SelectionPolicy, traits),
    });
  }
}

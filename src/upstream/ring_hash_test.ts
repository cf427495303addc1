import assert from "node:assert/strict";
import { hashKey } from "./hash.ts";
import { createRingHash } from "./ring_hash.ts";

const KEYS = Array.from({ length: 1000 }, (_, i) => hashKey(`client-${i}`));

function endpointsOf(count: number) {
  return Array.from({ length: count }, (_, i) => ({
    key: `10.0.0.${i + 1}:8080`,
    weight: 1,
    inFlight: 0,
  }));
}

Deno.test("ring_hash moves exactly the keys of an endpoint that goes", () => {
  // 5 → 4 and 10 → 9 endpoints keep the points per weight (512 and 256),
  // so every other endpoint keeps every point.
  for (const count of [5, 10]) {
    const endpoints = endpointsOf(count);
    const all = createRingHash(endpoints);
    const before = KEYS.map((hash) => all.pick(() => true, hash));
    for (const removed of endpoints) {
      const without = createRingHash(endpoints.filter((e) => e !== removed));
      KEYS.forEach((hash, i) => {
        const after = without.pick(() => true, hash);
        if (before[i] === removed) assert.notEqual(after, removed);
        else assert.equal(after, before[i], `key ${i} without ${removed.key}`);
      });
    }
  }
});

Deno.test("ring_hash sends a key whose endpoint is unusable where the ring without it would", () => {
  const endpoints = endpointsOf(10);
  const ring = createRingHash(endpoints);
  for (const down of endpoints) {
    const without = createRingHash(endpoints.filter((e) => e !== down));
    for (const hash of KEYS) {
      assert.equal(
        ring.pick((e) => e !== down, hash),
        without.pick(() => true, hash),
      );
    }
  }
});

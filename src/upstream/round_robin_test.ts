import assert from "node:assert/strict";
import { createRoundRobin } from "./round_robin.ts";

function endpointsOf(weights: readonly number[]) {
  return weights.map((weight, i) => ({
    key: "abcdefgh"[i]!,
    weight,
    inFlight: 0,
  }));
}

Deno.test("round_robin gives an endpoint that comes back no burst of make-up turns", () => {
  const selector = createRoundRobin(endpointsOf([5, 1, 1]), () => 0);
  for (let i = 0; i < 70; i++) {
    assert.notEqual(selector.pick((e) => e.key !== "a", undefined)?.key, "a");
  }
  const turns = Array.from(
    { length: 7 },
    () => selector.pick(() => true, undefined)?.key,
  );
  assert.deepEqual(turns, ["a", "a", "b", "a", "c", "a", "a"]);
});

Deno.test("round_robin shares a rejected endpoint's turns by the others' weights", () => {
  const selector = createRoundRobin(endpointsOf([1, 2, 3]), () => 0);
  const turns = Array.from(
    { length: 6 },
    () => selector.pick((e) => e.key !== "c", undefined)?.key,
  );
  assert.deepEqual(turns, ["b", "a", "b", "b", "a", "b"]);
});

Deno.test("round_robin starts where random puts it, so proxies built together spread their first picks", () => {
  const endpoints = endpointsOf([1, 1, 1]);
  const firsts = [0, 0.4, 0.8].map((r) =>
    createRoundRobin(endpoints, () => r).pick(() => true, undefined)?.key
  );
  assert.deepEqual(firsts, ["a", "b", "c"]);
});

Deno.test("round_robin gives each endpoint its weight in turns in every full cycle, whatever the phase", () => {
  const endpoints = endpointsOf([4, 1, 2, 1]);
  for (const r of [0, 0.3, 0.6, 0.9]) {
    const selector = createRoundRobin(endpoints, () => r);
    for (let cycle = 0; cycle < 3; cycle++) {
      const turns = Array.from(
        { length: 8 },
        () => selector.pick(() => true, undefined)?.key,
      );
      for (const endpoint of endpoints) {
        assert.equal(
          turns.filter((key) => key === endpoint.key).length,
          endpoint.weight,
          `${turns.join(" ")} at phase ${r}`,
        );
      }
    }
  }
});

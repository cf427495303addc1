import assert from "node:assert/strict";
import { TimerWheel } from "../src/transport/timer_wheel.ts";

Deno.test("cancelled timers leave no slots behind, however far ahead they were", () => {
  const wheel = new TimerWheel();
  // One TCP connection a millisecond for a second, each with an hour's idle timer.
  const cancels = Array.from(
    { length: 1_000 },
    (_, i) => wheel.schedule(3_600_000 + i, () => {}),
  );
  assert.ok(wheel.pendingSlots >= 40);
  for (const cancel of cancels) cancel();
  assert.equal(wheel.pendingSlots, 0);
});

Deno.test("timers fire once, in order, and a cancelled one never fires", async () => {
  const wheel = new TimerWheel();
  const fired: string[] = [];
  const { promise: last, resolve } = Promise.withResolvers<void>();
  // The wheel's interval does not keep a process alive; this test must.
  const keepAlive = setTimeout(() => {}, 10_000);
  wheel.schedule(10, () => fired.push("first"));
  const cancel = wheel.schedule(20, () => fired.push("cancelled"));
  wheel.schedule(80, () => {
    fired.push("last");
    resolve();
  });
  cancel();
  await last;
  clearTimeout(keepAlive);
  assert.deepEqual(fired, ["first", "last"]);
  assert.equal(wheel.pendingSlots, 0);
  // Cancelling after the timer ran is harmless.
  cancel();
});

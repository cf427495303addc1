/**
 * Free loopback ports for the tests and the benchmark, picked below Linux's
 * ephemeral range (32768-60999) so that no outgoing connection can take one
 * between the check and the bind.
 * @module
 */

/** A port on 127.0.0.1 between 20000 and 32000 that was free a moment ago. */
export function freePort(): number {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // Taken: try another.
    }
  }
  throw new Error("No free loopback port between 20000 and 32000");
}

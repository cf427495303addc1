/**
 * Endpoint selection behind one small interface, so policies can be added
 * (one file each) without touching the proxy loop.
 * @module
 */

/** Something with a relative share of traffic. */
export interface Weighted {
  /** Relative share, at least 1. */
  readonly weight: number;
}

/** Chooses the endpoint for the next request or connection. */
export interface Balancer<T extends Weighted> {
  /** All endpoints, in configured order. */
  readonly endpoints: readonly T[];
  /**
   * The endpoints to try for one request, best first: the first is the pick,
   * the rest are fallbacks when connecting to it fails.
   */
  candidates(): T[];
}

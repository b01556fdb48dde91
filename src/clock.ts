/**
 * Where the time comes from. Injected into everything that decides by time (deadlines, retries,
 * leases, throttles), so a test can move time forward instead of sleeping through it.
 */
export interface Clock {
  /** Milliseconds since the epoch, as Date.now(). */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

import type { Clock } from '../../src/clock.js';
import type { RunningServer } from '../../src/server.js';

/** Real time plus an offset a test moves forward, so deadlines and throttles pass without sleeping. */
export class TestClock implements Clock {
  #offsetMs = 0;

  constructor(private readonly base: () => number = Date.now) {}

  now(): number {
    return this.base() + this.#offsetMs;
  }

  advance(ms: number): void {
    this.#offsetMs += ms;
  }
}

/**
 * For `startStack({ retrySleep })`: the protocol clients retry a transient failure on the next turn
 * of the event loop instead of after a real backoff. The retries and their count stay the same.
 */
export const noRetryWait = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Polls `check` like `eventually` (test/support/stack.ts), and whenever the server's next job step
 * (a retry, a confirmation asked again, a report) falls due later by the clock, moves the clock to
 * it and wakes the worker: backoffs pass without being waited out, and nothing runs before its time
 * by the clock.
 */
export async function eventuallyOnClock<T>(
  server: () => Pick<RunningServer, 'jobs' | 'worker'>,
  clock: TestClock,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 15_000,
  what = 'condition',
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    const { jobs, worker } = server();
    const next = await jobs.nextDueAt();
    if (next !== undefined && next > clock.now()) {
      clock.advance(next - clock.now());
      worker.wake();
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

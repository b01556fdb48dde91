import type { Clock } from '../../src/clock.js';

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

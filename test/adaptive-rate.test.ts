import { describe, expect, it } from 'vitest';
import { AdaptiveRate, BACKOFF } from '../src/chat2desk/adaptive-rate.js';
import type { LearnedRate } from '../src/db/chat2desk-rates.js';

/** Virtual time: sleeping moves the clock, so pacing is measured without waiting. */
function virtualClock() {
  let now = 1_000_000;
  return {
    now: () => now,
    sleep: async (ms: number) => {
      now += ms;
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

function rateAt(
  clock: ReturnType<typeof virtualClock>,
  start: Partial<LearnedRate> = {},
  limits: { floor?: number; ceiling?: number } = {},
  onLearned?: (learned: LearnedRate) => void,
) {
  return new AdaptiveRate({
    start: { perMinute: 600, limitPerMinute: null, ...start },
    floorPerMinute: limits.floor ?? 6,
    ceilingPerMinute: limits.ceiling ?? 600_000,
    onLearned,
    now: clock.now,
    sleep: clock.sleep,
  });
}

/** Sends back to back for `ms` of virtual time, every request answered; returns how many went. */
async function sendFor(rate: AdaptiveRate, clock: ReturnType<typeof virtualClock>, ms: number): Promise<number> {
  const until = clock.now() + ms;
  let sent = 0;
  while (clock.now() < until) {
    await rate.acquire();
    rate.accepted();
    sent += 1;
  }
  return sent;
}

describe('AdaptiveRate', () => {
  it('paces requests at the starting rate while nothing is learned', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 600 });
    const started = clock.now();
    for (let i = 0; i < 11; i++) await rate.acquire();
    // 10/s with one request of burst: the eleventh goes a second after the first.
    expect(clock.now() - started).toBe(1_000);
    expect(rate.perMinute).toBe(600);
  });

  it('grows fast while requests queue for the pace and Chat2Desk keeps answering', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 300 });
    await sendFor(rate, clock, 1_000);
    // About ×e⁴ (×55) in a second with no limit known: 5/s to the hundreds within the first second.
    expect(rate.perMinute).toBeGreaterThan(300 * 30);
    expect(rate.perMinute).toBeLessThan(300 * 100);
  });

  it('does not grow while the pace holds nothing back (no demand is no evidence)', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 600 });
    for (let i = 0; i < 20; i++) {
      await rate.acquire();
      rate.accepted();
      clock.advance(2_000);
    }
    expect(rate.perMinute).toBe(600);
  });

  it('grows fast back towards the limit learned at the last refusal, slowly around it, and faster again well above it', async () => {
    const clock = virtualClock();
    const below = rateAt(clock, { perMinute: 600, limitPerMinute: 1_200 });
    await sendFor(below, clock, 1_000);
    expect(below.perMinute).toBeGreaterThan(600 * 1.4);

    const around = rateAt(clock, { perMinute: 1_200, limitPerMinute: 1_200 });
    await sendFor(around, clock, 1_000);
    expect(around.perMinute).toBeGreaterThan(1_200 * 1.005);
    expect(around.perMinute).toBeLessThan(1_200 * 1.02);

    const above = rateAt(clock, { perMinute: 1_500, limitPerMinute: 1_200 });
    await sendFor(above, clock, 1_000);
    expect(above.perMinute).toBeGreaterThan(1_500 * 1.03);
    expect(above.perMinute).toBeLessThan(1_500 * 1.08);
  });

  it('learns the limit from what Chat2Desk accepted in the last second when it refuses, and cuts below it', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 3_000 });
    // 30 answers within the last second, then the refusal: Chat2Desk takes ~30/s, not the 50/s we pace at.
    for (let i = 0; i < 30; i++) {
      await rate.acquire();
      rate.accepted();
      clock.advance(30);
    }
    await rate.acquire();
    rate.refused();
    expect(rate.learned.limitPerMinute).toBe(30 * 60);
    expect(rate.perMinute).toBeCloseTo(BACKOFF * 30 * 60, 6);
  });

  it('cuts to no less than a quarter of the rate when little was accepted before the refusal', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 6_000 });
    await rate.acquire();
    rate.refused();
    expect(rate.learned.limitPerMinute).toBe(1_500);
    expect(rate.perMinute).toBeCloseTo(BACKOFF * 1_500, 6);
  });

  it('takes refusals within a second of a cut for the same overshoot, and cuts again after that', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 6_000, limitPerMinute: 6_000 });
    await rate.acquire();
    rate.refused();
    const afterCut = rate.perMinute;
    for (let i = 0; i < 5; i++) {
      await rate.acquire();
      rate.refused();
    }
    expect(clock.now()).toBeLessThan(1_000_000 + 1_000);
    expect(rate.perMinute).toBe(afterCut);
    clock.advance(1_000);
    rate.refused();
    expect(rate.perMinute).toBeCloseTo(BACKOFF * (afterCut / 4), 6);
  });

  it('sends nothing after a cut until what filled the last second has left it', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 6_000, limitPerMinute: 6_000 });
    const firstAcceptedAt = clock.now();
    for (let i = 0; i < 10; i++) {
      await rate.acquire();
      rate.accepted();
    }
    await rate.acquire();
    rate.refused();
    await rate.acquire();
    expect(clock.now()).toBeGreaterThanOrEqual(firstAcceptedAt + 1_000);
  });

  it('waits for the next slot after a refusal instead of sending at once', async () => {
    const clock = virtualClock();
    const rate = rateAt(clock, { perMinute: 600, limitPerMinute: 600 });
    await rate.acquire();
    rate.refused();
    const refusedAt = clock.now();
    await rate.acquire();
    expect(clock.now()).toBeGreaterThan(refusedAt);
  });

  it('stays between the floor and the ceiling', async () => {
    const clock = virtualClock();
    const capped = rateAt(clock, { perMinute: 300 }, { ceiling: 900 });
    await sendFor(capped, clock, 3_000);
    expect(capped.perMinute).toBe(900);

    const floored = rateAt(clock, { perMinute: 60, limitPerMinute: 60 }, { floor: 30 });
    for (let i = 0; i < 10; i++) {
      await floored.acquire();
      floored.refused();
      clock.advance(1_000);
    }
    expect(floored.perMinute).toBe(30);
    // A learned rate beyond today's limits is brought inside them.
    expect(rateAt(clock, { perMinute: 90_000 }, { ceiling: 900 }).perMinute).toBe(900);
  });

  it('hands over what it learned at most once per save interval, and the rest on flush', async () => {
    const clock = virtualClock();
    const saved: LearnedRate[] = [];
    const rate = rateAt(clock, { perMinute: 600, limitPerMinute: 600 }, {}, (learned) => saved.push(learned));
    const sent = await sendFor(rate, clock, 12_000);
    expect(sent).toBeGreaterThan(100);
    // One save at the first change, then one per 5 s: three for 12 s of changes.
    expect(saved).toHaveLength(3);
    rate.flush();
    expect(saved).toHaveLength(4);
    expect(saved.at(-1)).toEqual(rate.learned);
    rate.flush();
    expect(saved).toHaveLength(4);
  });
});

import { eq } from 'drizzle-orm';
import type { Db } from './database.js';
import { c2dRates } from './schema.js';

/** What the client learned about one Chat2Desk account's rate limit (src/chat2desk/adaptive-rate.ts). */
export interface LearnedRate {
  /** The rate the client was running at. */
  perMinute: number;
  /** Chat2Desk's limit as estimated at its last refusal for load; null while it never refused. */
  limitPerMinute: number | null;
}

/** The learned request rate per Chat2Desk account, so a restart resumes from it instead of the configured guess. */
export class Chat2DeskRateStore {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  get(accountKey: string): LearnedRate | undefined {
    return this.db.select({ perMinute: c2dRates.perMinute, limitPerMinute: c2dRates.limitPerMinute }).from(c2dRates).where(eq(c2dRates.accountKey, accountKey)).get();
  }

  save(accountKey: string, learned: LearnedRate): void {
    const row = { perMinute: learned.perMinute, limitPerMinute: learned.limitPerMinute, updatedAt: this.now() };
    this.db
      .insert(c2dRates)
      .values({ accountKey, ...row })
      .onConflictDoUpdate({ target: c2dRates.accountKey, set: row })
      .run();
  }
}

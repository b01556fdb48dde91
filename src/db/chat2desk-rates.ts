import { eq } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { DatabaseAccess } from './database.js';
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
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
  ) {}

  async get(accountKey: string): Promise<LearnedRate | undefined> {
    const [row] = await this.database.db
      .select({ perMinute: c2dRates.perMinute, limitPerMinute: c2dRates.limitPerMinute })
      .from(c2dRates)
      .where(eq(c2dRates.accountKey, accountKey));
    return row;
  }

  async save(accountKey: string, learned: LearnedRate): Promise<void> {
    const row = { perMinute: learned.perMinute, limitPerMinute: learned.limitPerMinute, updatedAt: this.clock.now() };
    await this.database.db
      .insert(c2dRates)
      .values({ accountKey, ...row })
      .onConflictDoUpdate({ target: c2dRates.accountKey, set: row });
  }
}

import { and, eq, lt, ne } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { SecretBox } from '../secrets.js';
import { cacheAccountLock, type Invalidation, invalidateRows } from './cache.js';
import type { DatabaseAccess } from './database.js';
import { changes, exec } from './dialect.js';
import { type HeldWake, insertJobs, type NewJob, wakeHeldJobs } from './jobs.js';
import { c2dWebhooks, webhookDeliveries } from './schema.js';

export interface WebhookRegistration {
  memberId: string;
  accountKey: string;
  webhookId: number | null;
  secret: string;
  status: string;
  lastDeliveryAt: number | null;
  lastCheckAt: number | null;
}

/** Webhook registrations and deliveries. The URL secret is looked up by digest and kept sealed. */
export class WebhookStore {
  constructor(
    private readonly database: DatabaseAccess,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
  ) {}

  async get(memberId: string): Promise<WebhookRegistration | undefined> {
    const [row] = await this.database.db.select().from(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId));
    return row ? this.#toRegistration(row) : undefined;
  }

  async bySecret(secret: string): Promise<WebhookRegistration | undefined> {
    const [row] = await this.database.db
      .select()
      .from(c2dWebhooks)
      .where(eq(c2dWebhooks.secretDigest, this.secrets.digest(secret)));
    return row ? this.#toRegistration(row) : undefined;
  }

  /**
   * The portal's webhook secret for this Chat2Desk account, chosen once. The first caller's
   * candidate is stored (status pending, no webhook id yet); every later or concurrent caller, in
   * this process or another, gets the stored secret, so they all register the same URL, which
   * Chat2Desk accepts once. A row left by another account is replaced. One conditional upsert on
   * the member id decides, so no lock is needed for two callers to agree.
   */
  async claimSecret(memberId: string, accountKey: string, candidate: string): Promise<string> {
    const values = { accountKey, webhookId: null, secretDigest: this.secrets.digest(candidate), secret: this.secrets.seal(candidate), status: 'pending' };
    await this.database.db
      .insert(c2dWebhooks)
      .values({ memberId, createdAt: this.clock.now(), ...values })
      .onConflictDoUpdate({ target: c2dWebhooks.memberId, set: values, setWhere: ne(c2dWebhooks.accountKey, accountKey) });
    const [row] = await this.database.db.select({ secret: c2dWebhooks.secret }).from(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId));
    if (!row) throw new Error(`The webhook registration of portal ${memberId} disappeared while it was claimed`);
    return this.secrets.open(row.secret);
  }

  async save(registration: { memberId: string; accountKey: string; webhookId: number | null; secret: string; status: string }): Promise<void> {
    const values = {
      accountKey: registration.accountKey,
      webhookId: registration.webhookId,
      secretDigest: this.secrets.digest(registration.secret),
      secret: this.secrets.seal(registration.secret),
      status: registration.status,
    };
    await this.database.db
      .insert(c2dWebhooks)
      .values({ memberId: registration.memberId, createdAt: this.clock.now(), ...values })
      .onConflictDoUpdate({ target: c2dWebhooks.memberId, set: values });
  }

  async markChecked(memberId: string, status: string): Promise<void> {
    await this.database.db.update(c2dWebhooks).set({ status, lastCheckAt: this.clock.now() }).where(eq(c2dWebhooks.memberId, memberId));
  }

  /**
   * Stores a delivery unless its key was seen, the jobs it starts (an outbox), and deletes what it
   * makes stale in the cache, all in one transaction: a failure of any part leaves none of them, so
   * the answer is a 5xx and Chat2Desk's retry finds nothing half done. The jobs are stored only
   * with a new key, and each carries a dedup key of its own derived from the delivery key, so a
   * retry starts nothing twice even after the key itself was pruned. The invalidation is applied
   * even to a repeated key: invalidating twice is harmless, while a key collision (events whose
   * bodies carry no time) must not swallow a real change. The held jobs the delivery may release
   * are made due after the invalidation, so their next run reads what changed; waking again on a
   * repeat is harmless too.
   */
  async recordDelivery(
    delivery: { memberId: string; accountKey: string; dedupKey: string; hookType: string; body: string },
    stale: Invalidation,
    newJobs: NewJob[] = [],
    wakes: HeldWake[] = [],
  ): Promise<{ fresh: boolean; jobsStored: number; jobsWoken: number }> {
    const now = this.clock.now();
    const { dialect } = this.database;
    return dialect.transaction(function* (tx) {
      // Taken first: a fetch's save (CacheStore.saveFetched) either replays this delivery or comes after its invalidation.
      yield* dialect.serializeOn(tx, cacheAccountLock(delivery.accountKey));
      // The unique key decides which receipt is the first, also between two processes at once.
      const [inserted] = yield* exec(
        tx
          .insert(webhookDeliveries)
          .values({ ...delivery, receivedAt: now })
          .onConflictDoNothing({ target: [webhookDeliveries.memberId, webhookDeliveries.dedupKey] })
          .returning({ id: webhookDeliveries.id }),
      );
      if (!inserted) {
        // A repeated key is stamped anew, so a lookup in flight replays it too (CacheStore.saveFetched).
        yield* exec(
          tx
            .update(webhookDeliveries)
            .set({ receivedAt: now, body: delivery.body })
            .where(and(eq(webhookDeliveries.memberId, delivery.memberId), eq(webhookDeliveries.dedupKey, delivery.dedupKey))),
        );
      }
      const jobsStored = inserted ? yield* insertJobs(tx, newJobs, now) : 0;
      yield* exec(tx.update(c2dWebhooks).set({ lastDeliveryAt: now }).where(eq(c2dWebhooks.memberId, delivery.memberId)));
      yield* invalidateRows(tx, delivery.accountKey, stale);
      let jobsWoken = 0;
      for (const wake of wakes) jobsWoken += yield* wakeHeldJobs(tx, wake, now);
      return { fresh: inserted !== undefined, jobsStored, jobsWoken };
    });
  }

  /** Chat2Desk's last retry comes 2 h after the first try; keys older than that can go. */
  async pruneDeliveries(olderThan: number): Promise<number> {
    return changes(await this.database.db.delete(webhookDeliveries).where(lt(webhookDeliveries.receivedAt, olderThan)));
  }

  #toRegistration(row: typeof c2dWebhooks.$inferSelect): WebhookRegistration {
    return {
      memberId: row.memberId,
      accountKey: row.accountKey,
      webhookId: row.webhookId,
      secret: this.secrets.open(row.secret),
      status: row.status,
      lastDeliveryAt: row.lastDeliveryAt,
      lastCheckAt: row.lastCheckAt,
    };
  }
}

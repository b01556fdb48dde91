import { and, eq, lt } from 'drizzle-orm';
import type { SecretBox } from '../secrets.js';
import type { Db } from './database.js';
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
    private readonly db: Db,
    private readonly secrets: SecretBox,
    private readonly now: () => number = Date.now,
  ) {}

  get(memberId: string): WebhookRegistration | undefined {
    const row = this.db.select().from(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId)).get();
    return row ? this.#toRegistration(row) : undefined;
  }

  bySecret(secret: string): WebhookRegistration | undefined {
    const row = this.db
      .select()
      .from(c2dWebhooks)
      .where(eq(c2dWebhooks.secretDigest, this.secrets.digest(secret)))
      .get();
    return row ? this.#toRegistration(row) : undefined;
  }

  all(): WebhookRegistration[] {
    return this.db
      .select()
      .from(c2dWebhooks)
      .all()
      .map((row) => this.#toRegistration(row));
  }

  /**
   * The portal's webhook secret for this Chat2Desk account, chosen once. The first caller's
   * candidate is stored (status pending, no webhook id yet); every later or concurrent caller, in
   * this process or another, gets the stored secret, so they all register the same URL, which
   * Chat2Desk accepts once. A row left by another account is replaced.
   */
  claimSecret(memberId: string, accountKey: string, candidate: string): string {
    return this.db.transaction(
      (tx) => {
        const row = tx.select().from(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId)).get();
        if (row && row.accountKey === accountKey) return this.secrets.open(row.secret);
        const values = { accountKey, webhookId: null, secretDigest: this.secrets.digest(candidate), secret: this.secrets.seal(candidate), status: 'pending' };
        tx.insert(c2dWebhooks)
          .values({ memberId, createdAt: this.now(), ...values })
          .onConflictDoUpdate({ target: c2dWebhooks.memberId, set: values })
          .run();
        return candidate;
      },
      // Takes the write lock before reading, so two processes cannot both find no row.
      { behavior: 'immediate' },
    );
  }

  save(registration: { memberId: string; accountKey: string; webhookId: number | null; secret: string; status: string }): void {
    const values = {
      accountKey: registration.accountKey,
      webhookId: registration.webhookId,
      secretDigest: this.secrets.digest(registration.secret),
      secret: this.secrets.seal(registration.secret),
      status: registration.status,
    };
    this.db
      .insert(c2dWebhooks)
      .values({ memberId: registration.memberId, createdAt: this.now(), ...values })
      .onConflictDoUpdate({ target: c2dWebhooks.memberId, set: values })
      .run();
  }

  markChecked(memberId: string, status: string): void {
    this.db.update(c2dWebhooks).set({ status, lastCheckAt: this.now() }).where(eq(c2dWebhooks.memberId, memberId)).run();
  }

  remove(memberId: string): void {
    this.db.delete(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId)).run();
  }

  /** Stores a delivery unless its key was seen; true when it is new. Runs inside the caller's transaction. */
  recordDelivery(delivery: { memberId: string; accountKey: string; dedupKey: string; hookType: string; body: string }): boolean {
    const now = this.now();
    const seen = this.db
      .select({ id: webhookDeliveries.id })
      .from(webhookDeliveries)
      .where(and(eq(webhookDeliveries.memberId, delivery.memberId), eq(webhookDeliveries.dedupKey, delivery.dedupKey)))
      .get();
    // A repeated key is stamped anew, so a lookup in flight replays it too (cache.deliveriesSince).
    this.db
      .insert(webhookDeliveries)
      .values({ ...delivery, receivedAt: now })
      .onConflictDoUpdate({ target: [webhookDeliveries.memberId, webhookDeliveries.dedupKey], set: { receivedAt: now, body: delivery.body } })
      .run();
    this.db.update(c2dWebhooks).set({ lastDeliveryAt: now }).where(eq(c2dWebhooks.memberId, delivery.memberId)).run();
    return seen === undefined;
  }

  /** Chat2Desk's last retry comes 2 h after the first try; keys older than that can go. */
  pruneDeliveries(olderThan: number): number {
    return this.db.delete(webhookDeliveries).where(lt(webhookDeliveries.receivedAt, olderThan)).run().changes;
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

import { and, eq } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { DatabaseAccess } from './database.js';
import { episodeRecords } from './schema.js';

export type CrmEntityType = 'lead' | 'contact' | 'company' | 'deal';

export interface ClientRecord {
  entityType: CrmEntityType;
  entityId: number;
}

/**
 * The CRM record each Chat2Desk client's episodes went to, per portal: the first place an episode
 * looks, because Telegram and widget clients have no phone to find it by (src/episodes/).
 */
export class EpisodeRecordStore {
  constructor(
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
  ) {}

  async get(memberId: string, clientId: number): Promise<ClientRecord | undefined> {
    const [row] = await this.database.db
      .select({ entityType: episodeRecords.entityType, entityId: episodeRecords.entityId })
      .from(episodeRecords)
      .where(and(eq(episodeRecords.memberId, memberId), eq(episodeRecords.clientId, clientId)));
    return row ? { entityType: row.entityType as CrmEntityType, entityId: row.entityId } : undefined;
  }

  async remember(memberId: string, clientId: number, record: ClientRecord): Promise<void> {
    const values = { entityType: record.entityType, entityId: record.entityId, updatedAt: this.clock.now() };
    await this.database.db
      .insert(episodeRecords)
      .values({ memberId, clientId, ...values })
      .onConflictDoUpdate({ target: [episodeRecords.memberId, episodeRecords.clientId], set: values });
  }

  /**
   * A record the portal no longer has (deleted, converted) is forgotten, so the next episode looks
   * again; only while it is still the one remembered, since another job may have just saved a new one.
   */
  async forget(memberId: string, clientId: number, record: ClientRecord): Promise<void> {
    await this.database.db
      .delete(episodeRecords)
      .where(
        and(
          eq(episodeRecords.memberId, memberId),
          eq(episodeRecords.clientId, clientId),
          eq(episodeRecords.entityType, record.entityType),
          eq(episodeRecords.entityId, record.entityId),
        ),
      );
  }
}

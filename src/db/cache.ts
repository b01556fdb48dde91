import { and, asc, desc, eq, gte, inArray, like, lt, or, sql } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';
import { changes, exec, type Statement, type Tx } from './dialect.js';
import { c2dAccounts, c2dClientDialogs, c2dClients, c2dDialogs, c2dLists, c2dPhoneLookups, webhookDeliveries } from './schema.js';

export interface CachedClient {
  id: number;
  phone: string | null;
  clientPhone: string | null;
  name: string | null;
  assignedName: string | null;
  /** The client's picture link; absent in rows cached before it was kept. */
  avatar?: string | null;
  tags: Array<{ id: number; label: string }>;
}

export interface CachedDialog {
  id: number;
  clientId: number | null;
  state: string;
  operatorId: number | null;
  channelId: number | null;
  transport: string | null;
  beginAt: string | null;
  endAt: string | null;
  lastMessageText: string | null;
  lastMessageAt: string | null;
  lastMessageType: string | null;
  lastRequestId: number | null;
  messagesCount: number | null;
}

/** What a webhook delivery makes stale (see src/chat2desk/webhooks.ts for the mapping). */
export interface Invalidation {
  clientIds: number[];
  dialogIds: number[];
  phones: string[];
  /** Clients whose dialog list may have changed (a new or closed dialog). */
  dialogListsOf: number[];
  lists: string[];
}

/** The key under which a fetch's save and a delivery's invalidation of one account take their turns (Dialect.serializeOn). */
export function cacheAccountLock(accountKey: string): string {
  return `c2d-cache:${accountKey}`;
}

/** What one fetch from Chat2Desk learned, stored together (CacheStore.saveFetched). */
export interface FetchedFacts {
  clients?: CachedClient[];
  /** Which clients a phone number belongs to. */
  phoneLookups?: Array<{ phone: string; clientIds: number[] }>;
  dialogs?: CachedDialog[];
  /** Clients whose whole dialog list is among `dialogs` (and the rows already cached). */
  dialogListsOf?: number[];
  list?: { kind: string; items: unknown[] };
  /** A bulk fill of the whole account: its last sync becomes the fetch's time. */
  synced?: boolean;
}

/** The Chat2Desk cache's SQL. Callers pass `freshAfter`: rows fetched before it are not served. */
export class CacheStore {
  /** Prepared once: robots in bulk run these reads thousands of times. */
  readonly #q;

  constructor(private readonly database: DatabaseAccess) {
    const { db } = database;
    const p = (name: string) => sql.placeholder(name);
    this.#q = {
      validFrom: db
        .select({ validFrom: c2dAccounts.validFrom })
        .from(c2dAccounts)
        .where(eq(c2dAccounts.accountKey, p('account')))
        .prepare(),
      client: db
        .select()
        .from(c2dClients)
        .where(and(eq(c2dClients.accountKey, p('account')), eq(c2dClients.id, p('id')), gte(c2dClients.fetchedAt, p('freshAfter'))))
        .prepare(),
      phoneLookup: db
        .select()
        .from(c2dPhoneLookups)
        .where(and(eq(c2dPhoneLookups.accountKey, p('account')), eq(c2dPhoneLookups.phone, p('phone')), gte(c2dPhoneLookups.fetchedAt, p('freshAfter'))))
        .prepare(),
      dialog: db
        .select()
        .from(c2dDialogs)
        .where(and(eq(c2dDialogs.accountKey, p('account')), eq(c2dDialogs.id, p('id')), gte(c2dDialogs.fetchedAt, p('freshAfter'))))
        .prepare(),
      marker: db
        .select()
        .from(c2dClientDialogs)
        .where(and(eq(c2dClientDialogs.accountKey, p('account')), eq(c2dClientDialogs.clientId, p('clientId')), gte(c2dClientDialogs.fetchedAt, p('freshAfter'))))
        .prepare(),
      dialogsOfClient: db
        .select()
        .from(c2dDialogs)
        .where(and(eq(c2dDialogs.accountKey, p('account')), eq(c2dDialogs.clientId, p('clientId'))))
        .prepare(),
      list: db
        .select()
        .from(c2dLists)
        .where(and(eq(c2dLists.accountKey, p('account')), eq(c2dLists.kind, p('kind')), gte(c2dLists.fetchedAt, p('freshAfter'))))
        .prepare(),
    };
  }

  async validFrom(accountKey: string): Promise<number> {
    return (await this.database.dialect.get(this.#q.validFrom, { account: accountKey }))?.validFrom ?? 0;
  }

  /** Reconciliation: everything cached for the account so far is stale. */
  async invalidateAccount(accountKey: string, at: number): Promise<void> {
    await this.database.db
      .insert(c2dAccounts)
      .values({ accountKey, validFrom: at })
      .onConflictDoUpdate({ target: c2dAccounts.accountKey, set: { validFrom: at } });
  }

  /**
   * Stores what a fetch that started at `fetchedAt` learned and, in the same transaction, replays
   * the invalidations of deliveries received since then: a delivery that arrived while the fetch
   * was in flight may describe a change the fetched answer predates.
   */
  async saveFetched(accountKey: string, fetchedAt: number, facts: FetchedFacts, invalidationOf: (deliveryBody: string) => Invalidation): Promise<void> {
    const { dialect } = this.database;
    await dialect.transaction(function* (tx) {
      // A delivery's invalidation and this replay take their turns per account (WebhookStore.recordDelivery):
      // otherwise, on PostgreSQL, a delivery committed after the replay's read would find nothing
      // to invalidate yet and the fetched rows would outlive the change (docs/multi-process.md).
      yield* dialect.serializeOn(tx, cacheAccountLock(accountKey));
      // Many rows per statement (a bulk fill brings thousands), each replacing the row it collides with.
      for (const clients of chunks(facts.clients ?? [])) {
        const rows = clients.map((client) => ({ accountKey, ...client, tags: JSON.stringify(client.tags), fetchedAt }));
        yield* exec(
          tx
            .insert(c2dClients)
            .values(rows)
            .onConflictDoUpdate({ target: [c2dClients.accountKey, c2dClients.id], set: replacing(['phone', 'client_phone', 'name', 'assigned_name', 'tags', 'fetched_at']) }),
        );
      }
      // Ids are stored as ",1,2," so that the clients of a lookup can be found with LIKE.
      for (const lookups of chunks(facts.phoneLookups ?? [], (lookup) => lookup.phone)) {
        const rows = lookups.map((lookup) => ({ accountKey, phone: lookup.phone, clientIds: `,${lookup.clientIds.join(',')},`, fetchedAt }));
        yield* exec(
          tx
            .insert(c2dPhoneLookups)
            .values(rows)
            .onConflictDoUpdate({ target: [c2dPhoneLookups.accountKey, c2dPhoneLookups.phone], set: replacing(['client_ids', 'fetched_at']) }),
        );
      }
      yield* putDialogs(tx, accountKey, facts.dialogs ?? [], fetchedAt);
      for (const clientIds of chunks(facts.dialogListsOf ?? [])) {
        yield* exec(
          tx
            .insert(c2dClientDialogs)
            .values(clientIds.map((clientId) => ({ accountKey, clientId, fetchedAt })))
            .onConflictDoUpdate({ target: [c2dClientDialogs.accountKey, c2dClientDialogs.clientId], set: { fetchedAt } }),
        );
      }
      if (facts.list) {
        const items = JSON.stringify(facts.list.items);
        yield* exec(
          tx
            .insert(c2dLists)
            .values({ accountKey, kind: facts.list.kind, items, fetchedAt })
            .onConflictDoUpdate({ target: [c2dLists.accountKey, c2dLists.kind], set: { items, fetchedAt } }),
        );
      }
      if (facts.synced) {
        yield* exec(
          tx
            .insert(c2dAccounts)
            .values({ accountKey, lastSyncAt: fetchedAt })
            .onConflictDoUpdate({ target: c2dAccounts.accountKey, set: { lastSyncAt: fetchedAt } }),
        );
      }
      const since = yield* exec(
        tx
          .select({ body: webhookDeliveries.body })
          .from(webhookDeliveries)
          .where(and(eq(webhookDeliveries.accountKey, accountKey), gte(webhookDeliveries.receivedAt, fetchedAt)))
          .orderBy(asc(webhookDeliveries.id)),
      );
      for (const { body } of since) yield* invalidateRows(tx, accountKey, invalidationOf(body));
    });
  }

  async client(accountKey: string, id: number, freshAfter: number): Promise<CachedClient | undefined> {
    const row = await this.database.dialect.get(this.#q.client, { account: accountKey, id, freshAfter });
    return row ? { id: row.id, phone: row.phone, clientPhone: row.clientPhone, name: row.name, assignedName: row.assignedName, tags: JSON.parse(row.tags) } : undefined;
  }

  /**
   * Clients whose name or assigned name contains `text`, fetched after `freshAfter`, at most `limit`,
   * newest first, whatever the letters' case (any alphabet). `%`, `_` and the backslash in the text
   * match themselves: LIKE's wildcards are escaped.
   */
  async clientsByName(accountKey: string, text: string, freshAfter: number, limit: number): Promise<CachedClient[]> {
    const pattern = `%${text.replace(/[\\%_]/g, (char) => `\\${char}`)}%`;
    const { db, dialect } = this.database;
    const rows = await db
      .select()
      .from(c2dClients)
      .where(
        and(
          eq(c2dClients.accountKey, accountKey),
          gte(c2dClients.fetchedAt, freshAfter),
          or(
            sql`${dialect.fold(c2dClients.name)} like ${dialect.fold(pattern)} escape '\\'`,
            sql`${dialect.fold(c2dClients.assignedName)} like ${dialect.fold(pattern)} escape '\\'`,
          ),
        ),
      )
      .orderBy(desc(c2dClients.id))
      .limit(limit);
    return rows.map((row) => ({ id: row.id, phone: row.phone, clientPhone: row.clientPhone, name: row.name, assignedName: row.assignedName, tags: JSON.parse(row.tags) }));
  }

  async phoneLookup(accountKey: string, phone: string, freshAfter: number): Promise<number[] | undefined> {
    const row = await this.database.dialect.get(this.#q.phoneLookup, { account: accountKey, phone, freshAfter });
    return row ? row.clientIds.split(',').filter(Boolean).map(Number) : undefined;
  }

  async dialog(accountKey: string, id: number, freshAfter: number): Promise<CachedDialog | undefined> {
    const row = await this.database.dialect.get(this.#q.dialog, { account: accountKey, id, freshAfter });
    return row ? toDialog(row) : undefined;
  }

  /** The client's dialogs, if the whole list is cached and fresh. */
  async dialogsOfClient(accountKey: string, clientId: number, freshAfter: number): Promise<CachedDialog[] | undefined> {
    const marker = await this.database.dialect.get(this.#q.marker, { account: accountKey, clientId, freshAfter });
    if (!marker) return undefined;
    const rows = await this.database.dialect.all(this.#q.dialogsOfClient, { account: accountKey, clientId });
    // A dialog row invalidated since the list was fetched makes the list incomplete.
    if (rows.some((row) => row.fetchedAt < freshAfter)) return undefined;
    return rows.map(toDialog);
  }

  async list<T>(accountKey: string, kind: string, freshAfter: number): Promise<T[] | undefined> {
    const row = await this.database.dialect.get(this.#q.list, { account: accountKey, kind, freshAfter });
    return row ? (JSON.parse(row.items) as T[]) : undefined;
  }

  /** Deletes what a change made stale. Deleting, not patching: the next read fetches the truth. */
  async invalidate(accountKey: string, change: Invalidation): Promise<void> {
    await this.database.dialect.transaction((tx) => invalidateRows(tx, accountKey, change));
  }

  /** Drops cached rows fetched before `olderThan`: they could not be served any more (TTL at most a day). */
  async pruneOlderThan(olderThan: number): Promise<number> {
    let removed = 0;
    for (const table of [c2dClients, c2dPhoneLookups, c2dDialogs, c2dClientDialogs, c2dLists]) {
      removed += changes(await this.database.db.delete(table).where(lt(table.fetchedAt, olderThan)));
    }
    return removed;
  }
}

/** Rows per multi-row insert: well below either database's limit on parameters (SQLite 32766, PostgreSQL 65535). */
const ROWS_PER_STATEMENT = 500;

/**
 * The rows in groups of ROWS_PER_STATEMENT, the last of each id only: PostgreSQL refuses an upsert
 * that meets the same row twice, and the last one is what SQLite's row-by-row upsert kept.
 */
function chunks<T>(all: T[], idOf: (item: T) => unknown = (item) => (typeof item === 'object' && item !== null && 'id' in item ? item.id : item)): T[][] {
  const items = [...new Map(all.map((item) => [idOf(item), item])).values()];
  const result: T[][] = [];
  for (let i = 0; i < items.length; i += ROWS_PER_STATEMENT) result.push(items.slice(i, i + ROWS_PER_STATEMENT));
  return result;
}

/** An upsert's `set` taking each named column from the row that collided (`excluded`, both databases). */
function replacing(columns: string[]): Record<string, ReturnType<typeof sql>> {
  const set: Record<string, ReturnType<typeof sql>> = {};
  for (const column of columns) set[column.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase())] = sql.raw(`excluded.${column}`);
  return set;
}

function* putDialogs(tx: Tx, accountKey: string, dialogs: CachedDialog[], fetchedAt: number): Generator<Statement, void, unknown> {
  for (const rows of chunks(dialogs)) {
    yield* exec(
      tx
        .insert(c2dDialogs)
        .values(rows.map((dialog) => ({ accountKey, ...dialog, fetchedAt })))
        .onConflictDoUpdate({
          target: [c2dDialogs.accountKey, c2dDialogs.id],
          set: replacing([
            'client_id',
            'state',
            'operator_id',
            'channel_id',
            'transport',
            'begin_at',
            'end_at',
            'last_message_text',
            'last_message_at',
            'last_message_type',
            'last_request_id',
            'messages_count',
            'fetched_at',
          ]),
        }),
    );
  }
}

/**
 * Deletes what a change made stale, inside the caller's transaction: a webhook delivery's receipt
 * (WebhookStore.recordDelivery), a replay after a fetch, a write of our own.
 */
export function* invalidateRows(tx: Tx, accountKey: string, change: Invalidation): Generator<Statement, void, unknown> {
  if (change.clientIds.length) {
    yield* exec(tx.delete(c2dClients).where(and(eq(c2dClients.accountKey, accountKey), inArray(c2dClients.id, change.clientIds))));
    for (const id of change.clientIds) {
      yield* exec(tx.delete(c2dPhoneLookups).where(and(eq(c2dPhoneLookups.accountKey, accountKey), like(c2dPhoneLookups.clientIds, `%,${id},%`))));
    }
  }
  if (change.phones.length) {
    yield* exec(tx.delete(c2dPhoneLookups).where(and(eq(c2dPhoneLookups.accountKey, accountKey), inArray(c2dPhoneLookups.phone, change.phones))));
  }
  if (change.dialogIds.length) {
    // The owners' dialog lists would be incomplete without these rows: they go too.
    const rows = yield* exec(
      tx
        .select({ clientId: c2dDialogs.clientId })
        .from(c2dDialogs)
        .where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.id, change.dialogIds))),
    );
    const owners = rows.map((row) => row.clientId).filter((id): id is number => id !== null);
    change = { ...change, dialogListsOf: [...change.dialogListsOf, ...owners] };
    yield* exec(tx.delete(c2dDialogs).where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.id, change.dialogIds))));
  }
  if (change.dialogListsOf.length) {
    // An event may name the client but not the dialog (an inbox message before the request is
    // assigned), so every cached dialog of those clients goes too.
    yield* exec(tx.delete(c2dDialogs).where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.clientId, change.dialogListsOf))));
    yield* exec(tx.delete(c2dClientDialogs).where(and(eq(c2dClientDialogs.accountKey, accountKey), inArray(c2dClientDialogs.clientId, change.dialogListsOf))));
  }
  if (change.lists.length) {
    yield* exec(tx.delete(c2dLists).where(and(eq(c2dLists.accountKey, accountKey), inArray(c2dLists.kind, change.lists))));
  }
}

function toDialog(row: typeof c2dDialogs.$inferSelect): CachedDialog {
  return {
    id: row.id,
    clientId: row.clientId,
    state: row.state,
    operatorId: row.operatorId,
    channelId: row.channelId,
    transport: row.transport,
    beginAt: row.beginAt,
    endAt: row.endAt,
    lastMessageText: row.lastMessageText,
    lastMessageAt: row.lastMessageAt,
    lastMessageType: row.lastMessageType,
    lastRequestId: row.lastRequestId,
    messagesCount: row.messagesCount,
  };
}

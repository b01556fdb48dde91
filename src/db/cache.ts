import { and, asc, desc, eq, gte, inArray, like, lt, or, sql } from 'drizzle-orm';
import type { Db } from './database.js';
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

  constructor(private readonly db: Db) {
    // SQLite's LIKE and lower() fold ASCII letters only; names are often Cyrillic ("анна" finds "Анна").
    db.$client.function('c2d_fold', { deterministic: true }, (value: unknown) => (typeof value === 'string' ? value.toLowerCase() : value));
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
      // The writes every lookup that missed makes, and its replay of deliveries received meanwhile.
      putClient: db
        .insert(c2dClients)
        .values({
          accountKey: p('account'),
          id: p('id'),
          phone: p('phone'),
          clientPhone: p('clientPhone'),
          name: p('name'),
          assignedName: p('assignedName'),
          tags: p('tags'),
          fetchedAt: p('fetchedAt'),
        })
        .onConflictDoUpdate({
          target: [c2dClients.accountKey, c2dClients.id],
          set: {
            phone: sql`${p('phone')}`,
            clientPhone: sql`${p('clientPhone')}`,
            name: sql`${p('name')}`,
            assignedName: sql`${p('assignedName')}`,
            tags: sql`${p('tags')}`,
            fetchedAt: sql`${p('fetchedAt')}`,
          },
        })
        .prepare(),
      putPhoneLookup: db
        .insert(c2dPhoneLookups)
        .values({ accountKey: p('account'), phone: p('phone'), clientIds: p('clientIds'), fetchedAt: p('fetchedAt') })
        .onConflictDoUpdate({ target: [c2dPhoneLookups.accountKey, c2dPhoneLookups.phone], set: { clientIds: sql`${p('clientIds')}`, fetchedAt: sql`${p('fetchedAt')}` } })
        .prepare(),
      deliveriesSince: db
        .select({ body: webhookDeliveries.body })
        .from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.accountKey, p('account')), gte(webhookDeliveries.receivedAt, p('since'))))
        .orderBy(asc(webhookDeliveries.id))
        .prepare(),
    };
  }

  async validFrom(accountKey: string): Promise<number> {
    return this.#q.validFrom.get({ account: accountKey })?.validFrom ?? 0;
  }

  /** Reconciliation: everything cached for the account so far is stale. */
  async invalidateAccount(accountKey: string, at: number): Promise<void> {
    await this.db
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
    this.db.transaction((tx) => {
      for (const client of facts.clients ?? []) {
        this.#q.putClient.run({
          account: accountKey,
          id: client.id,
          phone: client.phone,
          clientPhone: client.clientPhone,
          name: client.name,
          assignedName: client.assignedName,
          tags: JSON.stringify(client.tags),
          fetchedAt,
        });
      }
      // Ids are stored as ",1,2," so that the clients of a lookup can be found with LIKE.
      for (const lookup of facts.phoneLookups ?? []) {
        this.#q.putPhoneLookup.run({ account: accountKey, phone: lookup.phone, clientIds: `,${lookup.clientIds.join(',')},`, fetchedAt });
      }
      putDialogs(tx, accountKey, facts.dialogs ?? [], fetchedAt);
      for (const clientId of facts.dialogListsOf ?? []) {
        tx.insert(c2dClientDialogs)
          .values({ accountKey, clientId, fetchedAt })
          .onConflictDoUpdate({ target: [c2dClientDialogs.accountKey, c2dClientDialogs.clientId], set: { fetchedAt } })
          .run();
      }
      if (facts.list) {
        const items = JSON.stringify(facts.list.items);
        tx.insert(c2dLists)
          .values({ accountKey, kind: facts.list.kind, items, fetchedAt })
          .onConflictDoUpdate({ target: [c2dLists.accountKey, c2dLists.kind], set: { items, fetchedAt } })
          .run();
      }
      if (facts.synced) {
        tx.insert(c2dAccounts)
          .values({ accountKey, lastSyncAt: fetchedAt })
          .onConflictDoUpdate({ target: c2dAccounts.accountKey, set: { lastSyncAt: fetchedAt } })
          .run();
      }
      const since = this.#q.deliveriesSince.all({ account: accountKey, since: fetchedAt });
      for (const { body } of since) invalidateRows(tx, accountKey, invalidationOf(body));
    });
  }

  async client(accountKey: string, id: number, freshAfter: number): Promise<CachedClient | undefined> {
    const row = this.#q.client.get({ account: accountKey, id, freshAfter });
    return row ? { id: row.id, phone: row.phone, clientPhone: row.clientPhone, name: row.name, assignedName: row.assignedName, tags: JSON.parse(row.tags) } : undefined;
  }

  /**
   * Clients whose name or assigned name contains `text`, fetched after `freshAfter`, at most `limit`,
   * newest first, whatever the letters' case (any alphabet). `%`, `_` and the backslash in the text
   * match themselves: LIKE's wildcards are escaped.
   */
  async clientsByName(accountKey: string, text: string, freshAfter: number, limit: number): Promise<CachedClient[]> {
    const pattern = `%${text.replace(/[\\%_]/g, (char) => `\\${char}`)}%`;
    const rows = this.db
      .select()
      .from(c2dClients)
      .where(
        and(
          eq(c2dClients.accountKey, accountKey),
          gte(c2dClients.fetchedAt, freshAfter),
          or(sql`c2d_fold(${c2dClients.name}) like c2d_fold(${pattern}) escape '\\'`, sql`c2d_fold(${c2dClients.assignedName}) like c2d_fold(${pattern}) escape '\\'`),
        ),
      )
      .orderBy(desc(c2dClients.id))
      .limit(limit)
      .all();
    return rows.map((row) => ({ id: row.id, phone: row.phone, clientPhone: row.clientPhone, name: row.name, assignedName: row.assignedName, tags: JSON.parse(row.tags) }));
  }

  async phoneLookup(accountKey: string, phone: string, freshAfter: number): Promise<number[] | undefined> {
    const row = this.#q.phoneLookup.get({ account: accountKey, phone, freshAfter });
    return row ? row.clientIds.split(',').filter(Boolean).map(Number) : undefined;
  }

  async dialog(accountKey: string, id: number, freshAfter: number): Promise<CachedDialog | undefined> {
    const row = this.#q.dialog.get({ account: accountKey, id, freshAfter });
    return row ? toDialog(row) : undefined;
  }

  /** The client's dialogs, if the whole list is cached and fresh. */
  async dialogsOfClient(accountKey: string, clientId: number, freshAfter: number): Promise<CachedDialog[] | undefined> {
    const marker = this.#q.marker.get({ account: accountKey, clientId, freshAfter });
    if (!marker) return undefined;
    const rows = this.#q.dialogsOfClient.all({ account: accountKey, clientId });
    // A dialog row invalidated since the list was fetched makes the list incomplete.
    if (rows.some((row) => row.fetchedAt < freshAfter)) return undefined;
    return rows.map(toDialog);
  }

  async list<T>(accountKey: string, kind: string, freshAfter: number): Promise<T[] | undefined> {
    const row = this.#q.list.get({ account: accountKey, kind, freshAfter });
    return row ? (JSON.parse(row.items) as T[]) : undefined;
  }

  /** Deletes what a change made stale. Deleting, not patching: the next read fetches the truth. */
  async invalidate(accountKey: string, change: Invalidation): Promise<void> {
    this.db.transaction((tx) => invalidateRows(tx, accountKey, change));
  }

  /** Drops cached rows fetched before `olderThan`: they could not be served any more (TTL at most a day). */
  async pruneOlderThan(olderThan: number): Promise<number> {
    let removed = 0;
    for (const table of [c2dClients, c2dPhoneLookups, c2dDialogs, c2dClientDialogs, c2dLists]) {
      removed += this.db.delete(table).where(lt(table.fetchedAt, olderThan)).run().changes;
    }
    return removed;
  }
}

/** The database or a transaction of it: the helpers below run inside the caller's transaction. */
type Tx = Pick<Db, 'select' | 'insert' | 'delete'>;

function putDialogs(tx: Tx, accountKey: string, dialogs: CachedDialog[], fetchedAt: number): void {
  for (const dialog of dialogs) {
    const { id, ...rest } = dialog;
    const values = { ...rest, fetchedAt };
    tx.insert(c2dDialogs)
      .values({ accountKey, id, ...values })
      .onConflictDoUpdate({ target: [c2dDialogs.accountKey, c2dDialogs.id], set: values })
      .run();
  }
}

/**
 * Deletes what a change made stale, inside the caller's transaction: a webhook delivery's receipt
 * (WebhookStore.recordDelivery), a replay after a fetch, a write of our own.
 */
export function invalidateRows(tx: Tx, accountKey: string, change: Invalidation): void {
  if (change.clientIds.length) {
    tx.delete(c2dClients)
      .where(and(eq(c2dClients.accountKey, accountKey), inArray(c2dClients.id, change.clientIds)))
      .run();
    for (const id of change.clientIds) {
      tx.delete(c2dPhoneLookups)
        .where(and(eq(c2dPhoneLookups.accountKey, accountKey), like(c2dPhoneLookups.clientIds, `%,${id},%`)))
        .run();
    }
  }
  if (change.phones.length) {
    tx.delete(c2dPhoneLookups)
      .where(and(eq(c2dPhoneLookups.accountKey, accountKey), inArray(c2dPhoneLookups.phone, change.phones)))
      .run();
  }
  if (change.dialogIds.length) {
    // The owners' dialog lists would be incomplete without these rows: they go too.
    const owners = tx
      .select({ clientId: c2dDialogs.clientId })
      .from(c2dDialogs)
      .where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.id, change.dialogIds)))
      .all()
      .map((row) => row.clientId)
      .filter((id): id is number => id !== null);
    change = { ...change, dialogListsOf: [...change.dialogListsOf, ...owners] };
    tx.delete(c2dDialogs)
      .where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.id, change.dialogIds)))
      .run();
  }
  if (change.dialogListsOf.length) {
    // An event may name the client but not the dialog (an inbox message before the request is
    // assigned), so every cached dialog of those clients goes too.
    tx.delete(c2dDialogs)
      .where(and(eq(c2dDialogs.accountKey, accountKey), inArray(c2dDialogs.clientId, change.dialogListsOf)))
      .run();
    tx.delete(c2dClientDialogs)
      .where(and(eq(c2dClientDialogs.accountKey, accountKey), inArray(c2dClientDialogs.clientId, change.dialogListsOf)))
      .run();
  }
  if (change.lists.length) {
    tx.delete(c2dLists)
      .where(and(eq(c2dLists.accountKey, accountKey), inArray(c2dLists.kind, change.lists)))
      .run();
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

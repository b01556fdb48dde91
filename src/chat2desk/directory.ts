import type { Clock } from '../clock.js';
import type { CacheStore, CachedClient, CachedDialog, FetchedFacts, Invalidation } from '../db/cache.js';
import type { Logger } from '../log.js';
import { PAGE_LIMIT, type Chat2DeskApi, type Chat2DeskChannel, type Chat2DeskClient, type Chat2DeskDialog, type Chat2DeskOperator, type Chat2DeskTag } from './client.js';
import { Chat2DeskError } from './errors.js';
import { invalidationFor } from './webhook-events.js';

export type { CachedClient, CachedDialog };

/** How many pages (of PAGE_LIMIT) a bulk sync reads at most; larger accounts fill the rest on demand. */
const SYNC_PAGE_CAP = 100;

/**
 * Chat2Desk facts for one account, read through the SQLite cache. Freshness: a row is served while
 * it is younger than the TTL and than the account's last reconciliation; webhook deliveries delete
 * what they make stale before they are acknowledged, and a fetch that overlapped a delivery replays
 * that delivery's invalidation after storing, so a read after a delivery never sees the old value.
 * Writes go to Chat2Desk first and then invalidate.
 */
export class DialogDirectory {
  constructor(
    readonly api: Chat2DeskApi,
    private readonly store: CacheStore,
    readonly accountKey: string,
    private readonly ttlMs: number,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  /** Clients whose phone (or client_phone) is exactly these digits. */
  async clientsByPhone(phone: string): Promise<CachedClient[]> {
    const freshAfter = await this.#freshAfter();
    const ids = await this.store.phoneLookup(this.accountKey, phone, freshAfter);
    if (ids) {
      const clients = await Promise.all(ids.map((id) => this.store.client(this.accountKey, id, freshAfter)));
      if (clients.every((client): client is CachedClient => client !== undefined)) return clients;
    }
    return this.#fetch(
      async () => (await this.api.clientsByPhone(phone)).map(toClient),
      (clients) => ({ clients, phoneLookups: [{ phone, clientIds: clients.map((client) => client.id) }] }),
    );
  }

  async client(id: number): Promise<CachedClient> {
    const cached = await this.store.client(this.accountKey, id, await this.#freshAfter());
    if (cached) return cached;
    return this.#fetch(
      async () => toClient(await this.api.client(id)),
      (client) => ({ clients: [client] }),
    );
  }

  /** The client's dialogs, latest activity first. */
  async dialogsOfClient(clientId: number): Promise<CachedDialog[]> {
    const cached = await this.store.dialogsOfClient(this.accountKey, clientId, await this.#freshAfter());
    const dialogs =
      cached ??
      (await this.#fetch(
        async () => (await this.api.clientDialogs(clientId)).map((dialog) => toDialog(dialog, clientId)),
        (fetched) => ({ dialogs: fetched, dialogListsOf: [clientId] }),
      ));
    return [...dialogs].sort(latestFirst);
  }

  /**
   * Clients the cache knows whose name contains `text` (the Chat workspace's search: Chat2Desk has no
   * name filter, docs/protocols.md C3). Rows past the TTL still count, only a reconciliation voids
   * them: a search is a way in, and the dialogs it leads to are read fresh.
   */
  async clientsByName(text: string, limit: number): Promise<CachedClient[]> {
    return this.store.clientsByName(this.accountKey, text, await this.store.validFrom(this.accountKey), limit);
  }

  /** One page of the account's dialogs, newest first (the Chat workspace's lists); those naming their client are cached. */
  async dialogsPage(filter: { operatorId?: number; state?: 'open' | 'closed'; offset: number; limit: number }): Promise<{ dialogs: CachedDialog[]; total: number | undefined }> {
    return this.#fetch(
      async () => {
        const page = await this.api.dialogsList(filter);
        return { dialogs: page.items.map((dialog) => toDialog(dialog)), total: page.total };
      },
      // A dialog without a last message does not name its client: not stored over a row that knows it.
      ({ dialogs }) => ({ dialogs: dialogs.filter((dialog) => dialog.clientId !== null) }),
    );
  }

  async dialog(id: number): Promise<CachedDialog> {
    const cached = await this.store.dialog(this.accountKey, id, await this.#freshAfter());
    if (cached) return cached;
    // A dialog without messages does not name its client; keep the owner we already knew.
    const knownOwner = (await this.store.dialog(this.accountKey, id, 0))?.clientId ?? undefined;
    return this.#fetch(
      async () => toDialog(await this.api.dialog(id), knownOwner),
      (dialog) => ({ dialogs: [dialog] }),
    );
  }

  operators(): Promise<Chat2DeskOperator[]> {
    return this.#list('operators', () => this.api.operators());
  }

  channels(): Promise<Chat2DeskChannel[]> {
    return this.#list('channels', () => this.api.channels());
  }

  tags(): Promise<Chat2DeskTag[]> {
    return this.#list('tags', () => this.api.tags());
  }

  /** Write first: creates the client in Chat2Desk and forgets the cached "no client for this phone". */
  async createClient(input: { phone: string; transport: string; channel_id?: number }): Promise<{ id: number }> {
    try {
      return await this.api.createClient(input);
    } finally {
      await this.#forget({ clientIds: [], dialogIds: [], phones: [input.phone], dialogListsOf: [], lists: [] });
    }
  }

  async assignOperator(dialogId: number, operatorId: number, force: boolean): Promise<void> {
    const dialog = await this.api.updateDialog(dialogId, { operator_id: operatorId, ...(force ? { force_assign: true } : {}) });
    await this.#forget({ dialogIds: [dialogId], clientIds: [], phones: [], dialogListsOf: dialog.last_message?.client_id ? [dialog.last_message.client_id] : [], lists: [] });
  }

  /** Closes or reopens a dialog; a dialog already in that state counts as done (docs/protocols.md C4 "already has state"). */
  async setDialogState(dialogId: number, state: 'open' | 'closed', clientId: number | null): Promise<void> {
    try {
      await this.api.updateDialog(dialogId, { state });
    } catch (error) {
      if (!(error instanceof Chat2DeskError && error.texts.some((text) => /already has state/i.test(text)))) throw error;
    } finally {
      await this.forgetDialog(dialogId, clientId);
    }
  }

  /** A write changed the dialog (a message sent, its state): its cached row and its client's dialog list are forgotten. */
  forgetDialog(dialogId: number | null, clientId: number | null): Promise<void> {
    return this.#forget({ dialogIds: dialogId === null ? [] : [dialogId], clientIds: [], phones: [], dialogListsOf: clientId === null ? [] : [clientId], lists: [] });
  }

  async tag(tagIds: number[], assignee: { type: 'client' | 'request'; id: number }, clientId: number, action: 'add' | 'remove'): Promise<void> {
    try {
      if (action === 'add') await this.api.assignTags(tagIds, assignee);
      else for (const tagId of tagIds) await this.api.removeTag(tagId, assignee);
    } finally {
      await this.#forget({ clientIds: [clientId], dialogIds: [], phones: [], dialogListsOf: [], lists: [] });
    }
  }

  /** Fills the cache in bulk (clients, then dialogs), so a burst of lookups needs no API calls. */
  async sync(): Promise<{ clients: number; dialogs: number }> {
    const started = this.clock.now();
    const clients: CachedClient[] = [];
    let clientsComplete = false;
    for (let page = 0; page < SYNC_PAGE_CAP; page++) {
      const { items, total } = await this.api.clientsPage(page * PAGE_LIMIT);
      clients.push(...items.map(toClient));
      if (items.length < PAGE_LIMIT || clients.length >= total) {
        clientsComplete = true;
        break;
      }
    }
    const dialogs: CachedDialog[] = [];
    let dialogsComplete = false;
    for (let page = 0; page < SYNC_PAGE_CAP; page++) {
      const { items, total } = await this.api.dialogsPage(page * PAGE_LIMIT);
      dialogs.push(...items.map((dialog) => toDialog(dialog)));
      if (items.length < PAGE_LIMIT || dialogs.length >= total) {
        dialogsComplete = true;
        break;
      }
    }
    const phoneLookups: FetchedFacts['phoneLookups'] = [];
    if (clientsComplete) {
      const byPhone = new Map<string, number[]>();
      for (const client of clients) {
        for (const phone of new Set([client.phone, client.clientPhone])) {
          if (phone && /^\d+$/.test(phone)) byPhone.set(phone, [...(byPhone.get(phone) ?? []), client.id]);
        }
      }
      for (const [phone, clientIds] of byPhone) phoneLookups.push({ phone, clientIds });
    }
    const attributed = dialogs.filter((dialog) => dialog.clientId !== null);
    // Dialogs without a last message cannot be tied to a client here; clients that have one stay unmarked.
    const listsComplete = clientsComplete && dialogsComplete && dialogs.length === attributed.length;
    await this.store.saveFetched(
      this.accountKey,
      started,
      { clients, phoneLookups, dialogs: attributed, dialogListsOf: listsComplete ? clients.map((client) => client.id) : [], synced: true },
      replayedInvalidation,
    );
    this.log.info({ clients: clients.length, dialogs: dialogs.length, complete: clientsComplete && dialogsComplete }, 'chat2desk cache synced');
    return { clients: clients.length, dialogs: dialogs.length };
  }

  async #freshAfter(): Promise<number> {
    return Math.max(await this.store.validFrom(this.accountKey), this.clock.now() - this.ttlMs);
  }

  async #list<T>(kind: string, load: () => Promise<T[]>): Promise<T[]> {
    const cached = await this.store.list<T>(this.accountKey, kind, await this.#freshAfter());
    if (cached) return cached;
    return this.#fetch(load, (items) => ({ list: { kind, items } }));
  }

  /** Fetches, then stores stamped with the fetch's start, replaying deliveries that arrived meanwhile. */
  async #fetch<T>(load: () => Promise<T>, facts: (value: T) => FetchedFacts): Promise<T> {
    const started = this.clock.now();
    const value = await load();
    await this.store.saveFetched(this.accountKey, started, facts(value), replayedInvalidation);
    return value;
  }

  #forget(change: Invalidation): Promise<void> {
    return this.store.invalidate(this.accountKey, change);
  }
}

/** A stored delivery, replayed after a fetch it overlapped: what it made stale. */
function replayedInvalidation(deliveryBody: string): Invalidation {
  return invalidationFor(JSON.parse(deliveryBody) as Record<string, unknown>);
}

/** Sort order of dialogs: latest activity first (last message, else start), then the newer id. */
export function latestFirst(a: CachedDialog, b: CachedDialog): number {
  const at = (dialog: CachedDialog) => dialog.lastMessageAt ?? dialog.beginAt ?? '';
  return at(b).localeCompare(at(a)) || b.id - a.id;
}

function toClient(client: Chat2DeskClient): CachedClient {
  return {
    id: client.id,
    phone: client.phone ?? null,
    clientPhone: client.client_phone ?? null,
    name: client.name ?? null,
    assignedName: client.assigned_name ?? null,
    avatar: client.avatar ?? null,
    tags: (client.tags ?? []).map((tag) => ({ id: tag.id, label: tag.label })),
  };
}

/** client_id and channel are not top-level dialog fields: they come from last_message (docs/protocols.md C4). */
function toDialog(dialog: Chat2DeskDialog, clientId?: number): CachedDialog {
  const last = dialog.last_message ?? null;
  return {
    id: dialog.id,
    clientId: last?.client_id ?? clientId ?? null,
    state: dialog.state,
    operatorId: dialog.operator_id ?? null,
    channelId: last?.channel_id ?? null,
    transport: last?.transport ?? null,
    beginAt: dialog.begin ?? null,
    endAt: dialog.end ?? null,
    lastMessageText: last?.text ?? null,
    lastMessageAt: last?.created ?? null,
    lastMessageType: last?.type ?? null,
    lastRequestId: dialog.last_request_id ?? last?.request_id ?? null,
    messagesCount: dialog.messages ?? null,
  };
}

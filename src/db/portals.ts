import { type SQL, TransactionRollbackError, and, eq, isNotNull, lte, min, ne, sql } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import type { SecretBox } from '../secrets.js';
import type { Broadcast } from './broadcast.js';
import type { DatabaseAccess } from './database.js';
import { changes, exec, type Statement, type Tx } from './dialect.js';
import { finishWaitingJobs } from './jobs.js';
import {
  c2dAccounts,
  c2dClientDialogs,
  c2dClients,
  c2dDialogs,
  c2dLists,
  c2dPhoneLookups,
  c2dWebhooks,
  effects,
  episodeRecords,
  uploadedFiles,
  openChannelChats,
  openLines,
  jobs,
  portals,
  webhookDeliveries,
  type PortalRow,
} from './schema.js';

/** The broadcast topic of a changed portal row; the payload is the member id (src/db/broadcast.ts). */
export const PORTAL_CHANGED = 'portal';

/**
 * How long a lookup is trusted without a word from the other processes: a notification that was
 * missed (a lost listening connection) is healed this soon (docs/multi-process.md).
 */
export const PORTAL_LOOKUP_TTL_MS = 5_000;

/**
 * Now in ms by PostgreSQL's clock (not the transaction's start), for the refresh leases: the one
 * clock every process shares, like the budgets' (src/db/upstream-budgets.ts).
 */
const DATABASE_NOW = sql.raw('(extract(epoch from clock_timestamp()) * 1000)::bigint');

export type PortalStatus = 'active' | 'uninstalled' | 'reauth_required';

/** Non-secret per-portal settings, stored as JSON; validated by src/portal-settings.ts. */
export type StoredSettings = Record<string, unknown>;

export interface Portal {
  memberId: string;
  domain: string;
  clientEndpoint: string;
  status: PortalStatus;
  installerUserId: number | null;
  settings: StoredSettings;
  hasChat2deskToken: boolean;
  /** When the app was last installed: the install generation app page tokens carry (src/pages/page-token.ts). */
  installedAt: number;
}

export interface PortalTokens {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
  generation: number;
  clientEndpoint: string;
}

export interface InstallRecord {
  memberId: string;
  domain: string;
  clientEndpoint: string;
  applicationToken: string;
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
  installerUserId: number | null;
}

/** Portals and their secrets; the only code that sees sealed values. */
export class PortalStore {
  /** Prepared once: every robot call and event looks its portal up here. */
  readonly #byMemberId;
  readonly #chat2deskToken;
  /**
   * What authenticate needs of each member id, so a robot call costs an HMAC and no read. Unknown
   * member ids are remembered too, so that they are not told apart by timing from cached ones (and
   * the bound keeps made-up ids from growing it). This store is the only writer of the portals
   * table: every write method drops the entry here and, through the broadcast, in every process
   * sharing the database (#changing); an entry lives a few seconds at most, in case a notification
   * was lost (docs/multi-process.md).
   */
  /** Entries dropped so far, by any write or notification (#forget). */
  #drops = 0;
  readonly #known = new LRUCache<string, { digest: string; portal: Portal } | { digest: undefined }>({ max: 10_000, ttl: PORTAL_LOOKUP_TTL_MS });

  /** `broadcast`: how the other processes sharing the database hear of a write; none in a store test of one process. */
  constructor(
    private readonly database: DatabaseAccess,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
    private readonly broadcast?: Broadcast,
  ) {
    broadcast?.subscribe(PORTAL_CHANGED, (memberId) => this.#forget(memberId));
    const { db } = database;
    this.#byMemberId = db
      .select()
      .from(portals)
      .where(eq(portals.memberId, sql.placeholder('memberId')))
      .prepare();
    this.#chat2deskToken = db
      .select({ token: portals.chat2deskToken })
      .from(portals)
      .where(eq(portals.memberId, sql.placeholder('memberId')))
      .prepare();
  }

  async get(memberId: string): Promise<Portal | undefined> {
    const row = await this.database.dialect.get(this.#byMemberId, { memberId });
    return row ? toPortal(row) : undefined;
  }

  /** Drops a member id's entry, and counts the drop so that a lookup reading meanwhile keeps nothing. */
  #forget(memberId: string): void {
    this.#drops += 1;
    this.#known.delete(memberId);
  }

  /** The active portal whose stored application token matches the presented one, compared in constant time. */
  async authenticate(memberId: string, applicationToken: string): Promise<Portal | undefined> {
    let known = this.#known.get(memberId);
    if (!known) {
      const drops = this.#drops;
      const row = await this.database.dialect.get(this.#byMemberId, { memberId });
      known = row ? { digest: row.applicationTokenDigest, portal: toPortal(row) } : { digest: undefined };
      // A drop heard while reading may be of this very row, written after the read began: the
      // answer stands for this call, but is not kept.
      if (drops === this.#drops) this.#known.set(memberId, known);
    }
    if (known.digest === undefined) {
      // Still spend the digest work so an unknown member id is not told apart by timing.
      this.secrets.matches(applicationToken, 'x');
      return undefined;
    }
    if (!this.secrets.matches(applicationToken, known.digest)) return undefined;
    return known.portal.status === 'uninstalled' ? undefined : { ...known.portal };
  }

  /**
   * Runs a write of the portal's row. The entry is dropped before (so this process does not act on
   * it meanwhile) and after (a lookup during the write may have read the old row), and every other
   * process sharing the database is told to drop its own (PORTAL_CHANGED).
   */
  async #changing<T>(memberId: string, write: () => Promise<T>): Promise<T> {
    this.#forget(memberId);
    try {
      return await write();
    } finally {
      this.#forget(memberId);
      await this.broadcast?.publish(PORTAL_CHANGED, memberId);
    }
  }

  async saveInstall(record: InstallRecord): Promise<Portal> {
    return this.#changing(record.memberId, async () => {
      const now = this.clock.now();
      const values = {
        domain: record.domain,
        clientEndpoint: record.clientEndpoint,
        status: 'active' as const,
        applicationTokenDigest: this.secrets.digest(record.applicationToken),
        accessToken: this.secrets.seal(record.accessToken),
        refreshToken: this.secrets.seal(record.refreshToken),
        accessExpiresAt: record.expiresAt,
        installerUserId: record.installerUserId,
        // A verified install supersedes an uninstall that was waiting to be confirmed.
        uninstallRequestedAt: null,
        uninstallCheckAt: null,
        updatedAt: now,
        // A new generation: app page tokens issued before this install stop working.
        installedAt: now,
      };
      await this.database.db
        .insert(portals)
        .values({ memberId: record.memberId, ...values })
        .onConflictDoUpdate({ target: portals.memberId, set: values });
      return (await this.get(record.memberId))!;
    });
  }

  async tokens(memberId: string): Promise<PortalTokens | undefined> {
    const row = await this.database.dialect.get(this.#byMemberId, { memberId });
    if (row?.status !== 'active' || !row.accessToken || !row.refreshToken) return undefined;
    return {
      accessToken: this.secrets.open(row.accessToken),
      refreshToken: this.secrets.open(row.refreshToken),
      expiresAt: row.accessExpiresAt,
      generation: row.tokenGeneration,
      clientEndpoint: row.clientEndpoint,
    };
  }

  /**
   * Persists a refreshed pair and returns its generation. With `fromGeneration` (a refresh of the
   * pair of that generation) only while that pair is still the stored one: when another refresh
   * (in this process or another) stored its pair first, nothing changes and undefined comes back.
   * The generation is bumped in the statement, not read and written, so two writers cannot both
   * end up with the same one.
   */
  async saveRefreshedTokens(
    memberId: string,
    tokens: { accessToken: string; refreshToken: string; expiresAt: number; clientEndpoint: string },
    fromGeneration?: number,
  ): Promise<number | undefined> {
    return this.#changing(memberId, async () => {
      const [row] = await this.database.db
        .update(portals)
        .set({
          accessToken: this.secrets.seal(tokens.accessToken),
          refreshToken: this.secrets.seal(tokens.refreshToken),
          accessExpiresAt: tokens.expiresAt,
          clientEndpoint: tokens.clientEndpoint,
          tokenGeneration: sql`${portals.tokenGeneration} + 1`,
          // The refresh is over: whoever held the lease (this process) is done with it.
          refreshOwner: null,
          refreshUntil: null,
          updatedAt: this.clock.now(),
        })
        .where(and(eq(portals.memberId, memberId), eq(portals.status, 'active'), fromGeneration === undefined ? undefined : eq(portals.tokenGeneration, fromGeneration)))
        .returning({ generation: portals.tokenGeneration });
      return row?.generation;
    });
  }

  /**
   * Takes the portal's refresh lease for `owner` for `leaseMs`, while the stored pair is still of
   * `generation` and no other process holds a live lease: only its holder sends the refresh token
   * (several processes on PostgreSQL, docs/multi-process.md). A holder that died loses the lease
   * when it runs out. One conditional update, so two processes cannot both take it. The lease is
   * set and compared by the database's clock, the one clock every process shares: a process whose
   * own clock runs ahead would otherwise take a live lease.
   */
  async takeRefreshLease(memberId: string, owner: string, generation: number, leaseMs: number): Promise<boolean> {
    const now = this.#leaseNow();
    const result = await this.database.db
      .update(portals)
      .set({ refreshOwner: owner, refreshUntil: sql`${now} + ${leaseMs}` })
      .where(and(eq(portals.memberId, memberId), eq(portals.status, 'active'), eq(portals.tokenGeneration, generation), this.#leaseFreeFor(owner, now)));
    return changes(result) > 0;
  }

  /**
   * The holder keeps its lease for another `leaseMs` while its refresh is still running (a slow
   * authorization server, a wait for a pooled connection). False when the lease is no longer its own.
   */
  async renewRefreshLease(memberId: string, owner: string, leaseMs: number): Promise<boolean> {
    const result = await this.database.db
      .update(portals)
      .set({ refreshUntil: sql`${this.#leaseNow()} + ${leaseMs}` })
      .where(and(eq(portals.memberId, memberId), eq(portals.refreshOwner, owner)));
    return changes(result) > 0;
  }

  /** Now for the refresh leases: the database's clock on PostgreSQL (many processes), ours on SQLite (one). */
  #leaseNow(): SQL {
    return this.database.dialect.kind === 'postgres' ? DATABASE_NOW : sql`${this.clock.now()}`;
  }

  /** No process but `owner` holds a live refresh lease on the portal. */
  #leaseFreeFor(owner: string | undefined, now: SQL): SQL {
    return sql`(${portals.refreshUntil} is null or ${portals.refreshUntil} <= ${now} or ${portals.refreshOwner} = ${owner ?? null})`;
  }

  /** Gives the lease back (a refresh that failed), so the next process need not wait for it to run out. */
  async releaseRefreshLease(memberId: string, owner: string): Promise<void> {
    await this.database.db
      .update(portals)
      .set({ refreshOwner: null, refreshUntil: null })
      .where(and(eq(portals.memberId, memberId), eq(portals.refreshOwner, owner)));
  }

  /**
   * A portal whose refresh token was refused gets working tokens back from a verified call of its
   * installer (robot calls carry the AUTH_USER_ID user's pair, docs/protocols.md B7).
   */
  async recoverTokens(memberId: string, tokens: { accessToken: string; refreshToken: string; expiresAt: number }): Promise<void> {
    return this.#changing(memberId, async () => {
      await this.database.db
        .update(portals)
        .set({
          status: 'active',
          accessToken: this.secrets.seal(tokens.accessToken),
          refreshToken: this.secrets.seal(tokens.refreshToken),
          accessExpiresAt: tokens.expiresAt,
          tokenGeneration: sql`${portals.tokenGeneration} + 1`,
          updatedAt: this.clock.now(),
        })
        .where(and(eq(portals.memberId, memberId), eq(portals.status, 'reauth_required')));
    });
  }

  /**
   * The refresh token of generation `generation` was refused, in a refresh by `owner` (the refresh
   * lease's name for this process). False, leaving the portal as it is, when a newer pair was
   * stored meanwhile or another process holds a live refresh lease (it is refreshing, or refreshed
   * with that token first): a loser's refusal of a token already used is not a lost portal.
   */
  async markReauthRequired(memberId: string, generation: number, owner?: string): Promise<boolean> {
    return this.#changing(memberId, async () => {
      const result = await this.database.db
        .update(portals)
        .set({ status: 'reauth_required', updatedAt: this.clock.now() })
        .where(and(eq(portals.memberId, memberId), eq(portals.tokenGeneration, generation), this.#leaseFreeFor(owner, this.#leaseNow())));
      return changes(result) > 0;
    });
  }

  /**
   * Uninstall: the portal stays known (so late calls are refused cleanly) but loses every secret and
   * its Chat2Desk webhook registration, in one transaction. Only while the uninstall request that
   * arrived at `requestedAt` is still the pending one: a reinstall (or a newer request) while the
   * portal was being asked keeps the portal. When that request asked to delete the app's data
   * (`data[CLEAN]`), the portal's settings, jobs (the event log), effects, deliveries and, unless
   * another portal uses the same account, the Chat2Desk account's cache (`accountKey`) go in the
   * same transaction. Returns the id of the webhook to delete in Chat2Desk (null when none was
   * registered) and whether the data was deleted, or undefined when nothing was wiped.
   */
  async uninstall(memberId: string, requestedAt: number, accountKey?: string): Promise<{ webhookId: number | null; dataDeleted: boolean } | undefined> {
    return this.#changing(memberId, async () => {
      const now = this.clock.now();
      try {
        return await this.database.dialect.transaction(function* (tx) {
          const [wiped] = yield* exec(
            tx
              .update(portals)
              .set({
                status: 'uninstalled',
                accessToken: null,
                refreshToken: null,
                chat2deskToken: null,
                accessExpiresAt: 0,
                uninstallRequestedAt: null,
                uninstallCheckAt: null,
                updatedAt: now,
              })
              .where(and(eq(portals.memberId, memberId), eq(portals.uninstallRequestedAt, requestedAt), ne(portals.status, 'uninstalled')))
              .returning({ clean: portals.uninstallClean }),
          );
          if (!wiped) tx.rollback();
          const [webhook] = yield* exec(
            tx.delete(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId)).returning({ webhookId: c2dWebhooks.webhookId, accountKey: c2dWebhooks.accountKey }),
          );
          if (wiped?.clean) yield* deletePortalData(tx, memberId, accountKey ?? webhook?.accountKey);
          return { webhookId: webhook?.webhookId ?? null, dataDeleted: wiped?.clean === true };
        });
      } catch (error) {
        if (error instanceof TransactionRollbackError) return undefined;
        throw error;
      }
    });
  }

  /**
   * Remembers an ONAPPUNINSTALL until the portal confirms or denies it; a newer one replaces an
   * older, so it is asked about afresh; `clean` (delete the app's data) only ever rises.
   */
  async requestUninstall(memberId: string, clean: boolean): Promise<void> {
    return this.#changing(memberId, async () => {
      const now = this.clock.now();
      const { bool } = this.database.dialect;
      await this.database.db
        .update(portals)
        // A pending request's "delete data" is never lowered by a newer one: anyone holding the
        // application token can send ONAPPUNINSTALL, and must not undo an admin's choice to delete.
        .set({
          uninstallRequestedAt: now,
          uninstallCheckAt: now,
          uninstallClean: sql`case when ${portals.uninstallRequestedAt} is null then ${bool(clean)} else (coalesce(${portals.uninstallClean}, ${bool(false)}) or ${bool(clean)}) end`,
          updatedAt: now,
        })
        .where(and(eq(portals.memberId, memberId), ne(portals.status, 'uninstalled')));
    });
  }

  /**
   * Remembers an ONAPPUNINSTALL to ask about no earlier than `checkAt` (sooner if already due then);
   * a request already pending stays the one asked about, its `clean` raised by this one's.
   */
  async deferUninstallRequest(memberId: string, checkAt: number, clean: boolean): Promise<void> {
    return this.#changing(memberId, async () => {
      const now = this.clock.now();
      const { bool, least } = this.database.dialect;
      await this.database.db
        .update(portals)
        .set({
          // Every expression reads the row as it was: `clean` is taken only when no request was pending.
          uninstallClean: sql`case when ${portals.uninstallRequestedAt} is null then ${bool(clean)} else (coalesce(${portals.uninstallClean}, ${bool(false)}) or ${bool(clean)}) end`,
          uninstallRequestedAt: sql`coalesce(${portals.uninstallRequestedAt}, ${now})`,
          uninstallCheckAt: sql`coalesce(${least(portals.uninstallCheckAt, checkAt)}, ${checkAt})`,
          updatedAt: now,
        })
        .where(and(eq(portals.memberId, memberId), ne(portals.status, 'uninstalled')));
    });
  }

  /** When the portal could not be asked: when to ask again. */
  async scheduleUninstallCheck(memberId: string, at: number): Promise<void> {
    return this.#changing(memberId, async () => {
      await this.database.db
        .update(portals)
        .set({ uninstallCheckAt: at, updatedAt: this.clock.now() })
        .where(and(eq(portals.memberId, memberId), isNotNull(portals.uninstallRequestedAt)));
    });
  }

  /** The portal still accepts our tokens: the request of `requestedAt` was not its own. False when a newer one came meanwhile. */
  async dropUninstallRequest(memberId: string, requestedAt: number): Promise<boolean> {
    return this.#changing(memberId, async () => {
      const result = await this.database.db
        .update(portals)
        .set({ uninstallRequestedAt: null, uninstallCheckAt: null, updatedAt: this.clock.now() })
        .where(and(eq(portals.memberId, memberId), eq(portals.uninstallRequestedAt, requestedAt)));
      return changes(result) > 0;
    });
  }

  /** When the portal's unconfirmed uninstall arrived, if one is pending. */
  async uninstallRequestedAt(memberId: string): Promise<number | undefined> {
    const [row] = await this.database.db.select({ at: portals.uninstallRequestedAt }).from(portals).where(eq(portals.memberId, memberId));
    return row?.at ?? undefined;
  }

  /** Portals with an unconfirmed uninstall to check now (all of them with `everyPending`). */
  async uninstallChecksDue(everyPending = false): Promise<string[]> {
    const rows = await this.database.db
      .select({ memberId: portals.memberId })
      .from(portals)
      .where(and(isNotNull(portals.uninstallRequestedAt), everyPending ? undefined : lte(portals.uninstallCheckAt, this.clock.now())));
    return rows.map((row) => row.memberId);
  }

  async nextUninstallCheckAt(): Promise<number | undefined> {
    const [row] = await this.database.db
      .select({ at: min(portals.uninstallCheckAt) })
      .from(portals)
      .where(isNotNull(portals.uninstallRequestedAt));
    return row?.at ?? undefined;
  }

  /** Active portals with a Chat2Desk token. */
  async connectedToChat2Desk(): Promise<Portal[]> {
    const rows = await this.database.db
      .select()
      .from(portals)
      .where(and(eq(portals.status, 'active'), isNotNull(portals.chat2deskToken)));
    return rows.map(toPortal);
  }

  async chat2deskToken(memberId: string): Promise<string | undefined> {
    const row = await this.database.dialect.get(this.#chat2deskToken, { memberId });
    return row?.token ? this.secrets.open(row.token) : undefined;
  }

  /**
   * Saves the settings a request changed (`changes`, merged into the stored ones in one transaction,
   * so a save that started earlier never undoes a field another save changed meanwhile); a token of
   * undefined keeps the stored one. `guard.integrationType`: the mode the request saw; the save is
   * refused ('mode_changed') when the stored mode is another by now (a mode switch is never undone
   * by a concurrent save). `guard.leaveOpenChannels`: this save takes the portal back to Chat2Desk
   * mode; it is refused ('lines_connected') while a line row exists (one connected during the
   * switch back, to be deactivated first), and it finishes the portal's waiting Open Channels
   * inbound jobs as not sent (src/db/jobs.ts finishWaitingJobs) in the same transaction.
   */
  async saveSettings(
    memberId: string,
    settingChanges: StoredSettings,
    chat2deskToken?: string,
    guard: { integrationType?: string; leaveOpenChannels?: { kind: string; reason: string } } = {},
  ): Promise<Portal | SettingsConflict | undefined> {
    return this.#changing(memberId, async () => {
      const now = this.clock.now();
      const sealedToken = chat2deskToken === undefined ? undefined : this.secrets.seal(chat2deskToken);
      const outcome = await this.database.dialect.transaction(function* (tx): Generator<Statement, SettingsConflict | 'saved' | 'missing', unknown> {
        // Read through an update that changes nothing: it locks the portal's row on PostgreSQL, so
        // concurrent saves (and a line being connected, src/db/open-lines.ts) take their turns.
        const [row] = yield* exec(
          tx
            .update(portals)
            .set({ updatedAt: sql`${portals.updatedAt}` })
            .where(eq(portals.memberId, memberId))
            .returning({ settings: portals.settings }),
        );
        if (!row) return 'missing';
        const stored = JSON.parse(row.settings) as StoredSettings;
        // Read as src/portal-settings.ts does: anything but open_channels is Chat2Desk mode.
        const storedMode = stored.integrationType === 'open_channels' ? 'open_channels' : 'chat2desk';
        if (guard.integrationType !== undefined && guard.integrationType !== storedMode) return { conflict: 'mode_changed' };
        if (guard.leaveOpenChannels) {
          const [line] = yield* exec(tx.select({ lineId: openLines.lineId }).from(openLines).where(eq(openLines.memberId, memberId)).limit(1));
          if (line) return { conflict: 'lines_connected' };
          yield* finishWaitingJobs(tx, { memberId, kind: guard.leaveOpenChannels.kind, reason: guard.leaveOpenChannels.reason }, now);
        }
        const set: Partial<typeof portals.$inferInsert> = { settings: JSON.stringify({ ...stored, ...settingChanges }), updatedAt: now };
        if (sealedToken !== undefined) set.chat2deskToken = sealedToken;
        yield* exec(tx.update(portals).set(set).where(eq(portals.memberId, memberId)));
        return 'saved';
      });
      if (outcome === 'missing') return undefined;
      if (outcome !== 'saved') return outcome;
      return this.get(memberId);
    });
  }
}

/** Why a settings save was refused (see PortalStore.saveSettings). */
export interface SettingsConflict {
  conflict: 'mode_changed' | 'lines_connected';
}

/**
 * What an uninstall with "delete the app's data" removes besides the secrets (issue 8 §2 "Data
 * lifecycle"), inside the caller's transaction. The account's cache is shared by every portal using
 * the same Chat2Desk account: it goes only when no other installed portal has a webhook there.
 * The app keeps no files of a portal on disk: its users' uploads are rows too (migration 0010).
 */
function* deletePortalData(tx: Tx, memberId: string, accountKey: string | undefined): Generator<Statement, void, unknown> {
  yield* exec(tx.update(portals).set({ settings: '{}' }).where(eq(portals.memberId, memberId)));
  yield* exec(tx.delete(jobs).where(eq(jobs.memberId, memberId)));
  yield* exec(tx.delete(effects).where(eq(effects.memberId, memberId)));
  yield* exec(tx.delete(webhookDeliveries).where(eq(webhookDeliveries.memberId, memberId)));
  // The portal's clients' remembered CRM records (src/episodes/records.ts): clients' data too.
  yield* exec(tx.delete(episodeRecords).where(eq(episodeRecords.memberId, memberId)));
  yield* exec(tx.delete(uploadedFiles).where(eq(uploadedFiles.memberId, memberId)));
  yield* exec(tx.delete(openLines).where(eq(openLines.memberId, memberId)));
  yield* exec(tx.delete(openChannelChats).where(eq(openChannelChats.memberId, memberId)));
  if (!accountKey) return;
  const [shared] = yield* exec(
    tx
      .select({ memberId: c2dWebhooks.memberId })
      .from(c2dWebhooks)
      .innerJoin(portals, eq(portals.memberId, c2dWebhooks.memberId))
      .where(and(eq(c2dWebhooks.accountKey, accountKey), ne(portals.status, 'uninstalled'), ne(c2dWebhooks.memberId, memberId)))
      .limit(1),
  );
  if (shared) return;
  for (const table of [c2dClients, c2dPhoneLookups, c2dDialogs, c2dClientDialogs, c2dLists, c2dAccounts]) yield* exec(tx.delete(table).where(eq(table.accountKey, accountKey)));
}

function toPortal(row: PortalRow): Portal {
  return {
    memberId: row.memberId,
    domain: row.domain,
    clientEndpoint: row.clientEndpoint,
    status: row.status as PortalStatus,
    installerUserId: row.installerUserId,
    settings: JSON.parse(row.settings) as StoredSettings,
    hasChat2deskToken: row.chat2deskToken !== null,
    installedAt: row.installedAt,
  };
}

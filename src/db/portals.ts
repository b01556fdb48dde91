import { TransactionRollbackError, and, eq, isNotNull, lte, min, ne, sql } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import type { SecretBox } from '../secrets.js';
import type { Db } from './database.js';
import { c2dWebhooks, portals, type PortalRow } from './schema.js';

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
   * the bound keeps made-up ids from growing it). This store is the only writer of the portals table
   * and one server process owns the database file (database.ts), so every write method below drops
   * the portal's entry through #changed.
   */
  readonly #known = new LRUCache<string, { digest: string; portal: Portal } | { digest: undefined }>({ max: 10_000 });

  constructor(
    private readonly db: Db,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
  ) {
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
    const row = this.#byMemberId.get({ memberId });
    return row ? toPortal(row) : undefined;
  }

  /** The active portal whose stored application token matches the presented one, compared in constant time. */
  async authenticate(memberId: string, applicationToken: string): Promise<Portal | undefined> {
    let known = this.#known.get(memberId);
    if (!known) {
      const row = this.#byMemberId.get({ memberId });
      known = row ? { digest: row.applicationTokenDigest, portal: toPortal(row) } : { digest: undefined };
      this.#known.set(memberId, known);
    }
    if (known.digest === undefined) {
      // Still spend the digest work so an unknown member id is not told apart by timing.
      this.secrets.matches(applicationToken, 'x');
      return undefined;
    }
    if (!this.secrets.matches(applicationToken, known.digest)) return undefined;
    return known.portal.status === 'uninstalled' ? undefined : { ...known.portal };
  }

  #changed(memberId: string): void {
    this.#known.delete(memberId);
  }

  async saveInstall(record: InstallRecord): Promise<Portal> {
    this.#changed(record.memberId);
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
    this.db
      .insert(portals)
      .values({ memberId: record.memberId, ...values })
      .onConflictDoUpdate({ target: portals.memberId, set: values })
      .run();
    return (await this.get(record.memberId))!;
  }

  async tokens(memberId: string): Promise<PortalTokens | undefined> {
    const row = this.#byMemberId.get({ memberId });
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
    this.#changed(memberId);
    const row = this.db
      .update(portals)
      .set({
        accessToken: this.secrets.seal(tokens.accessToken),
        refreshToken: this.secrets.seal(tokens.refreshToken),
        accessExpiresAt: tokens.expiresAt,
        clientEndpoint: tokens.clientEndpoint,
        tokenGeneration: sql`${portals.tokenGeneration} + 1`,
        updatedAt: this.clock.now(),
      })
      .where(and(eq(portals.memberId, memberId), eq(portals.status, 'active'), fromGeneration === undefined ? undefined : eq(portals.tokenGeneration, fromGeneration)))
      .returning({ generation: portals.tokenGeneration })
      .get();
    return row?.generation;
  }

  /**
   * A portal whose refresh token was refused gets working tokens back from a verified call of its
   * installer (robot calls carry the AUTH_USER_ID user's pair, docs/protocols.md B7).
   */
  async recoverTokens(memberId: string, tokens: { accessToken: string; refreshToken: string; expiresAt: number }): Promise<void> {
    this.#changed(memberId);
    this.db
      .update(portals)
      .set({
        status: 'active',
        accessToken: this.secrets.seal(tokens.accessToken),
        refreshToken: this.secrets.seal(tokens.refreshToken),
        accessExpiresAt: tokens.expiresAt,
        tokenGeneration: sql`${portals.tokenGeneration} + 1`,
        updatedAt: this.clock.now(),
      })
      .where(and(eq(portals.memberId, memberId), eq(portals.status, 'reauth_required')))
      .run();
  }

  /**
   * The refresh token of generation `generation` was refused. False when a newer pair was stored
   * meanwhile (another refresh used that token first): the portal is fine then.
   */
  async markReauthRequired(memberId: string, generation: number): Promise<boolean> {
    this.#changed(memberId);
    const { changes } = this.db
      .update(portals)
      .set({ status: 'reauth_required', updatedAt: this.clock.now() })
      .where(and(eq(portals.memberId, memberId), eq(portals.tokenGeneration, generation)))
      .run();
    return changes > 0;
  }

  /**
   * Uninstall: the portal stays known (so late calls are refused cleanly) but loses every secret and
   * its Chat2Desk webhook registration, in one transaction. Only while the uninstall request that
   * arrived at `requestedAt` is still the pending one: a reinstall (or a newer request) while the
   * portal was being asked keeps the portal. Returns the id of the webhook to delete in Chat2Desk
   * (null when none was registered), or undefined when nothing was wiped.
   */
  async uninstall(memberId: string, requestedAt: number): Promise<{ webhookId: number | null } | undefined> {
    this.#changed(memberId);
    try {
      return this.db.transaction((tx) => {
        const { changes } = tx
          .update(portals)
          .set({
            status: 'uninstalled',
            accessToken: null,
            refreshToken: null,
            chat2deskToken: null,
            accessExpiresAt: 0,
            uninstallRequestedAt: null,
            uninstallCheckAt: null,
            updatedAt: this.clock.now(),
          })
          .where(and(eq(portals.memberId, memberId), eq(portals.uninstallRequestedAt, requestedAt), ne(portals.status, 'uninstalled')))
          .run();
        if (changes === 0) tx.rollback();
        const webhook = tx.delete(c2dWebhooks).where(eq(c2dWebhooks.memberId, memberId)).returning({ webhookId: c2dWebhooks.webhookId }).get();
        return { webhookId: webhook?.webhookId ?? null };
      });
    } catch (error) {
      if (error instanceof TransactionRollbackError) return undefined;
      throw error;
    }
  }

  /** Remembers an ONAPPUNINSTALL until the portal confirms or denies it; a newer one replaces an older, so it is asked about afresh. */
  async requestUninstall(memberId: string): Promise<void> {
    this.#changed(memberId);
    const now = this.clock.now();
    this.db
      .update(portals)
      .set({ uninstallRequestedAt: now, uninstallCheckAt: now, updatedAt: now })
      .where(and(eq(portals.memberId, memberId), ne(portals.status, 'uninstalled')))
      .run();
  }

  /**
   * Remembers an ONAPPUNINSTALL to ask about no earlier than `checkAt` (sooner if already due then);
   * a request already pending stays the one asked about.
   */
  async deferUninstallRequest(memberId: string, checkAt: number): Promise<void> {
    this.#changed(memberId);
    const now = this.clock.now();
    this.db
      .update(portals)
      .set({
        uninstallRequestedAt: sql`coalesce(${portals.uninstallRequestedAt}, ${now})`,
        uninstallCheckAt: sql`coalesce(min(${portals.uninstallCheckAt}, ${checkAt}), ${checkAt})`,
        updatedAt: now,
      })
      .where(and(eq(portals.memberId, memberId), ne(portals.status, 'uninstalled')))
      .run();
  }

  /** When the portal could not be asked: when to ask again. */
  async scheduleUninstallCheck(memberId: string, at: number): Promise<void> {
    this.#changed(memberId);
    this.db
      .update(portals)
      .set({ uninstallCheckAt: at, updatedAt: this.clock.now() })
      .where(and(eq(portals.memberId, memberId), isNotNull(portals.uninstallRequestedAt)))
      .run();
  }

  /** The portal still accepts our tokens: the request of `requestedAt` was not its own. False when a newer one came meanwhile. */
  async dropUninstallRequest(memberId: string, requestedAt: number): Promise<boolean> {
    this.#changed(memberId);
    const { changes } = this.db
      .update(portals)
      .set({ uninstallRequestedAt: null, uninstallCheckAt: null, updatedAt: this.clock.now() })
      .where(and(eq(portals.memberId, memberId), eq(portals.uninstallRequestedAt, requestedAt)))
      .run();
    return changes > 0;
  }

  /** When the portal's unconfirmed uninstall arrived, if one is pending. */
  async uninstallRequestedAt(memberId: string): Promise<number | undefined> {
    const row = this.db.select({ at: portals.uninstallRequestedAt }).from(portals).where(eq(portals.memberId, memberId)).get();
    return row?.at ?? undefined;
  }

  /** Portals with an unconfirmed uninstall to check now (all of them with `everyPending`). */
  async uninstallChecksDue(everyPending = false): Promise<string[]> {
    return this.db
      .select({ memberId: portals.memberId })
      .from(portals)
      .where(and(isNotNull(portals.uninstallRequestedAt), everyPending ? undefined : lte(portals.uninstallCheckAt, this.clock.now())))
      .all()
      .map((row) => row.memberId);
  }

  async nextUninstallCheckAt(): Promise<number | undefined> {
    const row = this.db
      .select({ at: min(portals.uninstallCheckAt) })
      .from(portals)
      .where(isNotNull(portals.uninstallRequestedAt))
      .get();
    return row?.at ?? undefined;
  }

  /** Active portals with a Chat2Desk token. */
  async connectedToChat2Desk(): Promise<Portal[]> {
    return this.db
      .select()
      .from(portals)
      .where(and(eq(portals.status, 'active'), isNotNull(portals.chat2deskToken)))
      .all()
      .map(toPortal);
  }

  async chat2deskToken(memberId: string): Promise<string | undefined> {
    const row = this.#chat2deskToken.get({ memberId });
    return row?.token ? this.secrets.open(row.token) : undefined;
  }

  /** Saves settings; a token of undefined keeps the stored one. */
  async saveSettings(memberId: string, settings: StoredSettings, chat2deskToken?: string): Promise<Portal | undefined> {
    this.#changed(memberId);
    const set: Partial<typeof portals.$inferInsert> = { settings: JSON.stringify(settings), updatedAt: this.clock.now() };
    if (chat2deskToken !== undefined) set.chat2deskToken = this.secrets.seal(chat2deskToken);
    this.db.update(portals).set(set).where(eq(portals.memberId, memberId)).run();
    return this.get(memberId);
  }
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

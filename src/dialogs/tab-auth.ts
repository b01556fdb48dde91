import { type RateLimiterAbstract, RateLimiterRes } from 'rate-limiter-flexible';
import { type Limiters, memoryLimiters } from '../db/rate-limiters.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { OpenChannelChat } from '../open-channels/crm-chat.js';
import { PageAuthError } from '../pages/page-auth.js';
import { entityTypeOfPlacement } from './placements.js';
import type { CrmRecordRef, RecordPhones } from './record-phones.js';
import type { TabClaims, TabTokens } from './tab-token.js';

/** An expired tab token still names its user and record for a renewal this long after it expired (a card left open for hours). */
const RENEWABLE_FOR_MS = 12 * 3600_000;
/** Renewals one user may ask for per minute: each one spends a batch of the portal's budget as the user. */
const RENEWALS_PER_USER_PER_MINUTE = 6;

export interface TabSession {
  portal: Portal;
  claims: TabClaims;
  token: string;
  /** What the page shows of the record's Open Channel chat (Open Channels mode only); not part of the token's reach. */
  openChannelChat?: OpenChannelChat;
}

/**
 * Who opened a CRM card tab and for which record. As for the app page (src/pages/page-auth.ts) the
 * POST's only secret is the application token; the user, their rights and the record's phones are
 * what the portal answers to the posted AUTH_ID (src/dialogs/record-phones.ts). The tab gets a
 * token bound to that record and those phones (src/dialogs/tab-token.ts); a renewal reads the phones
 * again, since the record may have changed.
 */
export class TabAuth {
  readonly #renewals: RateLimiterAbstract;

  /** `limiters`: where the renewal cap is counted (src/db/rate-limiters.ts); this process's memory by default. */
  constructor(private readonly deps: { portals: PortalStore; tokens: TabTokens; recordPhones: RecordPhones; limiters?: Limiters }) {
    this.#renewals = (deps.limiters ?? memoryLimiters())({ keyPrefix: 'tab-renewals', points: RENEWALS_PER_USER_PER_MINUTE, duration: 60 });
  }

  async open(opening: { memberId: string; applicationToken: string; authId: string; placement: string; placementOptions: string }): Promise<TabSession> {
    if (!opening.memberId || !opening.applicationToken || !opening.authId) throw new PageAuthError('The tab request lacks member_id, APPLICATION_TOKEN or AUTH_ID', 400);
    const record = tabRecord(opening.placement, opening.placementOptions);
    const portal = await this.deps.portals.authenticate(opening.memberId, opening.applicationToken);
    if (!portal) throw new PageAuthError('The app is not installed on this portal, or the application token does not match', 401);
    return this.#issue(portal, opening.authId, record);
  }

  /** A fresh AUTH_ID from the parent frame (refreshAuth) for the user and record of an earlier tab token. */
  async renew(previousToken: string, authId: string): Promise<TabSession> {
    if (!authId) throw new PageAuthError('Send authId: the access token the parent frame gave the tab', 400);
    const previous = this.deps.tokens.verify(previousToken, { graceMs: RENEWABLE_FOR_MS });
    if (!previous) throw new PageAuthError('The tab token is not ours or too old; open the card again', 401);
    const portal = await this.deps.portals.get(previous.memberId);
    if (!portal || portal.status === 'uninstalled' || portal.installedAt !== previous.generation) {
      throw new PageAuthError('The app was uninstalled or installed again since this tab opened; open the card again', 401);
    }
    try {
      await this.#renewals.consume(`${previous.memberId} ${previous.userId}`);
    } catch (refusal) {
      if (!(refusal instanceof RateLimiterRes)) throw refusal;
      const retryAfterSeconds = Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
      throw new PageAuthError(`Too many renewals of this tab; open the card again in ${retryAfterSeconds} s`, 429, false, retryAfterSeconds);
    }
    const session = await this.#issue(portal, authId, { entityTypeId: previous.scope.entityTypeId, entityId: previous.scope.entityId });
    // The AUTH_ID must be the same user's: a token of ours never changes hands.
    if (session.claims.userId !== previous.userId) throw new PageAuthError('AUTH_ID belongs to another user', 401);
    return session;
  }

  async #issue(portal: Portal, authId: string, record: CrmRecordRef): Promise<TabSession> {
    const reading = await this.deps.recordPhones.read(portal, authId, record);
    const { token, claims } = this.deps.tokens.issue({
      memberId: portal.memberId,
      userId: reading.userId,
      generation: portal.installedAt,
      admin: reading.admin,
      checkedAt: reading.askedAt,
      scope: { kind: 'record', entityTypeId: record.entityTypeId, entityId: record.entityId, phones: reading.phones },
    });
    return { portal, claims, token, ...(reading.openChannelChat ? { openChannelChat: reading.openChannelChat } : {}) };
  }
}

/** PLACEMENT → entity type, PLACEMENT_OPTIONS (a JSON string, docs/protocols.md B9) → the record id. */
export function tabRecord(placement: string, placementOptions: string): CrmRecordRef {
  const entityTypeId = entityTypeOfPlacement(placement);
  if (entityTypeId === undefined) throw new PageAuthError(`This page opens only as a CRM card tab, not as ${placement || 'no placement'}`, 400);
  let options: unknown;
  try {
    options = JSON.parse(placementOptions);
  } catch {
    options = undefined;
  }
  const raw = options && typeof options === 'object' ? (options as { ID?: unknown }).ID : undefined;
  // Bitrix24 writes the id as a string of digits; a number is taken too. Anything Number() would
  // also read ("1e3", "0x10", " 7", true) names no record: it goes no further, into a batch command.
  const digits = typeof raw === 'number' ? String(raw) : raw;
  if (typeof digits !== 'string' || !/^[1-9]\d{0,14}$/.test(digits)) throw new PageAuthError('PLACEMENT_OPTIONS does not name the record (ID)', 400);
  return { entityTypeId, entityId: Number(digits) };
}

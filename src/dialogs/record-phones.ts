import { isAdminProfile, refusesToken } from '../bitrix24/admin.js';
import { OAuthError } from '../bitrix24/errors.js';
import type { OAuthServer } from '../bitrix24/oauth.js';
import { CallerChecksExhausted, type Bitrix24Rest } from '../bitrix24/rest-client.js';
import { phpList, phpMap } from '../bitrix24/values.js';
import type { Clock } from '../clock.js';
import type { Portal } from '../db/portals.js';
import { type OpenChannelChat, lastChatCommand, readLastChat } from '../open-channels/crm-chat.js';
import { PageAuthError } from '../pages/page-auth.js';
import { normalizePhone } from '../phone.js';
import { readIntegrationType, readSettings } from '../portal-settings.js';

/** The CRM record a tab shows: entity type (lead 1, deal 2, contact 3, company 4, smart process ≥ 128…) and id. */
export interface CrmRecordRef {
  entityTypeId: number;
  entityId: number;
}

/** What one tab opening learned from the portal, as the user. */
export interface RecordReading {
  userId: number;
  admin: boolean;
  /** International digits, without duplicates, in the record's order (its own, then contacts, then company). */
  phones: string[];
  /** In Open Channels mode, for a lead, deal, contact or company: the record's latest Open Channel chat. */
  openChannelChat?: OpenChannelChat;
  askedAt: number;
}

/** How many of a deal's or smart-process item's contacts are read (one batch command each). */
export const MAX_RECORD_CONTACTS = 10;

/** A user who may not read the record sees this and nothing else: whether it exists is not told. */
export const RECORD_REFUSED = 'You cannot see this CRM record, or it no longer exists';

const LEGACY_GET: Record<number, string> = { 1: 'crm.lead.get', 3: 'crm.contact.get', 4: 'crm.company.get' };

/**
 * Reads a record's phones with the user's own token, in one batch that also asks who the user is
 * (`profile`), at the portal's stored REST endpoint only; in Open Channels mode the same batch asks
 * for the record's latest Open Channel chat (src/open-channels/crm-chat.ts), so it costs no request.
 * The user's rights decide: a record they cannot read answers an error in the batch (docs/protocols.md B18) and the tab is refused. A deal's
 * phones are its contacts' and its company's (crm.deal.contact.items.get, crm.deal.get COMPANY_ID); a
 * smart-process item's likewise through crm.item.get (contactIds, companyId). Related records are
 * reached through batch references (`$result[…]`, docs/protocols.md B3 batch), so it stays one request.
 * The token must also be one the authorization server issued to this app for this portal (as for the
 * app page, src/settings-service.ts), asked only after the portal accepted it.
 */
export class RecordPhones {
  constructor(
    private readonly deps: {
      rest: Pick<Bitrix24Rest, 'callAs'>;
      oauth: Pick<OAuthServer, 'appInfo' | 'appClientId'>;
      defaultApiUrl: string;
      clock: Clock;
    },
  ) {}

  async read(portal: Portal, authId: string, record: CrmRecordRef): Promise<RecordReading> {
    if (!authId) throw new PageAuthError('The tab request lacks AUTH_ID', 400);
    const cmd = recordCommands(record);
    const chatCommand = readIntegrationType(portal.settings) === 'open_channels' ? lastChatCommand(record) : undefined;
    if (chatCommand) cmd.olchat = chatCommand;
    let answer: { result?: unknown; result_error?: unknown };
    try {
      answer = await this.deps.rest.callAs(portal.memberId, portal.clientEndpoint, authId, 'batch', { halt: 0, cmd });
    } catch (error) {
      if (error instanceof CallerChecksExhausted) throw new PageAuthError(error.message, 429, false, error.retryAfterSeconds);
      if (refusesToken(error)) throw new PageAuthError('Bitrix24 did not accept the access token', 401);
      throw new PageAuthError(`Bitrix24 could not be asked about this record: ${error instanceof Error ? error.message : String(error)}`, 502);
    }
    const results = phpMap(answer.result);
    const errors = phpMap(answer.result_error);
    const profile = results.me as { ID?: unknown; ADMIN?: unknown } | undefined;
    const userId = Number(profile?.ID);
    if (!profile || !Number.isInteger(userId) || userId <= 0) throw new PageAuthError('Bitrix24 did not say who you are', 401);
    await this.#provenOurs(portal, authId);
    if (errors.rec !== undefined || results.rec === undefined) throw new PageAuthError(RECORD_REFUSED, 403);
    const country = readSettings(portal.settings, this.deps.defaultApiUrl).defaultCountry ?? undefined;
    const phones: string[] = [];
    const order = ['rec', ...Object.keys(cmd).filter((name) => name.startsWith('contact')), 'company'];
    for (const key of order.filter((name) => name in cmd)) {
      const found = key === 'rec' ? recordOwnPhones(record, results.rec) : multifieldPhones(results[key]);
      for (const value of found) {
        const digits = safeNormalize(value, country);
        if (digits && !phones.includes(digits)) phones.push(digits);
      }
    }
    const reading: RecordReading = { userId, admin: isAdminProfile(profile), phones, askedAt: this.deps.clock.now() };
    if (chatCommand) reading.openChannelChat = readLastChat(results.olchat, errors.olchat);
    return reading;
  }

  async #provenOurs(portal: Portal, authId: string): Promise<void> {
    try {
      const verified = await this.deps.oauth.appInfo(authId);
      if (verified.clientId === this.deps.oauth.appClientId && verified.memberId === portal.memberId) return;
    } catch (error) {
      if (!(error instanceof OAuthError) || error.code === 'unreachable' || error.httpStatus >= 500) {
        throw new PageAuthError('The Bitrix24 authorization server could not be asked; try again', 502);
      }
    }
    throw new PageAuthError('Bitrix24 did not accept the access token', 401);
  }
}

/**
 * The batch: `me` (profile), `rec` (the record; its error = no access), and for a deal or smart
 * process `links`, `contact0…9` and `company` through references. A missing reference (fewer
 * contacts, no company) makes only that command fail, which is ignored.
 */
export function recordCommands(record: CrmRecordRef): Record<string, string> {
  const { entityTypeId, entityId } = record;
  const cmd: Record<string, string> = { me: 'profile' };
  const legacy = LEGACY_GET[entityTypeId];
  if (legacy) {
    cmd.rec = `${legacy}?id=${entityId}`;
    return cmd;
  }
  const contactRef = (index: number) => (entityTypeId === 2 ? `$result[links][${index}][CONTACT_ID]` : `$result[rec][item][contactIds][${index}]`);
  if (entityTypeId === 2) {
    cmd.rec = `crm.deal.get?id=${entityId}`;
    cmd.links = `crm.deal.contact.items.get?id=${entityId}`;
    cmd.company = 'crm.company.get?id=$result[rec][COMPANY_ID]';
  } else {
    cmd.rec = `crm.item.get?entityTypeId=${entityTypeId}&id=${entityId}`;
    cmd.company = 'crm.company.get?id=$result[rec][item][companyId]';
  }
  for (let index = 0; index < MAX_RECORD_CONTACTS; index++) cmd[`contact${index}`] = `crm.contact.get?id=${contactRef(index)}`;
  return cmd;
}

/** A lead's, contact's or company's own PHONE multifield; deals and smart-process items have none of their own. */
function recordOwnPhones(record: CrmRecordRef, value: unknown): string[] {
  return LEGACY_GET[record.entityTypeId] ? multifieldPhones(value) : [];
}

/** PHONE multifield items `{ID, VALUE_TYPE, VALUE, TYPE_ID}` (docs/protocols.md B10). */
function multifieldPhones(value: unknown): string[] {
  if (!value || typeof value !== 'object') return [];
  return phpList((value as { PHONE?: unknown }).PHONE)
    .map((item) => (item && typeof item === 'object' ? (item as { VALUE?: unknown }).VALUE : undefined))
    .filter((phone): phone is string => typeof phone === 'string' && phone.trim() !== '');
}

function safeNormalize(value: string, country: string | undefined): string | undefined {
  try {
    return normalizePhone(value, country)?.digits;
  } catch {
    return undefined; // beyond the normaliser's bounds: not a phone anyone can dial
  }
}

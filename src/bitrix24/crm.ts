import type { PortalRest } from '../activities/activity.js';
import type { ClientRecord, CrmEntityType } from '../db/episode-records.js';
import { commandErrorKind, describeCommandError, type BatchCommandError } from './batch-errors.js';
import { Bitrix24Error } from './errors.js';

export type { ClientRecord, CrmEntityType };

/**
 * Where our records come from, in the CRM's fields for an external origin (ORIGINATOR_ID = the
 * source, ORIGIN_ID = the item there; docs/protocols.md B15): a creation whose answer was lost is
 * found by listing these, not repeated.
 */
export const ORIGINATOR_ID = 'chat2desk';

/** A record that may take an episode: an in-progress lead or deal, a contact or a company. */
export interface CrmCandidate extends ClientRecord {
  /** DATE_MODIFY, ms: the most recently modified wins a tie. */
  modifiedAt: number;
  /** A deal's contact and company: whose deal it is. */
  contactId?: number;
  companyId?: number;
}

interface ListedRecord {
  ID: string | number;
  DATE_MODIFY?: string;
  CONTACT_ID?: string | number | null;
  COMPANY_ID?: string | number | null;
  STATUS_SEMANTIC_ID?: string;
  CLOSED?: string;
}

/** crm.duplicate.findbycomm takes at most 20 values (docs/protocols.md B10). */
const FINDBYCOMM_MAX_VALUES = 20;
/** IDs per list filter: one page of 50 answers them all. */
const LIST_FILTER_MAX_IDS = 50;

const listMethod = (type: CrmEntityType) => `crm.${type}.list`;

/** A command's error inside a batch, as the error a single call would have thrown. */
export function commandError(method: string, error: BatchCommandError): Bitrix24Error {
  // Transient per-command errors are retried like a refused call (503); the rest are refusals (400).
  return new Bitrix24Error(method, error.error, error.error_description, commandErrorKind(error) === 'transient' ? 503 : 400);
}

function resultOf<T>(outcome: { results: Record<string, unknown>; errors: Record<string, BatchCommandError> }, key: string, method: string): T {
  const error = outcome.errors[key];
  if (error) throw commandError(method, error);
  return outcome.results[key] as T;
}

const idOf = (value: unknown): number | undefined => {
  const id = Number(value);
  return Number.isSafeInteger(id) && id > 0 ? id : undefined;
};

const modifiedAt = (record: ListedRecord): number => {
  const at = record.DATE_MODIFY ? Date.parse(record.DATE_MODIFY) : Number.NaN;
  return Number.isFinite(at) ? at : 0;
};

/**
 * The client's records in the CRM: the one remembered for this Chat2Desk client (if it is still
 * there and in progress), else every lead, contact and company with one of the phones
 * (crm.duplicate.findbycomm, docs/protocols.md B10); then the deals in progress of those contacts
 * and companies. Leads count only in progress, deals only open. Two batch requests at most.
 */
export async function findCandidates(rest: PortalRest, remembered: ClientRecord | undefined, phones: string[]): Promise<{ candidates: CrmCandidate[]; rememberedGone: boolean }> {
  const first: Array<{ key: string; method: string; params: Record<string, unknown> }> = [];
  if (remembered) {
    first.push({
      key: 'remembered',
      method: listMethod(remembered.entityType),
      params: { filter: { ID: remembered.entityId }, select: ['ID', 'DATE_MODIFY', 'STATUS_SEMANTIC_ID', 'CLOSED', 'CONTACT_ID', 'COMPANY_ID'] },
    });
  } else if (phones.length > 0) {
    first.push({ key: 'phones', method: 'crm.duplicate.findbycomm', params: { type: 'PHONE', values: phones.slice(0, FINDBYCOMM_MAX_VALUES) } });
  }
  const ids: Record<'lead' | 'contact' | 'company', number[]> = { lead: [], contact: [], company: [] };
  let rememberedGone = false;
  const candidates: CrmCandidate[] = [];
  if (first.length > 0) {
    const outcome = await rest.batch(first, { idempotent: true });
    if (remembered) {
      const [record] = resultOf<ListedRecord[]>(outcome, 'remembered', listMethod(remembered.entityType)) ?? [];
      if (!record || !inProgress(remembered.entityType, record)) rememberedGone = true;
      else if (remembered.entityType === 'deal') candidates.push(dealCandidate(record));
      else {
        candidates.push({ ...remembered, modifiedAt: modifiedAt(record) });
        if (remembered.entityType !== 'lead') ids[remembered.entityType].push(remembered.entityId);
      }
    } else {
      // Nothing found is `[]` (a PHP empty array), hits an object by type (docs/protocols.md B10).
      const found = resultOf<Record<string, unknown> | unknown[]>(outcome, 'phones', 'crm.duplicate.findbycomm');
      if (found && !Array.isArray(found)) {
        for (const type of ['lead', 'contact', 'company'] as const) {
          const list = found[type.toUpperCase()];
          if (Array.isArray(list))
            ids[type].push(
              ...list
                .map(idOf)
                .filter((id): id is number => id !== undefined)
                .slice(0, LIST_FILTER_MAX_IDS),
            );
        }
      }
    }
  }
  if (rememberedGone && phones.length > 0) return { ...(await findCandidates(rest, undefined, phones)), rememberedGone };
  const second: Array<{ key: string; method: string; params: Record<string, unknown> }> = [];
  const select = ['ID', 'DATE_MODIFY', 'CONTACT_ID', 'COMPANY_ID'];
  const order = { DATE_MODIFY: 'DESC' };
  if (!remembered) {
    if (ids.lead.length) second.push({ key: 'lead', method: 'crm.lead.list', params: { filter: { ID: ids.lead, STATUS_SEMANTIC_ID: 'P' }, select, order } });
    if (ids.contact.length) second.push({ key: 'contact', method: 'crm.contact.list', params: { filter: { ID: ids.contact }, select, order } });
    if (ids.company.length) second.push({ key: 'company', method: 'crm.company.list', params: { filter: { ID: ids.company }, select, order } });
  }
  if (ids.contact.length) second.push({ key: 'contact_deals', method: 'crm.deal.list', params: { filter: { CONTACT_ID: ids.contact, CLOSED: 'N' }, select, order } });
  if (ids.company.length) second.push({ key: 'company_deals', method: 'crm.deal.list', params: { filter: { COMPANY_ID: ids.company, CLOSED: 'N' }, select, order } });
  if (second.length === 0) return { candidates, rememberedGone };
  const outcome = await rest.batch(second, { idempotent: true });
  for (const command of second) {
    const records = resultOf<ListedRecord[]>(outcome, command.key, command.method) ?? [];
    for (const record of records) {
      const id = idOf(record.ID);
      if (id === undefined) continue;
      if (command.key.endsWith('_deals')) candidates.push(dealCandidate(record));
      else candidates.push({ entityType: command.key as CrmEntityType, entityId: id, modifiedAt: modifiedAt(record) });
    }
  }
  return { candidates: dedupe(candidates), rememberedGone };
}

function dealCandidate(record: ListedRecord): CrmCandidate {
  return { entityType: 'deal', entityId: idOf(record.ID) ?? 0, modifiedAt: modifiedAt(record), contactId: idOf(record.CONTACT_ID), companyId: idOf(record.COMPANY_ID) };
}

/** A lead in progress (not converted, not junk) and an open deal; contacts and companies always. */
function inProgress(type: CrmEntityType, record: ListedRecord): boolean {
  if (type === 'lead') return record.STATUS_SEMANTIC_ID === undefined || record.STATUS_SEMANTIC_ID === 'P';
  if (type === 'deal') return record.CLOSED !== 'Y';
  return true;
}

function dedupe(candidates: CrmCandidate[]): CrmCandidate[] {
  const seen = new Set<string>();
  return candidates.filter((candidate) => {
    const key = `${candidate.entityType}:${candidate.entityId}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** A record to create: its CRM fields, ORIGINATOR_ID / ORIGIN_ID included. */
export interface NewRecord {
  entityType: 'lead' | 'contact' | 'deal';
  fields: Record<string, unknown>;
}

/** crm.{lead|contact|deal}.add: not idempotent (docs/protocols.md B10); answers the new id. */
export async function createRecord(rest: PortalRest, record: NewRecord): Promise<number> {
  const id = Number(await rest.call<number | string>(`crm.${record.entityType}.add`, { fields: record.fields, params: { REGISTER_SONET_EVENT: 'Y' } }, { idempotent: false }));
  if (!Number.isSafeInteger(id) || id <= 0) throw new Bitrix24Error(`crm.${record.entityType}.add`, 'ERROR_UNEXPECTED_ANSWER', 'no record id in the answer', 502);
  return id;
}

/** Our record of an episode, found by its origin fields: how a creation whose answer was lost is settled. */
export async function findByOrigin(rest: PortalRest, entityType: NewRecord['entityType'], originId: string): Promise<number | undefined> {
  const found = await rest.call<ListedRecord[]>(
    listMethod(entityType),
    { filter: { ORIGINATOR_ID: ORIGINATOR_ID, ORIGIN_ID: originId }, select: ['ID'], order: { ID: 'ASC' } },
    { idempotent: true },
  );
  return Array.isArray(found) ? idOf(found[0]?.ID) : undefined;
}

/**
 * What a refused creation says: the portal's required field, or its access refusal. Bitrix24 names
 * a missing required field only in `error_description` (no code; docs/protocols.md B15), so its
 * text is passed on: it names the field.
 */
export function describeCreationRefusal(entityType: string, error: Bitrix24Error): string {
  if (error.accessDenied || /access denied/i.test(error.description))
    return `Bitrix24 refused to create the ${entityType}: the app's user may not add ${entityType}s (access denied)`;
  if (/required|обязательн|obligatori/i.test(error.description)) {
    return `Bitrix24 refused to create the ${entityType}: the portal requires a field the app does not fill (${error.description}); map it in extraFields or make it optional`;
  }
  return `Bitrix24 refused to create the ${entityType}: ${describeCommandError({ error: error.code, error_description: error.description })}`;
}

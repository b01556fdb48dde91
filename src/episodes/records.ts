import type { RobotRun } from '../activities/activity.js';
import { bitrixUserForOperator } from '../activities/operators.js';
import { Bitrix24Error, certainlyNotRun } from '../bitrix24/errors.js';
import { ORIGINATOR_ID, createRecord, describeCreationRefusal, findByOrigin, findCandidates, type ClientRecord, type CrmCandidate, type NewRecord } from '../bitrix24/crm.js';
import type { EpisodeRecordStore } from '../db/episode-records.js';
import type { Effect } from '../jobs/ledger.js';
import { RobotFailure } from '../run-failure.js';
import type { Episode } from './episode.js';
import { pickRecord } from './matching.js';

/** The record an episode's comment goes to, and whether we created it for this episode. */
export interface EpisodeRecord {
  record: ClientRecord;
  created: boolean;
}

/** Ledger keys of the records an episode creates (src/jobs/ledger.ts). The record the comment goes to: */
export const recordKey = (requestId: number) => `record:episode:${requestId}`;
/**
 * The record a matched episode went to. Matching is a choice (the most recently modified deal wins),
 * and a retry, a re-run or a poll hours later could choose otherwise: kept in the ledger, the choice
 * is made once, so one episode's comment never lands on two records (its comment key names the record).
 */
export const targetKey = (requestId: number) => `target:episode:${requestId}`;
/** contact_deal mode: the contact the new deal belongs to. */
const contactKey = (requestId: number) => `record:episode:${requestId}:contact`;

interface CreationIntent extends Record<string, unknown> {
  entityType: NewRecord['entityType'];
  fields: Record<string, unknown>;
}

/**
 * Finds the client's record or creates what the settings say (README "Closed dialogs → CRM
 * records"). A creation started by an earlier attempt is finished first (settled by its origin
 * fields), so a crash or a lost answer never makes a second record.
 */
export async function recordForEpisode(run: RobotRun, store: EpisodeRecordStore, episode: Episode & { clientId: number }): Promise<EpisodeRecord> {
  const memberId = run.portal.memberId;
  const { requestId } = episode;
  const chosen = await run.ledger.peek<ClientRecord>(targetKey(requestId));
  if (chosen?.state === 'done') return { record: chosen.value, created: false };
  const started = (await run.ledger.peek(recordKey(requestId))) !== undefined || (await run.ledger.peek(contactKey(requestId))) !== undefined;
  let matched: CrmCandidate | undefined;
  if (!started) {
    const remembered = await store.get(memberId, episode.clientId);
    const found = await findCandidates(run.bitrix24, remembered, episode.phones);
    if (found.rememberedGone && remembered) await store.forget(memberId, episode.clientId, remembered);
    matched = pickRecord(found.candidates, run.settings.matchOrder);
    const needsDeal = run.settings.episodeEntity === 'contact_deal' && (matched?.entityType === 'contact' || matched?.entityType === 'company');
    if (matched && !needsDeal) {
      const record = await chooseOnce(run, requestId, { entityType: matched.entityType, entityId: matched.entityId });
      const contact =
        matched.entityType === 'deal' && matched.contactId && record.entityId === matched.entityId ? ({ entityType: 'contact', entityId: matched.contactId } as const) : undefined;
      await store.remember(memberId, episode.clientId, contact ?? record);
      return { record, created: false };
    }
  }
  const common = await commonFields(run, episode);
  const person: Record<string, unknown> = { ...common, NAME: episode.name || episode.phones[0] || `Chat2Desk ${episode.clientId}` };
  if (episode.phones.length > 0) person.PHONE = episode.phones.map((phone) => ({ VALUE: phone, VALUE_TYPE: 'MOBILE' }));
  const title = `Chat2Desk: ${episode.name || episode.phones[0] || `#${episode.clientId}`}`;
  let record: ClientRecord;
  let remember: ClientRecord;
  switch (run.settings.episodeEntity) {
    case 'lead':
      record = remember = await createOnce(run, recordKey(requestId), { entityType: 'lead', fields: { ...person, TITLE: title } }, requestId);
      break;
    case 'contact':
      record = remember = await createOnce(run, recordKey(requestId), { entityType: 'contact', fields: person }, requestId);
      break;
    case 'contact_deal': {
      // The deal's owner: the matched contact or company, else a contact of ours (created once).
      let owner: ClientRecord | undefined = matched;
      if (!owner && (!started || (await run.ledger.peek(contactKey(requestId))) !== undefined)) {
        owner = await createOnce(run, contactKey(requestId), { entityType: 'contact', fields: person }, requestId);
      }
      const deal: Record<string, unknown> = { ...common, TITLE: title, CATEGORY_ID: run.settings.dealCategoryId ?? 0 };
      if (run.settings.dealStageId) deal.STAGE_ID = run.settings.dealStageId;
      if (owner?.entityType === 'contact') deal.CONTACT_ID = owner.entityId;
      if (owner?.entityType === 'company') deal.COMPANY_ID = owner.entityId;
      // No owner: an earlier attempt was creating the deal of a matched contact or company, and its claim holds the fields.
      record = await createOnce(run, recordKey(requestId), { entityType: 'deal', fields: deal }, requestId, owner === undefined);
      remember = owner?.entityType === 'contact' ? owner : record;
      break;
    }
  }
  await store.remember(memberId, episode.clientId, remember);
  return { record, created: true };
}

/**
 * Creates the record at most once under `key`: the ledger claims it, and a claim whose outcome is
 * unknown is settled by listing our origin fields (ORIGINATOR_ID "chat2desk", ORIGIN_ID the
 * request), so a lost answer is found. `fromClaim`: only an earlier claim's fields may be used.
 */
/** Keeps the first choice of a matched record for the episode (`targetKey`); nothing outside us changes. */
async function chooseOnce(run: RobotRun, requestId: number, record: ClientRecord): Promise<ClientRecord> {
  const effect: Effect<ClientRecord> = {
    key: targetKey(requestId),
    intent: { ...record },
    busy: `another run is choosing the CRM record for Chat2Desk request ${requestId} right now`,
    inDoubt: `the CRM record for Chat2Desk request ${requestId} could not be told`,
    unreachable: `could not read the CRM record chosen for Chat2Desk request ${requestId}`,
    // An unrecorded choice was never acted on (the comment is pinned after it is recorded): choose again.
    settle: async () => 'absent',
    act: async () => record,
    refused: () => false,
  };
  return (await run.ledger.once(effect)).value;
}

async function createOnce(run: RobotRun, key: string, record: NewRecord, requestId: number, fromClaim = false): Promise<ClientRecord> {
  const originId = String(requestId);
  const intent: CreationIntent = { entityType: record.entityType, fields: { ...record.fields, ORIGINATOR_ID, ORIGIN_ID: originId } };
  const effect: Effect<ClientRecord> = {
    key,
    intent: fromClaim ? {} : intent,
    busy: `another run is creating the CRM record for Chat2Desk request ${requestId} right now`,
    inDoubt: `the CRM record for Chat2Desk request ${requestId} may already exist`,
    unreachable: `could not check whether the CRM record for Chat2Desk request ${requestId} exists`,
    settle: async (claim) => {
      const entityType = (claim.intent as Partial<CreationIntent>).entityType ?? record.entityType;
      const id = await findByOrigin(run.bitrix24, entityType, originId);
      return id !== undefined ? { found: { entityType, entityId: id } } : 'absent';
    },
    act: async (claim) => {
      const planned = claim.intent as Partial<CreationIntent>;
      // The claim was given back between our look and our claim: start over with a fresh plan.
      if (!planned.entityType || !planned.fields) throw new Error(`the plan for the CRM record of Chat2Desk request ${requestId} is gone; trying again`);
      try {
        return { entityType: planned.entityType, entityId: await createRecord(run.bitrix24, { entityType: planned.entityType, fields: planned.fields }) };
      } catch (error) {
        // A refusal (a field the portal requires, access) will not change by waiting and created nothing.
        if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500)
          throw new RobotFailure(describeCreationRefusal(planned.entityType, error));
        throw error;
      }
    },
    refused: (error) => error instanceof RobotFailure || certainlyNotRun(error),
  };
  return (await run.ledger.once(effect)).value;
}

/** Fields every record we create carries: source, responsible, the mapped client fields. */
async function commonFields(run: RobotRun, episode: Episode): Promise<Record<string, unknown>> {
  const fields: Record<string, unknown> = {};
  for (const { source, field } of run.settings.extraFields) {
    const value = clientField(episode.client, source);
    if (value !== undefined) fields[field] = value;
  }
  if (run.settings.sourceId) fields.SOURCE_ID = run.settings.sourceId;
  const responsible = (episode.operatorId !== null ? await bitrixUserForOperator(run, episode.operatorId) : undefined) ?? run.settings.fallbackResponsibleId ?? undefined;
  if (responsible !== undefined) fields.ASSIGNED_BY_ID = responsible;
  return fields;
}

/** `client.<name>` or `client.custom.<id>` of the Chat2Desk client object (docs/protocols.md C3). */
function clientField(client: Record<string, unknown>, source: string): string | undefined {
  const [, custom, name] = /^client\.(custom\.)?(.+)$/.exec(source) ?? [];
  if (!name) return undefined;
  const holder = custom ? client.custom_fields : client;
  const value = holder && typeof holder === 'object' ? (holder as Record<string, unknown>)[name] : undefined;
  if (typeof value === 'string') return value.trim() === '' ? undefined : value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

import type { RobotRun } from '../activities/activity.js';
import { findCandidates, type ClientRecord } from '../bitrix24/crm.js';
import type { EpisodeRecordStore } from '../db/episode-records.js';
import { clientPhones } from '../episodes/episode.js';
import { pickRecord } from '../episodes/matching.js';

/**
 * The Chat2Desk client's CRM record, chosen as a closed episode chooses it (README "Closed dialogs →
 * CRM records"): the record remembered for the client if it is still in progress, else the one the
 * matching rule picks among the records with the client's phone numbers. Nothing is created.
 */
export async function matchingRecord(run: RobotRun, store: EpisodeRecordStore, clientId: number): Promise<ClientRecord | undefined> {
  const memberId = run.portal.memberId;
  const remembered = await store.get(memberId, clientId);
  const client = await run.directory.client(clientId);
  const phones = clientPhones({ phone: client.phone ?? undefined, client_phone: client.clientPhone ?? undefined }, run.settings.defaultCountry ?? undefined);
  const found = await findCandidates(run.bitrix24, remembered, phones);
  if (found.rememberedGone && remembered) await store.forget(memberId, clientId, remembered);
  const picked = pickRecord(found.candidates, run.settings.matchOrder);
  return picked ? { entityType: picked.entityType, entityId: picked.entityId } : undefined;
}

/** The dialog's client, for events that name only the dialog (docs/protocols.md C7: field lists are undocumented). */
export async function clientOfDialog(run: RobotRun, dialogId: number): Promise<number | undefined> {
  return (await run.directory.dialog(dialogId)).clientId ?? undefined;
}

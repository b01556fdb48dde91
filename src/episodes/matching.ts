import type { CrmCandidate } from '../bitrix24/crm.js';
import type { MatchKind } from '../portal-settings.js';

/**
 * The matching rule: the first kind in `matchOrder` that has a candidate wins, and among records of
 * that kind the most recently modified (DATE_MODIFY; the higher id if even that ties). The default
 * order is deal (a contact's or company's deal in progress), contact, company, lead.
 */
export function pickRecord(candidates: CrmCandidate[], matchOrder: readonly MatchKind[]): CrmCandidate | undefined {
  for (const kind of matchOrder) {
    const ofKind = candidates.filter((candidate) => candidate.entityType === kind);
    if (ofKind.length > 0) return ofKind.reduce((best, candidate) => (newer(candidate, best) ? candidate : best));
  }
  return undefined;
}

function newer(a: CrmCandidate, b: CrmCandidate): boolean {
  return a.modifiedAt !== b.modifiedAt ? a.modifiedAt > b.modifiedAt : a.entityId > b.entityId;
}

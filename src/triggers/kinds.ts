import type { EpisodeRecordStore } from '../db/episode-records.js';
import type { SharedBatches } from '../episodes/shared-batches.js';
import { fireTriggerKind } from '../jobs/kinds/fire-trigger.js';
import { notifyIncomingKind } from '../jobs/kinds/notify-incoming.js';
import { syncResponsibleKind } from '../jobs/kinds/sync-responsible.js';
import type { JobKind } from '../jobs/kinds.js';
import type { RunContextDeps } from '../jobs/run-context.js';

/** The job kinds Chat2Desk events start for CRM automation (src/triggers/delivery.ts). */
export function automationKinds(deps: RunContextDeps & { episodeRecords: EpisodeRecordStore; batches: SharedBatches }): JobKind[] {
  return [fireTriggerKind(deps), notifyIncomingKind(deps), syncResponsibleKind(deps)];
}

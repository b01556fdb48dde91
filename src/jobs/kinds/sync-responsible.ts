import * as v from 'valibot';
import type { SharedBatches } from '../../episodes/shared-batches.js';
import { bitrixUserForOperator } from '../../activities/operators.js';
import { Bitrix24Error } from '../../bitrix24/errors.js';
import type { EpisodeRecordStore } from '../../db/episode-records.js';
import { episodeRunFor } from '../../episodes/run.js';
import { RobotFailure } from '../../run-failure.js';
import { clientOfDialog, matchingRecord } from '../../triggers/record.js';
import type { JobKind } from '../kinds.js';
import type { RunContextDeps } from '../run-context.js';

export const SYNC_RESPONSIBLE_KIND = 'sync_responsible';

/** The responsible follows a transfer within a day, or not at all (a later transfer will have its own job). */
export const SYNC_RESPONSIBLE_DEADLINE_MS = 24 * 3600_000;

const id = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));

const syncResponsibleInput = v.object({
  dialogId: id('dialogId'),
  clientId: v.nullable(id('clientId')),
  /** The operator the dialog went to, as the event named them; null: read from the dialog. */
  operatorId: v.nullable(id('operatorId')),
});

export type SyncResponsibleInput = v.InferOutput<typeof syncResponsibleInput>;

/**
 * A dialog transferred in Chat2Desk (dialog_transferred, docs/protocols.md C7): the client's CRM
 * record (the one the matching rule picks) gets the new operator's Bitrix24 user as its responsible
 * (ASSIGNED_BY_ID, crm.<type>.update, docs/protocols.md B10). Setting the same responsible again
 * changes nothing, so a repeated call is harmless and needs no ledger; the job is keyed by the delivery.
 */
export function syncResponsibleKind(deps: RunContextDeps & { episodeRecords: EpisodeRecordStore; batches: SharedBatches }): JobKind<SyncResponsibleInput> {
  return {
    name: SYNC_RESPONSIBLE_KIND,
    input: syncResponsibleInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    async prepare(job, input, log) {
      const run = await episodeRunFor(deps, job, log);
      return {
        async run() {
          const unchanged = (why: string) => {
            const summary = `responsible not changed: ${why}`;
            return { returnValues: { status: 'skipped', dialogId: input.dialogId, summary }, logMessage: summary };
          };
          if (!run.settings.responsibleSync) return unchanged('responsible sync is turned off');
          // The dialog's operator now, not the delivery's: a late delivery of an earlier transfer (a
          // Chat2Desk retry, or this job after a backoff) must not take the record back. The delivery
          // invalidated the cached dialog, so this reads Chat2Desk's current answer.
          const operatorId = (await run.directory.dialog(input.dialogId)).operatorId;
          if (operatorId === null) return unchanged(`dialog ${input.dialogId} has no operator`);
          const userId = await bitrixUserForOperator(run, operatorId);
          if (userId === undefined) return unchanged(`Chat2Desk operator ${operatorId} is not mapped to a Bitrix24 user (map them on the Operators settings)`);
          const clientId = input.clientId ?? (await clientOfDialog(run, input.dialogId));
          const record = clientId !== undefined ? await matchingRecord(run, deps.episodeRecords, clientId) : undefined;
          if (!record) return unchanged('no CRM record for this client');
          const method = `crm.${record.entityType}.update`;
          try {
            await run.bitrix24.call(method, { id: record.entityId, fields: { ASSIGNED_BY_ID: userId } }, { idempotent: true });
          } catch (error) {
            if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) {
              throw new RobotFailure(
                `Bitrix24 refused to change the responsible of ${record.entityType} ${record.entityId}: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`,
              );
            }
            throw error;
          }
          const summary = `${record.entityType} ${record.entityId} now has Bitrix24 user ${userId} (Chat2Desk operator ${operatorId}) responsible`;
          return {
            returnValues: { status: 'done', dialogId: input.dialogId, entityType: record.entityType, entityId: record.entityId, userId, operatorId, summary },
            logMessage: summary,
          };
        },
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
  };
}

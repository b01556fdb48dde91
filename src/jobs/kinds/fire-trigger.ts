import * as v from 'valibot';
import type { SharedBatches } from '../../episodes/shared-batches.js';
import { Bitrix24Error, certainlyNotRun } from '../../bitrix24/errors.js';
import type { EpisodeRecordStore } from '../../db/episode-records.js';
import type { NewJob } from '../../db/jobs.js';
import { episodeRunFor } from '../../episodes/run.js';
import { RobotFailure } from '../../run-failure.js';
import { clientOfDialog, matchingRecord } from '../../triggers/record.js';
import { OWNER_TYPE_ID, TRIGGERS, type TriggerCode } from '../../triggers/triggers.js';
import type { JobKind } from '../kinds.js';
import type { RunContextDeps } from '../run-context.js';

export const FIRE_TRIGGER_KIND = 'fire_trigger';

/** A trigger waits for Bitrix24 (down, reauthorisation) this long; a pipeline may still move a day later. */
export const FIRE_TRIGGER_DEADLINE_MS = 24 * 3600_000;

const id = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));

const fireTriggerInput = v.object({
  code: v.picklist(
    TRIGGERS.map((trigger) => trigger.code),
    'code must be one of our trigger codes',
  ),
  /** What the trigger is fired for, once: the delivery key, or `episode:<requestId>` for a closed episode. */
  eventKey: v.pipe(v.string('eventKey must be text'), v.minLength(1, 'eventKey must not be empty'), v.maxLength(300, 'eventKey is too long')),
  clientId: v.nullable(id('clientId')),
  dialogId: v.nullable(id('dialogId')),
  /** The record, when the event already knows it (a closed episode's); else it is matched by the client. */
  record: v.nullable(v.object({ entityType: v.picklist(['lead', 'deal', 'contact', 'company'], 'record.entityType must be a CRM entity type'), entityId: id('record.entityId') })),
});

export type FireTriggerInput = v.InferOutput<typeof fireTriggerInput>;

/** One ledger key per trigger and event: whoever fires it (a retry, a re-run, the other close event), it fires once. */
export const triggerKey = (code: TriggerCode, eventKey: string) => `trigger:${code}:${eventKey}`;

/** A fire_trigger job as a store writes it (a close_episode's follow-up), keyed like the ledger effect. */
export function fireTriggerJob(memberId: string, input: FireTriggerInput, now: number): NewJob {
  return { kind: FIRE_TRIGGER_KIND, memberId, input, dedupKey: triggerKey(input.code, input.eventKey), deadlineAt: now + FIRE_TRIGGER_DEADLINE_MS, awaitsConfirmation: false };
}

/**
 * Fires one of our CRM automation triggers (crm.automation.trigger.execute, docs/protocols.md B16) on
 * the client's record. Bitrix24 runs nothing for a trigger no automation rule uses, so it is fired
 * for every event. The call goes through the ledger: its answer lost, it is not repeated (Bitrix24
 * cannot tell whether it fired), and the job fails saying so.
 */
export function fireTriggerKind(deps: RunContextDeps & { episodeRecords: EpisodeRecordStore; batches: SharedBatches }): JobKind<FireTriggerInput> {
  return {
    name: FIRE_TRIGGER_KIND,
    input: fireTriggerInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    // Slots of its own, as close_episode's: a flood of closed episodes fires as many triggers, and robot runs must not wait behind them.
    portalConcurrency: 50,
    async prepare(job, input, log) {
      const run = await episodeRunFor(deps, job, log);
      return {
        async run() {
          const clientId = input.clientId ?? (input.dialogId !== null ? await clientOfDialog(run, input.dialogId) : undefined);
          const record = input.record ?? (clientId !== undefined ? await matchingRecord(run, deps.episodeRecords, clientId) : undefined);
          if (!record) {
            const summary = 'no CRM record for this client';
            return { returnValues: { status: 'skipped', code: input.code, clientId: clientId ?? null, dialogId: input.dialogId, summary }, logMessage: summary };
          }
          const key = triggerKey(input.code, input.eventKey);
          const fired = await run.ledger.once<{ fired: true }>({
            key,
            intent: { ...record },
            busy: `another run is firing the trigger ${input.code} for this event right now`,
            inDoubt: `Bitrix24 may already have received the trigger ${input.code} for ${record.entityType} ${record.entityId}; it is not sent again`,
            unreachable: `could not tell whether the trigger ${input.code} reached Bitrix24`,
            // Bitrix24 keeps no trace of an executed trigger to look for (docs/protocols.md B16).
            settle: async () => 'unknown',
            act: async () => {
              try {
                await run.bitrix24.call(
                  'crm.automation.trigger.execute',
                  { CODE: input.code, OWNER_TYPE_ID: OWNER_TYPE_ID[record.entityType], OWNER_ID: record.entityId },
                  { idempotent: false },
                );
              } catch (error) {
                if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500)
                  throw new RobotFailure(describeRefusal(input.code, error));
                throw error;
              }
              return { fired: true };
            },
            refused: (error) => error instanceof RobotFailure || certainlyNotRun(error),
          });
          const summary = `trigger ${input.code} ${fired.earlier ? 'had already fired' : 'fired'} on ${record.entityType} ${record.entityId}`;
          return {
            returnValues: {
              status: 'done',
              code: input.code,
              entityType: record.entityType,
              entityId: record.entityId,
              clientId: clientId ?? null,
              dialogId: input.dialogId,
              summary,
            },
            logMessage: summary,
          };
        },
        inDoubt: async () => (await run.ledger.held()).length > 0,
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
  };
}

/** A refusal in words: an unregistered trigger (registration failed or was dropped) says how to get it back. */
function describeRefusal(code: string, error: Bitrix24Error): string {
  const said = `${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`;
  if (/not registered/i.test(error.description))
    return `Bitrix24 does not know the trigger ${code}: ${said}; register the robots and triggers again (save the app settings, or update the app)`;
  if (error.accessDenied) return `Bitrix24 refused the trigger ${code}: ${said}; the app's user must be a portal administrator with access to CRM`;
  return `Bitrix24 refused the trigger ${code}: ${said}`;
}

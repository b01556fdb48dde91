import type { JobRow, NewJob } from '../db/jobs.js';
import type { JobOutcome } from '../jobs/kinds.js';
import { fireTriggerJob } from '../jobs/kinds/fire-trigger.js';
import { TRIGGER_CODES } from './triggers.js';

const positive = (value: unknown): number | null => (typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : null);
const ENTITY_TYPES = ['lead', 'deal', 'contact', 'company'] as const;

/**
 * "Chat2Desk dialog closed" for a handled episode: a close_episode job's follow-up, stored with its
 * finish, on the record the episode went to (or, for an episode the settings skipped, on the record
 * the matching rule picks). Keyed by the episode, so a re-run or a close event fires it once.
 */
export function dialogClosedTrigger(job: Pick<JobRow, 'memberId' | 'input'>, outcome: JobOutcome, now: number): NewJob[] {
  // The stored input is the close_episode input as JSON (src/jobs/kinds/close-episode.ts).
  const parsed: unknown = JSON.parse(job.input);
  const input = (parsed && typeof parsed === 'object' ? parsed : {}) as Record<string, unknown>;
  const values = outcome.returnValues;
  const requestId = positive(values.requestId) ?? positive(input.requestId);
  if (requestId === null || (values.status !== 'done' && values.status !== 'skipped')) return [];
  const entityType = ENTITY_TYPES.find((type) => type === values.entityType);
  const entityId = positive(values.entityId);
  const record = values.status === 'done' && entityType && entityId !== null ? { entityType, entityId } : null;
  return [
    fireTriggerJob(
      job.memberId,
      {
        code: TRIGGER_CODES.dialogClosed,
        eventKey: `episode:${requestId}`,
        clientId: positive(input.clientId),
        dialogId: positive(values.dialogId) ?? positive(input.dialogId),
        record,
      },
      now,
    ),
  ];
}

import * as v from 'valibot';
import { HELD_ORDERING_PREFIX } from '../../db/jobs.js';
import type { EpisodeRecordStore } from '../../db/episode-records.js';
import { handleEpisode } from '../../episodes/handle.js';
import { episodeRunFor } from '../../episodes/run.js';
import type { SharedBatches } from '../../episodes/shared-batches.js';
import { dialogClosedTrigger } from '../../triggers/episode.js';
import type { JobKind } from '../kinds.js';
import type { JobOptions } from '../pipeline.js';
import type { RunContextDeps } from '../run-context.js';

export const CLOSE_EPISODE_KIND = 'close_episode';

/** A closed episode keeps retrying transient failures (Bitrix24 or Chat2Desk down) this long. */
export const CLOSE_EPISODE_DEADLINE_MS = 24 * 3600_000;

const id = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));

export const closeEpisodeInput = v.object({
  requestId: id('requestId'),
  dialogId: v.nullable(id('dialogId')),
  clientId: id('clientId'),
  closedAt: v.pipe(v.string('closedAt must be an ISO time'), v.isoTimestamp('closedAt must be an ISO time')),
  origin: v.picklist(['webhook', 'poll', 'rerun'], 'origin must be webhook, poll or rerun'),
});

export type CloseEpisodeInput = v.InferOutput<typeof closeEpisodeInput>;

/** One job per episode, ever (`episode:<requestId>`); a re-run names its own key. */
export const episodeDedupKey = (requestId: number) => `episode:${requestId}`;
/** Episodes of one client run one at a time, so two closes cannot both create a record. */
// Held until the episode finishes, however long it waits between attempts (src/db/jobs.ts HELD_ORDERING_PREFIX).
export const episodeOrderingKey = (clientId: number) => `${HELD_ORDERING_PREFIX}client:${clientId}`;

/**
 * The options every path enqueues a closed episode with (the webhook, gap polling, a re-run from
 * the event log), so the same episode arriving by two paths is one job; a re-run names its own key.
 */
export function closeEpisodeOptions(input: CloseEpisodeInput, now: number, dedupKey = episodeDedupKey(input.requestId)): JobOptions {
  return { dedupKey, orderingKey: episodeOrderingKey(input.clientId), deadlineAt: now + CLOSE_EPISODE_DEADLINE_MS };
}

/**
 * A closed Chat2Desk episode becomes a CRM record with its comment (src/episodes/). Failures follow
 * the default table (src/jobs/failures.ts): a refusal fails at once naming what the portal refused,
 * load and outages retry with backoff until the deadline.
 */
export function closeEpisodeKind(deps: RunContextDeps & { episodeRecords: EpisodeRecordStore; batches: SharedBatches }): JobKind<CloseEpisodeInput> {
  return {
    name: CLOSE_EPISODE_KIND,
    input: closeEpisodeInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    // Slots of its own, apart from robot runs: 50 episodes' calls of one step fill a batch (src/episodes/shared-batches.ts).
    portalConcurrency: 50,
    async prepare(job, input, log) {
      const run = await episodeRunFor(deps, job, log);
      const key = { requestId: input.requestId, dialogId: input.dialogId, clientId: input.clientId, closedAt: Date.parse(input.closedAt) };
      return {
        // The jobs table keeps international digits (src/db/jobs.ts `phone`).
        run: () => handleEpisode(run, deps.episodeRecords, key, input.origin, (phone) => deps.jobs.notePhone(job.id, phone.replace(/^\+/, ''))),
        inDoubt: async () => (await run.ledger.held()).length > 0,
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
    // "Chat2Desk dialog closed" fires on the record this episode went to (src/triggers/episode.ts).
    followUps: (job, outcome) => dialogClosedTrigger(job, outcome, deps.clock.now()),
  };
}

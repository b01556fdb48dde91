import type { RobotRun } from '../activities/activity.js';
import type { JobRow } from '../db/jobs.js';
import { runFor, type RunContextDeps } from '../jobs/run-context.js';
import type { Logger } from '../log.js';
import type { SharedBatches } from './shared-batches.js';

/**
 * What a closed-episode (or CRM automation) job can see and do: a robot run's context
 * (src/jobs/run-context.ts `runFor`) without a workflow document, its Bitrix24 calls going through
 * the portal's shared batches.
 */
export function episodeRunFor(deps: RunContextDeps & { batches: SharedBatches }, job: JobRow, log: Logger): Promise<RobotRun> {
  // Episodes of one portal running together share batch requests (the benchmark's budget).
  return runFor(deps, job, log, { bitrix24: deps.batches.forPortal(job.memberId) });
}

import { BATCH_LIMIT } from '../bitrix24/rest-client.js';
import type { JobRow } from '../db/jobs.js';

/** Per-command errors inside a batch that clear by waiting (protocols/bitrix24.md §3 system errors). */
export const TRANSIENT_COMMAND_ERRORS = new Set([
  'QUERY_LIMIT_EXCEEDED',
  'OPERATION_TIME_LIMIT',
  'OVERLOAD_LIMIT',
  'INTERNAL_SERVER_ERROR',
  'ERROR_UNEXPECTED_ANSWER',
  'expired_token',
]);

export function groupByPortal(jobs: JobRow[]): Map<string, JobRow[]> {
  const byPortal = new Map<string, JobRow[]>();
  for (const job of jobs) {
    const group = byPortal.get(job.memberId) ?? [];
    group.push(job);
    byPortal.set(job.memberId, group);
  }
  return byPortal;
}

/**
 * Jobs of one portal ready for a batch request (a confirmation or a report) wait up to `lingerMs`
 * for others, so that a burst costs one request per 50: returns how long to wait still, or
 * undefined to send now (a full batch, waited long enough, or nothing more on the way).
 */
export function shouldGather(ready: JobRow[], now: number, lingerMs: number, moreOnTheWay: () => boolean = () => true): number | undefined {
  const oldest = Math.min(...ready.map((job) => job.runAt));
  if (ready.length >= BATCH_LIMIT || oldest + lingerMs <= now || !moreOnTheWay()) return undefined;
  return oldest + lingerMs - now;
}

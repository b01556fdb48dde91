import { BATCH_LIMIT } from '../bitrix24/rest-client.js';
import type { JobRow } from '../db/jobs.js';

export function groupByPortal<T extends Pick<JobRow, 'memberId'>>(jobs: T[]): Map<string, T[]> {
  const byPortal = new Map<string, T[]>();
  for (const job of jobs) {
    const group = byPortal.get(job.memberId) ?? [];
    group.push(job);
    byPortal.set(job.memberId, group);
  }
  return byPortal;
}

/** A batch that will fill without holding anything up may wait this many lingers in all. */
const LONG_LINGER_FACTOR = 5;

export interface GatherPolicy {
  lingerMs: number;
  /** False when nothing else can join the batch soon: it goes at once. */
  moreOnTheWay(): boolean;
  /** True when waiting past `lingerMs` still fills the batch and makes nothing later than it would be. */
  worthWaitingLonger(): boolean;
}

/**
 * Jobs of one portal ready for a batch request (a confirmation or a report) wait a little for
 * others, so that a burst costs one request per 50 (the benchmark's budget is 0.05 Bitrix24
 * requests per run): returns how long to wait still, or undefined to send now.
 */
export function gatherWait(ready: Pick<JobRow, 'runAt'>[], now: number, policy: GatherPolicy): number | undefined {
  if (ready.length >= BATCH_LIMIT) return undefined;
  const waited = now - Math.min(...ready.map((job) => job.runAt));
  if (waited < policy.lingerMs) return policy.moreOnTheWay() ? policy.lingerMs - waited : undefined;
  const longest = policy.lingerMs * LONG_LINGER_FACTOR;
  return waited < longest && policy.worthWaitingLonger() ? longest - waited : undefined;
}

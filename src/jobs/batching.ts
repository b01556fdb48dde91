import { BATCH_LIMIT } from '../bitrix24/rest-client.js';
import type { JobRow, JobStore } from '../db/jobs.js';

export function groupByPortal<T extends Pick<JobRow, 'memberId'>>(jobs: T[]): Map<string, T[]> {
  const byPortal = new Map<string, T[]>();
  for (const job of jobs) {
    const group = byPortal.get(job.memberId) ?? [];
    group.push(job);
    byPortal.set(job.memberId, group);
  }
  return byPortal;
}

/** A portal's jobs ready for a batch: how many, and when the oldest fell due. */
export interface ReadyJobs {
  memberId: string;
  count: number;
  oldestRunAt: number;
}

/** A batch that will fill without holding anything up may wait this many lingers in all. */
const LONG_LINGER_FACTOR = 5;

export interface GatherPolicy {
  lingerMs: number;
  /** False when nothing else can join the batch soon: it goes at once. */
  moreOnTheWay(): Promise<boolean>;
  /** True when waiting past `lingerMs` still fills the batch and makes nothing later than it would be. */
  worthWaitingLonger(): Promise<boolean>;
}

/**
 * Jobs of one portal ready for a batch request (a confirmation or a report) wait a little for
 * others, so that a burst costs one request per 50 (the benchmark's budget is 0.05 Bitrix24
 * requests per run): returns how long to wait still, or undefined to send now.
 */
export async function gatherWait(ready: Omit<ReadyJobs, 'memberId'>, now: number, policy: GatherPolicy): Promise<number | undefined> {
  if (ready.count >= BATCH_LIMIT) return undefined;
  const waited = now - ready.oldestRunAt;
  if (waited < policy.lingerMs) return (await policy.moreOnTheWay()) ? policy.lingerMs - waited : undefined;
  const longest = policy.lingerMs * LONG_LINGER_FACTOR;
  return waited < longest && (await policy.worthWaitingLonger()) ? longest - waited : undefined;
}

export interface PortalBatchesDeps<T> {
  lingerMs: number;
  /** When more of this portal's jobs may join its batch (see GatherPolicy). */
  policy(memberId: string, readyCount: number): Omit<GatherPolicy, 'lingerMs'>;
  /** Sends one batch request for the portal. */
  send(memberId: string, batch: T[]): Promise<void>;
  /** Registers a started batch so that a stopping worker can wait for it. */
  track(task: Promise<void>): void;
  /**
   * Where other processes read the same jobs (PostgreSQL): takes the batch's jobs for this process
   * before sending (those another process took are left out), and keeps them while it is in flight.
   */
  hold?: BatchHold;
}

export interface BatchHold {
  /** The ids of `ids` this process now holds. */
  take(ids: number[]): Promise<Set<number>>;
  /** Called every `renewEveryMs` while the request is in flight. */
  extend(ids: number[]): Promise<void>;
  renewEveryMs: number;
}

/**
 * The hold of a batch's jobs in the database, where other processes read the same queue
 * (`JobStore.sharedByProcesses`); none on SQLite, whose one process reads and sends alone.
 */
export function batchHold(jobs: JobStore, state: 'confirming' | 'reporting', holdMs: number | undefined): BatchHold | undefined {
  if (!jobs.sharedByProcesses || holdMs === undefined) return undefined;
  return {
    take: (ids) => jobs.holdForBatch(state, ids, holdMs),
    extend: (ids) => jobs.extendBatchHold(state, ids, holdMs),
    renewEveryMs: holdMs / 3,
  };
}

/**
 * The per-portal bookkeeping of batched Bitrix24 requests (confirmations and result reports): at
 * most one batch in flight per portal, up to 50 jobs each, gathered for a short while first.
 */
export class PortalBatches<T extends Pick<JobRow, 'id' | 'memberId' | 'runAt'>> {
  readonly #busy = new Set<string>();

  constructor(private readonly deps: PortalBatchesDeps<T>) {}

  /** Portals with a batch in flight: their jobs need not be read. */
  busyPortals(): string[] {
    return [...this.#busy];
  }

  /** Starts a batch for every portal whose ready jobs should go now; returns how long until one should. */
  async start(ready: T[], now: number, idleWaitMs: number): Promise<number> {
    const byPortal = groupByPortal(ready);
    const summary = [...byPortal].map(([memberId, jobs]) => ({ memberId, count: jobs.length, oldestRunAt: Math.min(...jobs.map((job) => job.runAt)) }));
    return this.startSummarised(summary, now, idleWaitMs, async (memberId) => byPortal.get(memberId) ?? []);
  }

  /**
   * As `start`, from a count per portal: the jobs themselves are read (`read`, oldest first) only
   * for a batch that goes now, since most looks end in waiting.
   */
  async startSummarised(ready: ReadyJobs[], now: number, idleWaitMs: number, read: (memberId: string) => Promise<T[]>): Promise<number> {
    let wait = idleWaitMs;
    for (const portal of ready) {
      const { memberId } = portal;
      if (this.#busy.has(memberId)) continue;
      const gather = await gatherWait(portal, now, { lingerMs: this.deps.lingerMs, ...this.deps.policy(memberId, portal.count) });
      if (gather !== undefined) {
        wait = Math.min(wait, gather);
        continue;
      }
      this.#busy.add(memberId);
      const task = read(memberId)
        .then((jobs) => this.#send(memberId, jobs.slice(0, BATCH_LIMIT)))
        .finally(() => this.#busy.delete(memberId));
      this.deps.track(task);
    }
    return wait;
  }

  async #send(memberId: string, jobs: T[]): Promise<void> {
    const { hold } = this.deps;
    if (!hold) {
      if (jobs.length) await this.deps.send(memberId, jobs);
      return;
    }
    const held = await hold.take(jobs.map((job) => job.id));
    const batch = jobs.filter((job) => held.has(job.id));
    if (batch.length === 0) return;
    const ids = batch.map((job) => job.id);
    const renew = setInterval(() => void hold.extend(ids).catch(() => undefined), hold.renewEveryMs);
    try {
      await this.deps.send(memberId, batch);
    } finally {
      clearInterval(renew);
    }
  }
}

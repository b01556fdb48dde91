import * as v from 'valibot';
import type { JobRow, NewJob } from '../db/jobs.js';
import { Worker, type WorkerDeps } from './worker.js';

/** Everything about a job but its kind, portal and input. */
export type JobOptions = Omit<NewJob, 'kind' | 'memberId' | 'input' | 'awaitsConfirmation'>;

export class InvalidJobInput extends Error {
  override name = 'InvalidJobInput';
}

/**
 * What routes, events and stores use to start work: a job of a known kind, validated, stored
 * durably (before the caller answers), and the worker woken. The worker confirms, runs, retries
 * and reports it (src/jobs/worker.ts).
 */
export class Pipeline {
  readonly worker: Worker;

  constructor(private readonly deps: WorkerDeps) {
    this.worker = new Worker(deps);
  }

  /**
   * The job as a store writes it, its input checked against the kind's schema: for `insertJobs`
   * inside another store's transaction (an outbox), or for `enqueue`.
   */
  job(kindName: string, memberId: string, input: unknown, options: JobOptions): NewJob {
    const kind = this.deps.kinds.get(kindName);
    if (!kind) throw new InvalidJobInput(`unknown job kind ${kindName}`);
    const parsed = v.safeParse(kind.input, input);
    if (!parsed.success) throw new InvalidJobInput(`${kindName}: ${parsed.issues.map((issue) => issue.message).join('; ')}`);
    return { ...options, kind: kindName, memberId, input: parsed.output, awaitsConfirmation: kind.needsConfirmation };
  }

  /**
   * Stores the job unless its dedup key exists (duplicate=true), and wakes the worker. `limits`:
   * see `JobStore.enqueue` (robot calls bound their portal's unconfirmed calls).
   */
  async enqueue(
    kindName: string,
    memberId: string,
    input: unknown,
    options: JobOptions,
    limits: { maxConfirming?: number } = {},
  ): Promise<{ job: Pick<JobRow, 'id'>; duplicate: boolean }> {
    const job = this.job(kindName, memberId, input, options);
    const stored = await this.deps.jobs.enqueue(job, limits);
    if (!stored.duplicate) this.jobsStored(job);
    return stored;
  }

  /** Jobs were stored (by `enqueue`, or by a store method with `insertJobs`): the worker looks for them. */
  jobsStored(job: Pick<NewJob, 'awaitsConfirmation' | 'immediateResult'>): void {
    this.worker.accepted({ awaitsConfirmation: job.awaitsConfirmation && !job.immediateResult, reportNow: Boolean(job.immediateResult) });
  }

  /** Held jobs were made due now (src/db/jobs.ts `wakeHeldJobs`): the worker looks for them. */
  jobsWoken(): void {
    this.worker.accepted({ awaitsConfirmation: false, reportNow: false });
  }

  start(): Promise<void> {
    return this.worker.start();
  }

  stop(): Promise<void> {
    return this.worker.stop();
  }

  get running(): boolean {
    return this.worker.running;
  }

  /**
   * Resolves once no job of these kinds is running or due (tests and the demo wait for
   * re-registrations this way); jobs due later do not count.
   */
  async settled(kinds: string[], timeoutMs = 30_000): Promise<void> {
    const until = this.deps.clock.now() + timeoutMs;
    while ((await this.deps.jobs.dueOrRunning(kinds)) > 0) {
      if (this.deps.clock.now() > until) throw new Error(`jobs of kinds ${kinds.join(', ')} still due after ${timeoutMs} ms`);
      await this.worker.nextRunEnd(50);
    }
  }
}

import type * as v from 'valibot';
import type { JobRow, NewJob } from '../db/jobs.js';
import type { Logger } from '../log.js';
import type { FailureDecision } from './failures.js';

/** What a finished job leaves: the result (robots: the workflow's return values) and a log line. */
export interface JobOutcome {
  returnValues: Record<string, unknown>;
  logMessage: string;
  /** The client's phone as international digits, stored with the finish for the event log's phone filter; never reported. */
  phone?: string;
}

/** One attempt at a claimed job, built by its kind (`JobKind.prepare`). */
export interface JobAttempt {
  run(): Promise<JobOutcome>;
  /**
   * Called when the job is given up (deadline, attempts spent) after an attempt whose effect is in
   * doubt: answers the outcome if the effect happened after all. Absent when nothing can be in doubt.
   */
  settle?(): Promise<JobOutcome | undefined>;
  /** True while an earlier attempt of this job left an effect in doubt: a failing run must settle it too. */
  inDoubt?(): Promise<boolean>;
}

/**
 * A kind of durable job. The pipeline stores, schedules, retries and finishes every job the same
 * way; a kind says only what is particular to it.
 */
export interface JobKind<TInput = unknown> {
  /** Stored in jobs.kind. */
  name: string;
  /** The input, validated when enqueued (src/jobs/pipeline.ts) and again when run. */
  input: v.GenericSchema<unknown, TInput>;
  /** The job runs only after its portal confirmed it (robot calls: src/jobs/confirmations.ts). */
  needsConfirmation: boolean;
  /**
   * `forever`: one job per dedup key, ever (robot calls by event token). `while_pending`: one job
   * per key that has not started yet; a trigger arriving while it runs queues another.
   */
  dedup: 'forever' | 'while_pending';
  /** Where a finished job goes: its result is reported to Bitrix24 (src/jobs/reports.ts), or it is done. */
  after: 'report' | 'done';
  /**
   * Runs of this kind at once per portal, counted apart from every other kind (src/jobs/dispatcher.ts):
   * a kind that comes in floods and gains from running many together (closed episodes share batch
   * requests) gets slots of its own, so robot runs never wait behind it. Absent: the kind shares the
   * portal's common slots (`PORTAL_CONCURRENCY`).
   */
  portalConcurrency?: number;
  /** Everything one attempt needs. Throw `JobFailure` when the job cannot run at all. */
  prepare(job: JobRow, input: TInput, log: Logger): Promise<JobAttempt>;
  /** The outcome of a job that failed with `message` (robots: the workflow's `failed` values). */
  failed(job: Pick<JobRow, 'robotCode'>, message: string): JobOutcome;
  /** A decision of its own for some errors; undefined falls back to the default (src/jobs/failures.ts). */
  classify?(error: unknown, job: JobRow): FailureDecision | undefined;
  /** Jobs to enqueue in the same transaction as the finish. */
  followUps?(job: JobRow, outcome: JobOutcome): NewJob[];
}

/** The kinds a pipeline knows, by name. A test may register a kind of its own. */
export class JobKinds {
  readonly #byName = new Map<string, JobKind>();

  constructor(kinds: JobKind[]) {
    for (const kind of kinds) this.add(kind);
  }

  /** A kind's input type is erased here (its methods take it bivariantly); each kind validates its own input. */
  add<TInput>(kind: JobKind<TInput>): void {
    if (this.#byName.has(kind.name)) throw new Error(`job kind ${kind.name} is registered twice`);
    this.#byName.set(kind.name, kind);
  }

  get(name: string): JobKind | undefined {
    return this.#byName.get(name);
  }

  all(): JobKind[] {
    return [...this.#byName.values()];
  }
}

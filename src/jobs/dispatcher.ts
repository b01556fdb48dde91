import * as v from 'valibot';
import type { Clock } from '../clock.js';
import type { JobRow, JobStore } from '../db/jobs.js';
import type { Logger } from '../log.js';
import { withinRun } from '../run-scope.js';
import { classifyFailure, errorMessage, JobFailure } from './failures.js';
import type { JobAttempt, JobKind, JobKinds, JobOutcome } from './kinds.js';
import { EffectInDoubtError } from './ledger.js';

/**
 * Due jobs read per dispatch pass at most. Portals at their cap are left out of the read, and a pass
 * that started work and read a full page looks again at once, so a small page hides no portal's jobs
 * for long; a large one was read again after every finished run. A page of the largest slot group's
 * concurrency fills every slot a finished run frees: in a burst, a pass reading 100 rows to start one
 * was the dispatcher's main cost. Portals whose every group is full are left out by member id; a full
 * group alone by its kinds, so the page holds only jobs that could start.
 */
const DISPATCH_PAGE = 100;
/**
 * A claimed job's lease (`JOB_LEASE_SECONDS`, src/config.ts): renewed every third of it while its
 * run goes on, so a job whose lease ran out is one whose worker stopped or stalled, and another
 * worker takes it up (src/db/jobs.ts `requeueInterrupted`); the attempt that lost it can no longer
 * finish it. Short, so that a process killed outright (kill -9) has its jobs taken over by the
 * others within a lease and a third (docs/multi-process.md).
 */
export const DEFAULT_LEASE_MS = 45_000;

export interface DispatcherDeps {
  jobs: JobStore;
  kinds: JobKinds;
  clock: Clock;
  log: Logger;
  /** Jobs running at once per portal, of every kind without slots of its own (`JobKind.portalConcurrency`). */
  portalConcurrency: number;
  /** Unknown (non-protocol) errors are retried this many times, then the job is given up. */
  maxUnexpectedAttempts: number;
  /** A claimed job's lease, renewed every third of it (DEFAULT_LEASE_MS). */
  leaseMs: number;
  /** Registers a started run so that a stopping worker can wait for it. */
  track(task: Promise<void>): void;
  /** A run ended: a slot is free, and a result may be ready. */
  onRunEnded(): void;
}

/** The common slots of a portal: every kind without a `portalConcurrency` of its own. */
const COMMON = '';

/**
 * Starts due jobs, at most `portalConcurrency` per portal (Chat2Desk accounts are bounded in their
 * client), and as many of a kind with slots of its own as it says (closed episodes: a flood of them
 * shares batch requests, and must not keep robot runs waiting), one at a time per ordering key
 * (src/db/jobs.ts `due`), and takes each run to its end: finished, retried later, failed, or given up
 * (settling an effect in doubt first).
 */
export class Dispatcher {
  /** Runs under way per portal and slot group (a kind's own name, or COMMON). */
  readonly #running = new Map<string, Map<string, number>>();
  /**
   * This worker's runs under way, when each lease was last renewed (by the clock), and what stops
   * the run once its job leaves this process (src/run-scope.ts).
   */
  readonly #leases = new Map<number, { claimed: JobRow; renewedAt: number; stop: AbortController }>();
  #nextSweepAt = 0;

  constructor(private readonly deps: DispatcherDeps) {}

  /** Starts what may start; `pageFull` says due jobs may be left beyond the page read. */
  async dispatch(stopped: () => boolean): Promise<{ started: number; pageFull: boolean }> {
    const limits = this.#limits();
    const page = Math.min(DISPATCH_PAGE, Math.max(...limits.values()));
    if (this.deps.jobs.sharedByProcesses) return this.#claimShared(limits, page, stopped);
    const { jobs, kinds } = this.deps;
    const { fullPortals, fullKinds } = this.#full(limits);
    let started = 0;
    const due = await jobs.due('queued', page, fullPortals, fullKinds);
    for (const job of due) {
      if (stopped()) break;
      const group = this.#groupOf(limits, job.kind);
      const running = this.#running.get(job.memberId)?.get(group) ?? 0;
      if (running >= (limits.get(group) ?? this.deps.portalConcurrency)) continue;
      const claimed = await jobs.claim(job.id, this.deps.leaseMs, kinds.get(job.kind)?.dedup === 'while_pending');
      if (!claimed) continue;
      started += 1;
      this.#start(claimed, group);
    }
    return { started, pageFull: due.length === page };
  }

  /**
   * PostgreSQL, where other processes claim from the same queue: one statement picks and claims,
   * counting every process's running jobs against the portal's slots (src/db/jobs.ts `claimDue`).
   */
  async #claimShared(limits: Map<string, number>, page: number, stopped: () => boolean): Promise<{ started: number; pageFull: boolean }> {
    if (stopped()) return { started: 0, pageFull: false };
    const releasing = this.deps.kinds
      .all()
      .filter((kind) => kind.dedup === 'while_pending')
      .map((kind) => kind.name);
    const claimed = await this.deps.jobs.claimDue(page, this.deps.leaseMs, Object.fromEntries(limits), releasing);
    for (const job of claimed) this.#start(job, this.#groupOf(limits, job.kind));
    return { started: claimed.length, pageFull: claimed.length === page };
  }

  #groupOf(limits: Map<string, number>, kind: string): string {
    return limits.has(kind) ? kind : COMMON;
  }

  #start(claimed: JobRow, group: string): void {
    this.#count(claimed.memberId, group, 1);
    const stop = new AbortController();
    this.#leases.set(claimed.id, { claimed, renewedAt: this.deps.clock.now(), stop });
    const task = withinRun(stop.signal, () => this.#execute(claimed, stop.signal)).finally(() => {
      this.#leases.delete(claimed.id);
      this.#count(claimed.memberId, group, -1);
      this.deps.onRunEnded();
    });
    this.deps.track(task);
  }

  /** The slots of each group: the common ones, and each kind's own. */
  #limits(): Map<string, number> {
    const limits = new Map([[COMMON, this.deps.portalConcurrency]]);
    for (const kind of this.deps.kinds.all()) if (kind.portalConcurrency !== undefined) limits.set(kind.name, kind.portalConcurrency);
    return limits;
  }

  /**
   * What the due read leaves out: portals with every group full, and the kinds of a full group of
   * a portal, so a flood of one kind neither fills the page nor hides another kind's jobs.
   */
  #full(limits: Map<string, number>): { fullPortals: string[]; fullKinds: Array<{ memberId: string; kind: string }> } {
    const fullPortals: string[] = [];
    const fullKinds: Array<{ memberId: string; kind: string }> = [];
    const commonKinds = this.deps.kinds
      .all()
      .filter((kind) => !limits.has(kind.name))
      .map((kind) => kind.name);
    for (const [memberId, groups] of this.#running) {
      const fullGroups = [...limits].filter(([group, limit]) => (groups.get(group) ?? 0) >= limit).map(([group]) => group);
      if (fullGroups.length === limits.size) fullPortals.push(memberId);
      else for (const group of fullGroups) for (const kind of group === COMMON ? commonKinds : [group]) fullKinds.push({ memberId, kind });
    }
    return { fullPortals, fullKinds };
  }

  #count(memberId: string, group: string, change: number): void {
    const groups = this.#running.get(memberId) ?? new Map<string, number>();
    const running = (groups.get(group) ?? 0) + change;
    if (running > 0) groups.set(group, running);
    else groups.delete(group);
    if (groups.size > 0) this.#running.set(memberId, groups);
    else this.#running.delete(memberId);
  }

  /**
   * Keeps leases honest, by the clock, on every dispatch pass: renews the lease of each run still
   * going here once a third of it has passed, and every third of a lease takes up the jobs whose
   * lease ran out (another worker stopped or stalled). Returns how many were taken up.
   */
  async maintainLeases(): Promise<number> {
    const { jobs, clock, log } = this.deps;
    const now = clock.now();
    const renewEveryMs = this.deps.leaseMs / 3;
    for (const [id, lease] of this.#leases) {
      if (now - lease.renewedAt < renewEveryMs) continue;
      lease.renewedAt = now;
      if (!(await jobs.renewLease(lease.claimed, this.deps.leaseMs))) {
        this.#leases.delete(id);
        lease.stop.abort();
        log.warn({ jobId: id, memberId: lease.claimed.memberId }, 'a run lost its lease: another worker took the job up, and this run cannot finish it');
      }
    }
    if (now < this.#nextSweepAt) return 0;
    this.#nextSweepAt = now + renewEveryMs;
    const requeued = await jobs.requeueInterrupted('expired');
    if (requeued > 0) log.warn({ requeued }, 'jobs whose lease ran out are queued again');
    return requeued;
  }

  /**
   * A stopping process's runs still going after its grace are given back (PostgreSQL: another
   * process takes them up at once instead of after the lease); this process's attempts can no
   * longer finish them. Each run is stopped before its job is given back: whatever it still waits
   * for (the account's Chat2Desk slot, the portal's bucket), it sends nothing once another process
   * may have taken the job up and settled its effects as absent. Returns how many were given back.
   */
  async handBack(): Promise<number> {
    let handedBack = 0;
    for (const [id, lease] of this.#leases) {
      this.#leases.delete(id);
      lease.stop.abort();
      if (await this.deps.jobs.handBack(lease.claimed)) handedBack += 1;
    }
    return handedBack;
  }

  async #execute(job: JobRow, stopped: AbortSignal): Promise<void> {
    const kind = this.deps.kinds.get(job.kind);
    const log = this.deps.log.child({ memberId: job.memberId, jobId: job.id, kind: job.kind, ...(job.robotCode ? { code: job.robotCode } : {}) });
    if (!kind) {
      const message = `unknown job kind ${job.kind}`;
      await this.deps.jobs.finish(job, { status: 'failed', error: message }, message, { next: 'done' });
      log.error('job of an unknown kind dropped');
      return;
    }
    let attempt: JobAttempt | undefined;
    try {
      const input = v.safeParse(kind.input, JSON.parse(job.input));
      if (!input.success) throw new JobFailure(input.issues.map((issue) => issue.message).join('; '));
      // With 'job finished', tells which runs a process had under way when it died (an operator reading its log; test/multi-process.test.ts).
      log.info({ attempt: job.attempts }, 'job started');
      attempt = await kind.prepare(job, input.output, log);
      if (this.deps.clock.now() > job.deadlineAt) {
        await this.#giveUp(kind, job, attempt, `gave up at the deadline${job.lastError ? `: ${job.lastError}` : ''}`, log);
        return;
      }
      const outcome = await attempt.run();
      await this.#finish(kind, job, outcome);
      log.info({ status: outcome.returnValues.status }, 'job finished');
    } catch (error) {
      // The job went to another process, which finishes it: this run ends here without touching
      // the job (after a stop the database may be closed already).
      if (stopped.aborted) {
        log.info({ err: errorMessage(error) }, 'run stopped here: its job went to another process');
        return;
      }
      await this.#handleFailure(kind, job, error, log, attempt);
    }
  }

  #finish(kind: JobKind, job: JobRow, outcome: JobOutcome): Promise<void> {
    return this.deps.jobs.finish(job, outcome.returnValues, outcome.logMessage, { next: kind.after, followUps: kind.followUps?.(job, outcome), phone: outcome.phone });
  }

  /** Ends a job that is out of time or attempts; an effect in doubt is settled first (JobAttempt.settle). */
  async #giveUp(kind: JobKind, job: JobRow, attempt: JobAttempt | undefined, message: string, log: Logger): Promise<void> {
    if (attempt?.settle) {
      try {
        const settled = await attempt.settle();
        if (settled) {
          await this.#finish(kind, job, settled);
          log.info({ status: settled.returnValues.status }, 'job settled at give-up: its effect had happened');
          return;
        }
      } catch (error) {
        log.warn({ err: errorMessage(error) }, 'could not settle the job at give-up');
      }
    }
    await this.#finish(kind, job, kind.failed(job, message));
    log.warn({ error: message }, 'job given up');
  }

  async #handleFailure(kind: JobKind, job: JobRow, error: unknown, log: Logger, attempt: JobAttempt | undefined): Promise<void> {
    const now = this.deps.clock.now();
    const decision = kind.classify?.(error, job) ?? classifyFailure(error, job, { now, maxUnexpectedAttempts: this.deps.maxUnexpectedAttempts });
    switch (decision.action) {
      case 'fail':
        // A refusal now says nothing of an effect an earlier attempt left in doubt (a comment whose
        // answer was lost): it is settled first, as when giving up, so it is not reported as not done.
        // EffectInDoubtError is that settling's own answer already.
        if (!(error instanceof EffectInDoubtError) && attempt?.settle && (await attempt.inDoubt?.())) return this.#giveUp(kind, job, attempt, decision.message, log);
        await this.#finish(kind, job, kind.failed(job, decision.message));
        log.warn({ error: decision.message }, 'job failed');
        return;
      case 'give_up':
        return this.#giveUp(kind, job, attempt, decision.message, log);
      case 'retry':
        if (!decision.expected) log.error({ err: decision.message }, 'unexpected error in job; retrying');
        else log.warn({ err: decision.message, retryInMs: decision.at - now }, 'transient failure; retrying');
        await this.deps.jobs.retryLater(job, decision.at, decision.message);
    }
  }
}

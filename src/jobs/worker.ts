import type { RobotRegistry } from '../activities/index.js';
import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import type { JobStore } from '../db/jobs.js';
import type { Broadcast } from '../db/broadcast.js';
import type { Logger } from '../log.js';
import { CallConfirmations } from './confirmations.js';
import { DEFAULT_LEASE_MS, Dispatcher } from './dispatcher.js';
import type { JobKinds } from './kinds.js';
import { ResultReports } from './reports.js';
import { Signal } from './signal.js';

export interface WorkerDeps {
  jobs: JobStore;
  kinds: JobKinds;
  robots: RobotRegistry;
  rest: Bitrix24Rest;
  clock: Clock;
  portalConcurrency: number;
  log: Logger;
  /**
   * How long a finished result, or a call waiting to be confirmed, may wait for others of its
   * portal to share one batch request.
   */
  reportLingerMs?: number;
  /** Unknown (non-protocol) errors are retried this many times, then the job is given up. */
  maxUnexpectedAttempts?: number;
  /**
   * No other process can open the database (SQLite's exclusive lock): at start every running job
   * is one this process was running when it stopped, taken up at once whatever its lease.
   */
  exclusiveDatabase?: boolean;
  /** A claimed job's lease, renewed every third of it (`JOB_LEASE_SECONDS`); also how long a batch holds its jobs. */
  leaseMs?: number;
  /**
   * Reaches the other processes sharing the database (PostgreSQL): a job that may run now is
   * announced, so an idle process looks at once instead of at its next poll.
   */
  broadcast?: Broadcast;
}

const IDLE_POLL_MS = 1_000;
/** The broadcast topic on which processes announce jobs that may run now. */
export const JOBS_TOPIC = 'jobs';
/** Jobs stored within this span are announced once: a burst costs a notification per few ms, not per call. */
const ANNOUNCE_COALESCE_MS = 5;

/**
 * Three loops, each woken only when it has work: confirmation of robot calls by their portal
 * (src/jobs/confirmations.ts), dispatching due jobs (src/jobs/dispatcher.ts) and reporting robot
 * results (src/jobs/reports.ts). Each sleeps until woken or until the next job falls due.
 */
export class Worker {
  readonly #confirmSignal = new Signal();
  readonly #dispatchSignal = new Signal();
  readonly #reportSignal = new Signal();
  readonly #confirmations: CallConfirmations;
  readonly #dispatcher: Dispatcher;
  readonly #reports: ResultReports;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #runEnded = new Set<() => void>();
  #stopped = true;
  #loops: Promise<void>[] = [];
  #announcing: NodeJS.Timeout | undefined;
  /** True while this process publishes: the broadcast runs its own handlers then, which it does not need. */
  #publishing = false;
  #unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: WorkerDeps) {
    const lingerMs = deps.reportLingerMs ?? 1_000;
    const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
    this.#confirmations = new CallConfirmations({
      jobs: deps.jobs,
      rest: deps.rest,
      robots: deps.robots,
      clock: deps.clock,
      log: deps.log,
      lingerMs,
      track: (task) => this.#track(task, this.#confirmSignal),
      holdMs: leaseMs,
      onConfirmed: () => {
        this.#dispatchSignal.notify();
        this.#announce();
      },
    });
    this.#dispatcher = new Dispatcher({
      jobs: deps.jobs,
      kinds: deps.kinds,
      clock: deps.clock,
      log: deps.log,
      portalConcurrency: deps.portalConcurrency,
      maxUnexpectedAttempts: deps.maxUnexpectedAttempts ?? 5,
      leaseMs,
      track: (task) => this.#track(task),
      // A slot is free and a result may be ready; confirmations do not wait for runs.
      onRunEnded: () => {
        this.#slotFreed();
        this.#reportSignal.notify();
        for (const listener of this.#runEnded) listener();
      },
    });
    this.#reports = new ResultReports({
      jobs: deps.jobs,
      rest: deps.rest,
      clock: deps.clock,
      log: deps.log,
      lingerMs,
      track: (task) => this.#track(task, this.#reportSignal),
      holdMs: leaseMs,
    });
  }

  get running(): boolean {
    return !this.#stopped;
  }

  async start(): Promise<void> {
    if (!this.#stopped) return;
    this.#stopped = false;
    const requeued = await this.deps.jobs.requeueInterrupted(this.deps.exclusiveDatabase ? 'all' : 'expired');
    if (requeued > 0) this.deps.log.warn({ requeued }, 'jobs interrupted by a previous stop are queued again');
    this.#unsubscribe = this.deps.broadcast?.subscribe(JOBS_TOPIC, () => {
      if (!this.#publishing) this.#dispatchSignal.notify();
    });
    this.#loops = [
      this.#loop('confirmation', this.#confirmSignal, () => this.#confirmations.startDue(IDLE_POLL_MS)),
      this.#dispatchLoop(),
      this.#loop('report', this.#reportSignal, () => this.#reports.startDue(IDLE_POLL_MS)),
    ];
  }

  /** A job was stored: it waits for confirmation, to run, or (input already wrong) for its report. */
  accepted(job: { awaitsConfirmation: boolean; reportNow: boolean }): void {
    if (job.awaitsConfirmation) this.#confirmSignal.notify();
    else {
      this.#dispatchSignal.notify();
      this.#announce();
    }
    if (job.reportNow) this.#reportSignal.notify();
  }

  /**
   * Tells the other processes that jobs may run now (their dispatchers wake), at most once per
   * ANNOUNCE_COALESCE_MS. Calls to confirm are not announced: this process confirms them in its
   * batch, and announces them once confirmed.
   */
  #announce(): void {
    const { broadcast } = this.deps;
    if (!broadcast || this.#announcing || this.#stopped) return;
    this.#announcing = setTimeout(() => {
      this.#announcing = undefined;
      // The broadcast runs this process's handlers synchronously, before its first await.
      this.#publishing = true;
      void broadcast.publish(JOBS_TOPIC, 'run');
      this.#publishing = false;
    }, ANNOUNCE_COALESCE_MS);
  }

  /**
   * A run ended, so its portal has a slot free. Alone on the queue, this process looks at once.
   * Where processes share it (PostgreSQL), the slot is announced and this process looks after as
   * long as the announcement takes, give or take a few ms: otherwise the process whose run ended
   * would always take the slot back first, and a portal held at its cap would run on one process
   * while the others stay idle.
   */
  #slotFreed(): void {
    if (!this.deps.broadcast) {
      this.#dispatchSignal.notify();
      return;
    }
    this.#announce();
    setTimeout(() => this.#dispatchSignal.notify(), ANNOUNCE_COALESCE_MS + Math.random() * 2 * ANNOUNCE_COALESCE_MS);
  }

  /** Every loop looks again now (a test moved the clock forward, or something changed outside). */
  wake(): void {
    this.#confirmSignal.notify();
    this.#dispatchSignal.notify();
    this.#reportSignal.notify();
  }

  /** Resolves when the next run ends, or after `ms`. */
  nextRunEnd(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#runEnded.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#runEnded.add(done);
    });
  }

  async stop(graceMs = 10_000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.wake();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    this.#unsubscribe?.();
    clearTimeout(this.#announcing);
    this.#announcing = undefined;
    await Promise.race([Promise.all([...this.#loops, ...this.#inFlight]), grace]);
    clearTimeout(timer);
    // Where other processes share the queue, what did not finish in the grace goes to them now.
    if (this.deps.jobs.sharedByProcesses) {
      const handedBack = await this.#dispatcher.handBack();
      if (handedBack > 0) this.deps.log.warn({ handedBack }, 'runs not finished in the stop grace are handed back to the other processes');
    }
  }

  #track(task: Promise<void>, wake?: Signal): void {
    // A task's own failures are handled inside it; what escapes (a database read failing before a
    // batch is sent) is logged, never left to crash the process as an unhandled rejection. The jobs
    // stay in their state and the next pass takes them up.
    const tracked = task
      .catch((error: unknown) => this.deps.log.error({ err: error instanceof Error ? error.message : String(error) }, 'worker task failed'))
      .finally(() => {
        this.#inFlight.delete(tracked);
        wake?.notify();
      });
    this.#inFlight.add(tracked);
  }

  async #loop(name: string, signal: Signal, pass: () => Promise<number>): Promise<void> {
    while (!this.#stopped) {
      let wait = IDLE_POLL_MS;
      try {
        wait = await pass();
      } catch (error) {
        this.deps.log.error({ err: String(error) }, `${name} scheduling failed`);
      }
      await signal.wait(wait);
    }
  }

  async #dispatchLoop(): Promise<void> {
    while (!this.#stopped) {
      let wait = IDLE_POLL_MS;
      try {
        await this.#dispatcher.maintainLeases();
        const claimed = await this.#dispatcher.dispatch(() => this.#stopped);
        // A pass that started work and read a full page may have left claimable jobs beyond it: look
        // again at once. Otherwise every due job was seen, and those left wait for a slot (a wake-up).
        wait = claimed.started > 0 && claimed.pageFull ? 0 : await this.#idleWait();
      } catch (error) {
        this.deps.log.error({ err: String(error) }, 'dispatch failed');
      }
      await this.#dispatchSignal.wait(wait);
    }
  }

  /** Until the next retry falls due; jobs already due but blocked by a full portal wait for a wake-up. */
  async #idleWait(): Promise<number> {
    const next = await this.deps.jobs.nextDueAt();
    const now = this.deps.clock.now();
    return next === undefined || next <= now ? IDLE_POLL_MS : Math.min(IDLE_POLL_MS, Math.max(5, next - now));
  }
}

import * as v from 'valibot';
import { RobotFailure, type Activity, type RobotRun } from '../activities/activity.js';
import { findActivity } from '../activities/index.js';
import { commandErrorKind, describeCommandError } from '../bitrix24/batch-errors.js';
import { Bitrix24Error, Bitrix24TransportError, OAuthError, PortalUnavailableError } from '../bitrix24/errors.js';
import { BATCH_LIMIT, type Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { BitrixUsers } from '../bitrix24/users.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import type { Clock } from '../clock.js';
import type { EffectStore } from '../db/effects.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import type { JobRow, JobStore, ReportRow } from '../db/jobs.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import { readSettings, type PortalSettings } from '../portal-settings.js';
import { backoffMs } from '../rate-limit.js';
import { gatherWait, groupByPortal } from './batching.js';
import { CallConfirmations } from './confirmations.js';
import { EffectBusyError, bindLedger } from './ledger.js';
import { Signal } from './signal.js';

export interface WorkerDeps {
  jobs: JobStore;
  portals: PortalStore;
  rest: Bitrix24Rest;
  users: BitrixUsers;
  /** The exactly-once ledger's rows; each run gets the ledger bound to its portal and job. */
  effects: EffectStore;
  clock: Clock;
  /** The portal's Chat2Desk account behind its cache, or undefined when no API token is set. */
  directoryFor(portal: Portal, settings: PortalSettings): DialogDirectory | undefined;
  defaultChat2DeskUrl: string;
  portalConcurrency: number;
  log: Logger;
  /**
   * How long a finished result, or a call waiting to be confirmed, may wait for others of its
   * portal to share one batch request.
   */
  reportLingerMs?: number;
  /** Unknown (non-protocol) errors are retried this many times, then the run fails. */
  maxUnexpectedAttempts?: number;
}

/**
 * Due jobs read per dispatch pass. Portals at their cap are left out of the read, and a pass that
 * started work looks again at once, so a small page hides no portal's jobs for long; a large one was
 * read again after every finished run.
 */
const DISPATCH_PAGE = 100;
const IDLE_POLL_MS = 1_000;
/** How long an undelivered result is retried (Bitrix24 outage, lost authorisation) before it is dropped. */
const REPORT_GIVE_UP_MS = 3 * 24 * 3600_000;

/**
 * Has the portal confirm each robot call (src/jobs/confirmations.ts), runs confirmed jobs (bounded
 * per portal; Chat2Desk accounts are bounded in their client) and sends results back with
 * bizproc.event.send, many to one batch request when several are ready.
 */
export class RobotWorker {
  readonly #confirmSignal = new Signal();
  readonly #dispatchSignal = new Signal();
  readonly #reportSignal = new Signal();
  readonly #confirmations: CallConfirmations;
  readonly #runningByPortal = new Map<string, number>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #reportingPortals = new Set<string>();
  #stopped = true;
  #loops: Promise<void>[] = [];

  constructor(private readonly deps: WorkerDeps) {
    this.#confirmations = new CallConfirmations({
      jobs: deps.jobs,
      rest: deps.rest,
      log: deps.log,
      lingerMs: deps.reportLingerMs ?? 1_000,
      track: (task) => {
        const tracked = task.finally(() => {
          this.#inFlight.delete(tracked);
          this.#confirmSignal.notify();
        });
        this.#inFlight.add(tracked);
      },
      onConfirmed: () => this.#dispatchSignal.notify(),
    });
  }

  get running(): boolean {
    return !this.#stopped;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const requeued = this.deps.jobs.requeueInterrupted();
    if (requeued > 0) this.deps.log.warn({ requeued }, 'jobs interrupted by a previous stop are queued again');
    this.#loops = [this.#confirmLoop(), this.#dispatchLoop(), this.#reportLoop()];
  }

  /** A robot call was stored: it waits for confirmation, or (input already wrong) for its report. */
  callAccepted(): void {
    this.#confirmSignal.notify();
    this.#reportSignal.notify();
  }

  wake(): void {
    this.#confirmSignal.notify();
    this.#dispatchSignal.notify();
    this.#reportSignal.notify();
  }

  async stop(graceMs = 10_000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.wake();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.all([...this.#loops, ...this.#inFlight]), grace]);
    clearTimeout(timer);
  }

  async #confirmLoop(): Promise<void> {
    while (!this.#stopped) {
      let wait = IDLE_POLL_MS;
      try {
        wait = this.#confirmations.startDue(IDLE_POLL_MS);
      } catch (error) {
        this.deps.log.error({ err: String(error) }, 'confirmation scheduling failed');
      }
      await this.#confirmSignal.wait(wait);
    }
  }

  async #dispatchLoop(): Promise<void> {
    while (!this.#stopped) {
      let claimed = { started: 0, pageFull: false };
      try {
        claimed = this.#dispatch();
      } catch (error) {
        this.deps.log.error({ err: String(error) }, 'dispatch failed');
      }
      // A pass that started work and read a full page may have left claimable jobs beyond it: look
      // again at once. Otherwise every due job was seen, and those left wait for a slot (a wake-up).
      await this.#dispatchSignal.wait(claimed.started > 0 && claimed.pageFull ? 0 : this.#idleWait());
    }
  }

  /** Until the next retry falls due; jobs already due but blocked by a full portal wait for a wake-up. */
  #idleWait(): number {
    const next = this.deps.jobs.nextDueAt();
    const now = Date.now();
    return next === undefined || next <= now ? IDLE_POLL_MS : Math.min(IDLE_POLL_MS, Math.max(5, next - now));
  }

  /** Starts what may start; returns how many jobs were claimed. */
  #dispatch(): { started: number; pageFull: boolean } {
    const full = [...this.#runningByPortal].filter(([, running]) => running >= this.deps.portalConcurrency).map(([memberId]) => memberId);
    let started = 0;
    const due = this.deps.jobs.due('queued', DISPATCH_PAGE, full);
    for (const job of due) {
      if (this.#stopped) break;
      const running = this.#runningByPortal.get(job.memberId) ?? 0;
      if (running >= this.deps.portalConcurrency) continue;
      const claimed = this.deps.jobs.claim(job.id, 10 * 60_000);
      if (!claimed) continue;
      started += 1;
      this.#runningByPortal.set(job.memberId, running + 1);
      const task = this.#execute(claimed).finally(() => {
        this.#runningByPortal.set(job.memberId, (this.#runningByPortal.get(job.memberId) ?? 1) - 1);
        this.#inFlight.delete(task);
        // A slot is free and a result may be ready; confirmations do not wait for runs.
        this.#dispatchSignal.notify();
        this.#reportSignal.notify();
      });
      this.#inFlight.add(task);
    }
    return { started, pageFull: due.length === DISPATCH_PAGE };
  }

  async #execute(job: JobRow): Promise<void> {
    const activity = findActivity(job.robotCode);
    if (!activity) {
      this.deps.jobs.finish(job.id, { status: 'failed', error: `unknown robot code ${job.robotCode}` }, `Unknown robot code ${job.robotCode}`);
      return;
    }
    const log = this.deps.log.child({ memberId: job.memberId, jobId: job.id, code: job.robotCode });
    let run: RobotRun | undefined;
    try {
      const prepared = this.#prepare(activity, job, log);
      run = prepared.run;
      if (Date.now() > job.deadlineAt) {
        await this.#giveUp(activity, job, run, `gave up at the deadline${job.lastError ? `: ${job.lastError}` : ''}`, log);
        return;
      }
      const outcome = await activity.run(run, prepared.properties);
      this.deps.jobs.finish(job.id, outcome.returnValues, outcome.logMessage);
      log.info({ status: outcome.returnValues.status }, 'robot run finished');
    } catch (error) {
      await this.#handleFailure(activity, job, error, log, run);
    }
  }

  /** Everything a run needs; a portal that cannot run robots is a RobotFailure here. */
  #prepare(activity: Activity, job: JobRow, log: Logger): { run: RobotRun; properties: unknown } {
    const portal = this.deps.portals.get(job.memberId);
    if (portal?.status === 'reauth_required') throw new RobotFailure(new PortalUnavailableError(portal.memberId, 'reauth_required').message);
    if (portal?.status !== 'active') throw new RobotFailure('the app is not installed on this portal any more');
    const settings = readSettings(portal.settings, this.deps.defaultChat2DeskUrl);
    const directory = this.deps.directoryFor(portal, settings);
    if (!directory) {
      throw new RobotFailure(
        portal.hasChat2deskToken
          ? `the portal's Chat2Desk address ${settings.chat2deskApiUrl} is no longer allowed on this server: an admin must pick an allowed one in the app settings`
          : 'Chat2Desk is not configured for this portal: an admin must enter the Chat2Desk API token in the app settings',
      );
    }
    const parsed = v.safeParse(activity.schema, JSON.parse(job.properties));
    if (!parsed.success) throw new RobotFailure(parsed.issues.map((issue) => issue.message).join('; '));
    return {
      properties: parsed.output,
      run: {
        portal,
        settings,
        chat2desk: directory.api,
        directory,
        bitrix24: {
          call: (method, params, options) => this.deps.rest.call(portal.memberId, method, params, options),
          batch: (commands, options) => this.deps.rest.batch(portal.memberId, commands, options),
        },
        users: {
          byEmail: (email) => this.deps.users.byEmail(portal.memberId, email),
          byId: (id) => this.deps.users.byId(portal.memberId, id),
        },
        documentId: JSON.parse(job.documentId) as string[],
        runId: job.publicId,
        acceptedAt: job.createdAt,
        attempt: job.attempts,
        ledger: bindLedger(this.deps.effects, { memberId: portal.memberId, owner: job.publicId, clock: this.deps.clock }),
        log,
      },
    };
  }

  /** Ends a run that is out of time or attempts; an effect in doubt is settled first (Activity.settle). */
  async #giveUp(activity: Activity, job: JobRow, run: RobotRun | undefined, message: string, log: Logger): Promise<void> {
    if (run && activity.settle) {
      try {
        const settled = await activity.settle(run);
        if (settled) {
          this.deps.jobs.finish(job.id, settled.returnValues, settled.logMessage);
          log.info({ status: settled.returnValues.status }, 'robot run settled at give-up: its effect had happened');
          return;
        }
      } catch (error) {
        log.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not settle the run at give-up');
      }
    }
    const outcome = activity.failed(message);
    this.deps.jobs.finish(job.id, outcome.returnValues, outcome.logMessage);
    log.warn({ error: message }, 'robot run given up');
  }

  async #handleFailure(activity: Activity, job: JobRow, error: unknown, log: Logger, run: RobotRun | undefined): Promise<void> {
    const fail = (message: string) => {
      const outcome = activity.failed(message);
      this.deps.jobs.finish(job.id, outcome.returnValues, outcome.logMessage);
      log.warn({ error: message }, 'robot run failed');
    };
    if (error instanceof RobotFailure) return fail(error.message);
    if (error instanceof Chat2DeskError && !error.transient) {
      return fail(error.kind === 'auth' ? `Chat2Desk rejected the API token: ${error.apiMessage}` : `Chat2Desk: ${error.apiMessage}`);
    }
    if (error instanceof PortalUnavailableError) return fail(error.message);
    // Bitrix24 refusals other than load or server trouble (access, validation, not found) will not change by waiting.
    if (error instanceof Bitrix24Error && !error.refusedForLoad && error.httpStatus < 500) {
      return fail(`Bitrix24 refused ${error.method}: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`);
    }
    const message = error instanceof Error ? error.message : String(error);
    // OAuthError: the authorization server failed during a refresh (a refused grant arrives as PortalUnavailableError).
    const expected =
      error instanceof EffectBusyError ||
      error instanceof Chat2DeskError ||
      error instanceof Bitrix24Error ||
      error instanceof Bitrix24TransportError ||
      error instanceof OAuthError;
    if (!expected && job.attempts >= (this.deps.maxUnexpectedAttempts ?? 5))
      return this.#giveUp(activity, job, run, `internal error after ${job.attempts} attempts: ${message}`, log);
    const retryAt = Date.now() + backoffMs(job.attempts, 1_000, 5 * 60_000);
    if (retryAt > job.deadlineAt) return this.#giveUp(activity, job, run, `gave up after ${job.attempts} attempts: ${message}`, log);
    if (!expected) log.error({ err: message }, 'unexpected error in robot run; retrying');
    else log.warn({ err: message, retryInMs: retryAt - Date.now() }, 'transient failure; retrying');
    this.deps.jobs.retryLater(job.id, retryAt, message);
  }

  async #reportLoop(): Promise<void> {
    while (!this.#stopped) {
      let wait = IDLE_POLL_MS;
      try {
        wait = this.#startReports();
      } catch (error) {
        this.deps.log.error({ err: String(error) }, 'report scheduling failed');
      }
      await this.#reportSignal.wait(wait);
    }
  }

  /** Starts one report per portal that has results ready; returns how long to sleep before looking again. */
  #startReports(): number {
    const linger = this.deps.reportLingerMs ?? 1_000;
    const now = Date.now();
    let wait = IDLE_POLL_MS;
    for (const [memberId, ready] of groupByPortal(this.deps.jobs.due('reporting', 5_000, [...this.#reportingPortals]))) {
      if (this.#reportingPortals.has(memberId)) continue;
      // While more runs of this portal are under way, let results gather into one batch request;
      // a little longer while a full batch of them is still to come (a burst).
      let active: number | undefined;
      const stillActive = () => (active ??= this.deps.jobs.activeCount(memberId));
      const gather = gatherWait(ready, now, {
        lingerMs: linger,
        moreOnTheWay: () => stillActive() > 0,
        worthWaitingLonger: () => ready.length + stillActive() >= BATCH_LIMIT,
      });
      if (gather !== undefined) {
        wait = Math.min(wait, gather);
        continue;
      }
      this.#reportingPortals.add(memberId);
      const task = this.#report(memberId, ready.slice(0, BATCH_LIMIT)).finally(() => {
        this.#reportingPortals.delete(memberId);
        this.#inFlight.delete(task);
        this.#reportSignal.notify();
      });
      this.#inFlight.add(task);
    }
    return wait;
  }

  async #report(memberId: string, batch: ReportRow[]): Promise<void> {
    const log = this.deps.log.child({ memberId });
    try {
      const outcome = await this.deps.rest.batch(
        memberId,
        batch.map((job) => ({
          key: `job${job.id}`,
          method: 'bizproc.event.send',
          params: { EVENT_TOKEN: job.eventToken, RETURN_VALUES: JSON.parse(job.returnValues ?? '{}'), LOG_MESSAGE: job.logMessage ?? '' },
        })),
        { idempotent: true }, // a repeated event.send is answered true and ignored (docs/protocols.md B8)
      );
      const delivered: number[] = [];
      const refused: number[] = [];
      const retry: number[] = [];
      for (const job of batch) {
        const error = outcome.errors[`job${job.id}`];
        if (!error) delivered.push(job.id);
        else if (commandErrorKind(error) === 'transient') retry.push(job.id);
        else refused.push(job.id);
      }
      this.deps.jobs.markReported(delivered);
      // ACCESS_DENIED: the workflow no longer exists or no longer waits. Other refusals of the
      // command itself will not change by repeating it either.
      for (const job of batch.filter((item) => refused.includes(item.id))) {
        const error = outcome.errors[`job${job.id}`]!;
        this.deps.jobs.markReported(
          [job.id],
          commandErrorKind(error) === 'access_denied'
            ? 'Bitrix24 refused the result: the workflow no longer waits for it'
            : `Bitrix24 refused the result: ${describeCommandError(error)}`,
        );
      }
      if (refused.length) log.warn({ jobs: refused }, 'bitrix24 refused results for workflows that no longer wait');
      if (retry.length)
        this.#retryReports(
          batch.filter((job) => retry.includes(job.id)),
          'Bitrix24 refused some results',
        );
    } catch (error) {
      if (error instanceof PortalUnavailableError && error.reason === 'not_installed') {
        this.deps.jobs.markReported(
          batch.map((job) => job.id),
          error.message,
        );
        log.error({ err: error.message }, 'results cannot be delivered');
        return;
      }
      // A portal waiting for reauthorisation gets it back with a reinstall, or its installer's next
      // robot call once the authorization server has proven the tokens it carries.
      this.#retryReports(batch, error instanceof Error ? error.message : String(error));
      log.warn({ err: error instanceof Error ? error.message : String(error) }, 'result delivery failed; retrying');
    }
  }

  #retryReports(batch: ReportRow[], error: string): void {
    const attempts = Math.max(...batch.map((job) => job.reportAttempts)) + 1;
    // Given up by age, not by count: a workflow waits for its result through long Bitrix24 outages.
    const oldest = Math.min(...batch.map((job) => job.finishedAt ?? job.createdAt));
    if (Date.now() - oldest > REPORT_GIVE_UP_MS) {
      this.deps.jobs.markReported(
        batch.map((job) => job.id),
        `gave up delivering the result: ${error}`,
      );
      return;
    }
    this.deps.jobs.retryReportLater(
      batch.map((job) => job.id),
      Date.now() + backoffMs(attempts, 1_000, 5 * 60_000),
      error,
    );
  }
}

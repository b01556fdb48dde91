import type { RobotRegistry } from '../activities/index.js';
import { commandErrorKind } from '../bitrix24/batch-errors.js';
import { PortalUnavailableError } from '../bitrix24/errors.js';
import { BATCH_LIMIT, type Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import type { ConfirmationRow, JobStore } from '../db/jobs.js';
import type { Logger } from '../log.js';
import { backoffMs } from '../rate-limit.js';
import { batchHold, PortalBatches } from './batching.js';
import { robotFailed } from './kinds/robot.js';

/** What the workflow's log shows for a confirmed call; Bitrix24 refuses an empty one (docs/protocols.md B6). */
export const CONFIRMATION_LOG_MESSAGE = 'Chat2Desk: run accepted';
export const NOT_CONFIRMED = 'Bitrix24 did not confirm this robot call: forged or no longer waiting';

export interface ConfirmationDeps {
  jobs: JobStore;
  rest: Bitrix24Rest;
  robots: RobotRegistry;
  clock: Clock;
  log: Logger;
  /** How long a call may wait for others of its portal to share one batch request. */
  lingerMs: number;
  /** Registers a started batch so that a stopping worker can wait for it. */
  track(task: Promise<void>): void;
  /** Where other processes confirm from the same queue: how long a batch holds its calls (src/jobs/batching.ts BatchHold). */
  holdMs?: number;
  /** Called when calls were confirmed and may run. */
  onConfirmed(): void;
}

/**
 * A robot call names its portal by the application token, but Bitrix24 also puts that token into
 * every page it opens for the app (docs/protocols.md B0), so any employee can forge a call with
 * it. Before a call has any effect, its portal confirms it: `bizproc.activity.log` with the call's
 * event token, sent with our installer's tokens, succeeds only for an event token Bitrix24 issued
 * and whose workflow step still waits (B6); ACCESS_DENIED means forged or no longer waiting. The
 * tokens that arrived with the call prove nothing here: an employee gets valid ones with every page.
 * Calls of one portal are confirmed together, up to 50 in one `batch` request.
 */
export class CallConfirmations {
  readonly #batches: PortalBatches<ConfirmationRow>;

  constructor(private readonly deps: ConfirmationDeps) {
    this.#batches = new PortalBatches({
      lingerMs: deps.lingerMs,
      // A burst of calls arrives over a second or so: let them gather into one batch request; a
      // little longer while the portal has a batch's worth of confirmed runs still waiting to start.
      policy: (memberId) => ({
        moreOnTheWay: async () => true,
        worthWaitingLonger: async () => (await deps.jobs.waitingToRun(memberId)) >= BATCH_LIMIT,
      }),
      send: (memberId, batch) => this.#confirm(memberId, batch),
      track: deps.track,
      // Two processes confirming one call would write the workflow's log line twice.
      hold: batchHold(deps.jobs, 'confirming', deps.holdMs),
    });
  }

  /** Starts one confirmation batch per portal with calls waiting; returns how long to sleep. */
  async startDue(idleWaitMs: number): Promise<number> {
    const now = this.deps.clock.now();
    const waiting = await this.deps.jobs.dueConfirmations(5_000, this.#batches.busyPortals(), BATCH_LIMIT);
    for (const job of waiting.filter((item) => item.deadlineAt < now)) await this.#giveUp(job);
    return this.#batches.start(
      waiting.filter((job) => job.deadlineAt >= now),
      now,
      idleWaitMs,
    );
  }

  async #confirm(memberId: string, batch: ConfirmationRow[]): Promise<void> {
    const log = this.deps.log.child({ memberId });
    try {
      const outcome = await this.deps.rest.batch(
        memberId,
        batch.map((job) => ({ key: `job${job.id}`, method: 'bizproc.activity.log', params: { EVENT_TOKEN: job.eventToken, LOG_MESSAGE: CONFIRMATION_LOG_MESSAGE } })),
        { idempotent: true }, // a repeated log line is harmless
      );
      const confirmed: number[] = [];
      const denied: number[] = [];
      const retry: ConfirmationRow[] = [];
      for (const job of batch) {
        const key = `job${job.id}`;
        // bizproc.activity.log answers `true` (docs/protocols.md B6); a command missing from the answer proved nothing.
        if (outcome.results[key] === true) confirmed.push(job.id);
        else if (outcome.errors[key] && commandErrorKind(outcome.errors[key]) === 'access_denied') denied.push(job.id);
        // Anything else proves neither: the call waits, unrun, until the portal says or its deadline passes.
        else retry.push(job);
      }
      await this.deps.jobs.confirm(confirmed);
      await this.deps.jobs.refuseUnconfirmed(denied, NOT_CONFIRMED);
      if (denied.length) log.warn({ jobs: denied }, 'robot calls refused: Bitrix24 did not confirm their event tokens (forged, or the workflow no longer waits)');
      if (retry.length) {
        const errors = retry.map((job) => outcome.errors[`job${job.id}`]);
        const codes = [...new Set(errors.map((error) => error?.error ?? 'no answer'))];
        if (errors.some((error) => !error || commandErrorKind(error) !== 'transient')) log.warn({ codes }, 'unexpected answer to bizproc.activity.log; asking again later');
        await this.#retry(retry, `Bitrix24 could not confirm the call: ${codes.join(', ')}`);
      }
      if (confirmed.length) this.deps.onConfirmed();
    } catch (error) {
      if (error instanceof PortalUnavailableError && error.reason === 'not_installed') {
        await this.deps.jobs.refuseUnconfirmed(
          batch.map((job) => job.id),
          error.message,
        );
        return;
      }
      // Load, outage, or a portal waiting for reauthorisation: nothing runs until the portal can say.
      const message = error instanceof Error ? error.message : String(error);
      await this.#retry(batch, message);
      log.warn({ err: message }, 'robot calls could not be confirmed yet; asking again later');
    }
  }

  async #retry(batch: ConfirmationRow[], error: string): Promise<void> {
    const attempts = Math.max(...batch.map((job) => job.confirmAttempts)) + 1;
    // Not past the deadline: the pass after it ends the run (#giveUp).
    const at = Math.min(this.deps.clock.now() + backoffMs(attempts, 1_000, 5 * 60_000), Math.min(...batch.map((job) => job.deadlineAt)) + 1);
    await this.deps.jobs.retryConfirmationLater(
      batch.map((job) => job.id),
      at,
      error,
    );
  }

  async #giveUp(job: ConfirmationRow): Promise<void> {
    const reason = `Bitrix24 could not confirm this robot call before its deadline${job.lastError ? `: ${job.lastError}` : ''}`;
    const outcome = robotFailed(this.deps.robots, job.robotCode, reason);
    await this.deps.jobs.failUnconfirmed(job.id, outcome.returnValues, outcome.logMessage);
    this.deps.log.warn({ memberId: job.memberId, jobId: job.id, error: reason }, 'robot call given up unconfirmed; nothing was run');
  }
}

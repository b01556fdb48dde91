import { commandErrorKind, describeCommandError } from '../bitrix24/batch-errors.js';
import { PortalUnavailableError } from '../bitrix24/errors.js';
import { BATCH_LIMIT, type Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import type { JobStore, ReportRow } from '../db/jobs.js';
import type { Logger } from '../log.js';
import { backoffMs } from '../rate-limit.js';
import { batchHold, PortalBatches } from './batching.js';
import { ROBOT_KIND } from './kinds/robot.js';

/** How long an undelivered result is retried (Bitrix24 outage, lost authorisation) before it is dropped. */
const REPORT_GIVE_UP_MS = 3 * 24 * 3600_000;

export interface ResultReportsDeps {
  jobs: JobStore;
  rest: Bitrix24Rest;
  clock: Clock;
  log: Logger;
  /** How long a finished result may wait for others of its portal to share one batch request. */
  lingerMs: number;
  /** Registers a started batch so that a stopping worker can wait for it. */
  track(task: Promise<void>): void;
  /** Where other processes report from the same queue: how long a batch holds its results (src/jobs/batching.ts BatchHold). */
  holdMs?: number;
}

/**
 * Sends finished robot results back to their workflows with bizproc.event.send, up to 50 of a
 * portal in one `batch`: a result waits up to a linger for others while more runs of its portal
 * are under way, and a little longer while a full batch of them is still to come (a burst).
 */
export class ResultReports {
  readonly #batches: PortalBatches<ReportRow>;

  constructor(private readonly deps: ResultReportsDeps) {
    this.#batches = new PortalBatches({
      lingerMs: deps.lingerMs,
      policy: (memberId, readyCount) => {
        let active: Promise<number> | undefined;
        const stillActive = () => (active ??= deps.jobs.activeCount(memberId, ROBOT_KIND, BATCH_LIMIT));
        return {
          moreOnTheWay: async () => (await stillActive()) > 0,
          worthWaitingLonger: async () => readyCount + (await stillActive()) >= BATCH_LIMIT,
        };
      },
      send: (memberId, batch) => this.#report(memberId, batch),
      track: deps.track,
      // Two processes must not both send a result: each bizproc.event.send goes once.
      hold: batchHold(deps.jobs, 'reporting', deps.holdMs),
    });
  }

  /** Starts one report per portal that has results ready; returns how long to sleep before looking again. */
  async startDue(idleWaitMs: number): Promise<number> {
    const now = this.deps.clock.now();
    const ready = await this.deps.jobs.dueReportSummary(this.#batches.busyPortals());
    return this.#batches.startSummarised(ready, now, idleWaitMs, (memberId) => this.deps.jobs.dueReports(memberId, BATCH_LIMIT));
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
      await this.deps.jobs.markReported(delivered);
      // ACCESS_DENIED: the workflow no longer exists or no longer waits. Other refusals of the
      // command itself will not change by repeating it either.
      for (const job of batch.filter((item) => refused.includes(item.id))) {
        const error = outcome.errors[`job${job.id}`]!;
        await this.deps.jobs.markReported(
          [job.id],
          commandErrorKind(error) === 'access_denied'
            ? 'Bitrix24 refused the result: the workflow no longer waits for it'
            : `Bitrix24 refused the result: ${describeCommandError(error)}`,
        );
      }
      if (refused.length) log.warn({ jobs: refused }, 'bitrix24 refused results for workflows that no longer wait');
      if (retry.length)
        await this.#retry(
          batch.filter((job) => retry.includes(job.id)),
          'Bitrix24 refused some results',
        );
    } catch (error) {
      if (error instanceof PortalUnavailableError && error.reason === 'not_installed') {
        await this.deps.jobs.markReported(
          batch.map((job) => job.id),
          error.message,
        );
        log.error({ err: error.message }, 'results cannot be delivered');
        return;
      }
      // A portal waiting for reauthorisation gets it back with a reinstall, or its installer's next
      // robot call once the authorization server has proven the tokens it carries.
      await this.#retry(batch, error instanceof Error ? error.message : String(error));
      log.warn({ err: error instanceof Error ? error.message : String(error) }, 'result delivery failed; retrying');
    }
  }

  async #retry(batch: ReportRow[], error: string): Promise<void> {
    const now = this.deps.clock.now();
    const attempts = Math.max(...batch.map((job) => job.reportAttempts)) + 1;
    // Given up by age, not by count: a workflow waits for its result through long Bitrix24 outages.
    const oldest = Math.min(...batch.map((job) => job.finishedAt ?? job.createdAt));
    if (now - oldest > REPORT_GIVE_UP_MS) {
      await this.deps.jobs.markReported(
        batch.map((job) => job.id),
        `gave up delivering the result: ${error}`,
      );
      return;
    }
    await this.deps.jobs.retryReportLater(
      batch.map((job) => job.id),
      now + backoffMs(attempts, 1_000, 5 * 60_000),
      error,
    );
  }
}

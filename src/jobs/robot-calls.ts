import * as v from 'valibot';
import { excerpt, type Activity } from '../activities/activity.js';
import type { RobotRegistry } from '../activities/index.js';
import { propertiesOutOfBounds, type RobotCall } from '../bitrix24/robot-call.js';
import type { Clock } from '../clock.js';
import { UnconfirmedLimitReached } from '../db/jobs.js';
import type { Portal } from '../db/portals.js';
import type { Logger } from '../log.js';
import { searchablePhone } from '../phone.js';
import { ROBOT_KIND } from './kinds/robot.js';
import type { Pipeline } from './pipeline.js';

/** Bitrix24 needs our answer before its own timeout; this much is kept in hand for the report. */
const TIMEOUT_MARGIN_MS = 30_000;

export interface AcceptDeps {
  pipeline: Pipeline;
  robots: RobotRegistry;
  clock: Clock;
  robotDeadlineSeconds: number;
  /** Calls of one portal waiting for Bitrix24's confirmation; beyond this a call is refused and not stored. */
  maxUnconfirmedPerPortal: number;
  log: Logger;
}

export type Acceptance = { status: 'accepted' | 'duplicate'; jobId: number } | { status: 'refused'; error: string } | { status: 'overloaded'; error: string };

/**
 * Takes a robot call from a known portal and makes it durable before Bitrix24 gets its 200. The
 * job runs only after the portal confirms the call (src/jobs/confirmations.ts). Input that is
 * already known to be wrong becomes a failed result at once, so the workflow finishes and can
 * branch; sending that result needs no confirmation, Bitrix24 refuses it for a forged event token.
 */
export class RobotCalls {
  /**
   * Per portal: until when calls are refused without asking the database, after the insert found
   * the bound reached. Refusing for this second is the safe side (nothing more is stored), and a
   * flood of forged calls past the bound does not pay the insert's count each.
   */
  readonly #fullUntil = new Map<string, number>();

  constructor(private readonly deps: AcceptDeps) {}

  async accept(portal: Portal, call: RobotCall): Promise<Acceptance> {
    if (!call.useSubscription) {
      // bizproc.activity.log works only while the step waits (docs/protocols.md B6), so a call that does not
      // wait cannot be confirmed. Ours are registered with USE_SUBSCRIPTION=Y; only a forger sends N.
      this.deps.log.warn({ memberId: portal.memberId, code: call.code }, 'robot call refused: it does not wait for its result, so Bitrix24 cannot confirm it');
      return { status: 'refused', error: 'A robot call that does not wait for its result (use_subscription=N) cannot be confirmed by Bitrix24 and is not run' };
    }
    const now = this.deps.clock.now();
    if (now < (this.#fullUntil.get(portal.memberId) ?? 0)) {
      this.deps.log.debug({ memberId: portal.memberId }, 'robot call refused: the portal had its bound of unconfirmed calls a moment ago');
      return this.#overloaded();
    }
    const limit = call.timeoutSeconds > 0 ? call.timeoutSeconds * 1000 - TIMEOUT_MARGIN_MS : Infinity;
    const deadlineAt = now + Math.max(5_000, Math.min(this.deps.robotDeadlineSeconds * 1000, limit));
    const activity = this.deps.robots.find(call.code);
    let immediateResult: { returnValues: Record<string, unknown>; logMessage: string } | undefined;
    if (!activity) {
      const code = excerpt(call.code);
      immediateResult = { returnValues: { status: 'failed', error: `unknown robot code ${code}` }, logMessage: `Unknown robot code ${code}` };
    } else {
      // Every property is bounded before the robot's schema reads it: one value may be as large as the body.
      const problems = propertiesOutOfBounds(call.properties) ?? schemaProblems(activity, call.properties);
      if (problems) immediateResult = activity.failed(`${activity.name.en}: ${problems}`);
    }
    let stored: { job: { id: number }; duplicate: boolean };
    try {
      stored = await this.deps.pipeline.enqueue(
        ROBOT_KIND,
        portal.memberId,
        call.properties,
        {
          // Bitrix24 posts each call once; a repeated delivery of the same event token is not run again.
          dedupKey: call.eventToken,
          robot: { eventToken: call.eventToken, robotCode: call.code, documentId: call.documentId },
          deadlineAt,
          immediateResult,
          // The event log finds runs by the client's phone (src/event-log.ts). A call that runs gets it
          // from the worker with its finish (src/jobs/kinds/robot.ts): normalising costs the
          // acknowledgement nothing. Only a call refused here never runs, so it is normalised here.
          phone: immediateResult
            ? searchablePhone(call.properties.phone, typeof portal.settings.defaultCountry === 'string' ? portal.settings.defaultCountry : undefined)
            : undefined,
        },
        // Anyone with a page's application token can make calls (docs/protocols.md B0); until Bitrix24
        // confirms them each is a stored row, so their number is bounded, by the insert itself so that
        // calls arriving together cannot pass the bound together. Bitrix24 shows the robot as failed.
        { maxConfirming: this.deps.maxUnconfirmedPerPortal },
      );
    } catch (error) {
      if (!(error instanceof UnconfirmedLimitReached)) throw error;
      this.#fullUntil.set(portal.memberId, now + 1_000);
      this.deps.log.warn({ memberId: portal.memberId, limit: error.limit }, 'robot call refused: too many calls of this portal wait for confirmation');
      return this.#overloaded();
    }
    const { job, duplicate } = stored;
    if (duplicate) {
      this.deps.log.info({ memberId: portal.memberId, jobId: job.id }, 'repeated robot call acknowledged, not run again');
    } else {
      // Every accepted call is already recorded durably as its job row; a line per call at info cost
      // about 5% of an acknowledgement in the benchmark's profile (half of it pino's redaction), so
      // only calls refused for their input are logged at info.
      const level = immediateResult ? 'info' : 'debug';
      this.deps.log[level]({ memberId: portal.memberId, jobId: job.id, code: excerpt(call.code), invalid: Boolean(immediateResult) }, 'robot call accepted');
    }
    return { status: duplicate ? 'duplicate' : 'accepted', jobId: job.id };
  }

  #overloaded(): Acceptance {
    const limit = this.deps.maxUnconfirmedPerPortal;
    return {
      status: 'overloaded',
      error: `Too many robot calls of this portal (${limit}) are waiting for Bitrix24 to confirm them; this call was not stored, run the robot again later`,
    };
  }
}

/** The schema's complaints about the properties, each once; undefined when they are valid. */
function schemaProblems(activity: Activity, properties: Record<string, unknown>): string | undefined {
  const parsed = v.safeParse(activity.schema, properties);
  return parsed.success ? undefined : [...new Set(parsed.issues.map((issue) => issue.message))].join('; ');
}

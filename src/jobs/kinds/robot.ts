import * as v from 'valibot';
import { RobotFailure } from '../../activities/activity.js';
import type { RobotRegistry } from '../../activities/index.js';
import type { JobRow } from '../../db/jobs.js';
import { searchablePhone } from '../../phone.js';
import type { JobOutcome, JobKind } from '../kinds.js';
import { robotRunFor, type RunContextDeps } from '../run-context.js';

export const ROBOT_KIND = 'robot';

/** A robot call's properties as stored; the robot's own schema reads them when it runs. */
const robotProperties = v.record(v.string(), v.unknown());

/**
 * A robot (or business-process activity) call: confirmed by its portal first, run by the robot its
 * code names (src/activities/), and its result reported to the waiting workflow with
 * bizproc.event.send (src/jobs/reports.ts). One job per event token, ever.
 */
export function robotKind(deps: RunContextDeps & { robots: RobotRegistry }): JobKind<Record<string, unknown>> {
  /**
   * The client's phone of each attempt's job row, normalised by the worker rather than when the call
   * is acknowledged (that path stays cheap), and stored with the finish, whichever way the run ends
   * (the worker hands `failed` the same row it prepared).
   */
  const phones = new WeakMap<object, string>();
  const withPhone = (job: object, outcome: JobOutcome): JobOutcome => {
    const phone = phones.get(job);
    return phone ? { ...outcome, phone } : outcome;
  };
  return {
    name: ROBOT_KIND,
    input: robotProperties,
    needsConfirmation: true,
    dedup: 'forever',
    after: 'report',
    async prepare(job, properties, log) {
      const portal = await deps.portals.get(job.memberId);
      const phone = searchablePhone(properties.phone, typeof portal?.settings.defaultCountry === 'string' ? portal.settings.defaultCountry : undefined);
      if (phone) phones.set(job, phone);
      const activity = deps.robots.find(job.robotCode ?? '');
      if (!activity) throw new RobotFailure(`unknown robot code ${job.robotCode}`);
      const prepared = await robotRunFor(deps, activity, job, properties, log).catch(async (error: unknown) => {
        throw await unlessInDoubt(deps, job, error);
      });
      const settle = activity.settle;
      return {
        run: async () => withPhone(job, await activity.run(prepared.run, prepared.properties)),
        settle: settle
          ? async () => {
              const settled = await settle(prepared.run);
              return settled && withPhone(job, settled);
            }
          : undefined,
        inDoubt: async () => (await prepared.run.ledger.held()).length > 0,
      };
    },
    failed: (job, message) => withPhone(job, robotFailed(deps.robots, job.robotCode, message)),
  };
}

/**
 * A run that cannot even start (portal gone, Chat2Desk unusable) after an earlier attempt left an
 * effect in doubt cannot settle it, so it must not be read as "nothing happened": the failure says so.
 */
async function unlessInDoubt(deps: RunContextDeps, job: JobRow, error: unknown): Promise<unknown> {
  if (!(error instanceof RobotFailure) || job.attempts <= 1) return error;
  const held = await deps.effects.heldBy(job.memberId, job.publicId);
  if (held.length === 0) return error;
  return new RobotFailure(`${error.message}; an earlier attempt may already have done it (the outcome could not be checked)`);
}

/** The workflow's values for a failed run of this robot code (a plain failure for a code we do not know). */
export function robotFailed(robots: RobotRegistry, robotCode: string | null, message: string): JobOutcome {
  const activity = robots.find(robotCode ?? '');
  return activity ? activity.failed(message) : { returnValues: { status: 'failed', error: message }, logMessage: message };
}

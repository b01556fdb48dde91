import * as v from 'valibot';
import { RobotFailure, type Activity, type RobotRun } from '../activities/activity.js';
import { PortalUnavailableError } from '../bitrix24/errors.js';
import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { BitrixUsers } from '../bitrix24/users.js';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import type { JobRow, JobStore } from '../db/jobs.js';
import type { PortalStore } from '../db/portals.js';
import type { EffectStore } from '../db/effects.js';
import type { Clock } from '../clock.js';
import { bindLedger } from './ledger.js';
import type { Logger } from '../log.js';
import type { PortalLanguages } from '../notifications/portal-language.js';

export interface RunContextDeps {
  jobs: JobStore;
  portals: PortalStore;
  rest: Bitrix24Rest;
  users: BitrixUsers;
  /** The exactly-once ledger's rows; each run gets the ledger bound to its portal and job. */
  effects: EffectStore;
  clock: Clock;
  chat2desk: Chat2DeskAccess;
  languages: PortalLanguages;
}

/**
 * Everything one run of a job can see and do, for its portal: portal, settings, Chat2Desk, Bitrix24
 * REST with the installer's tokens (`bitrix24`, when given, in place of plain calls: closed episodes
 * share batches), users, the ledger bound to this job. A portal that cannot take it (uninstalled,
 * waiting for reauthorisation, no usable Chat2Desk account) is a RobotFailure: the run finishes
 * failed with that reason.
 */
export async function runFor(deps: RunContextDeps, job: JobRow, log: Logger, options: { bitrix24?: RobotRun['bitrix24'] } = {}): Promise<RobotRun> {
  const portal = await deps.portals.get(job.memberId);
  if (portal?.status === 'reauth_required') throw new RobotFailure(new PortalUnavailableError(portal.memberId, 'reauth_required').message);
  if (portal?.status !== 'active') throw new RobotFailure('the app is not installed on this portal any more');
  const connection = await deps.chat2desk.connect(portal);
  if (!connection.usable) throw new RobotFailure(connection.reason);
  const { directory, settings } = connection;
  return {
    portal,
    settings,
    chat2desk: directory.api,
    directory,
    bitrix24: options.bitrix24 ?? {
      call: (method, params, callOptions) => deps.rest.call(portal.memberId, method, params, callOptions),
      batch: (commands, batchOptions) => deps.rest.batch(portal.memberId, commands, batchOptions),
    },
    users: {
      byEmail: (email) => deps.users.byEmail(portal.memberId, email),
      byId: (id) => deps.users.byId(portal.memberId, id),
    },
    documentId: JSON.parse(job.documentId ?? '[]') as string[],
    runId: job.publicId,
    acceptedAt: job.createdAt,
    attempt: job.attempts,
    ledger: bindLedger(deps.effects, { memberId: portal.memberId, owner: job.publicId, attempt: job.attempts, clock: deps.clock }),
    clock: deps.clock,
    log,
    language: () => deps.languages.of(portal.memberId),
  };
}

/** A robot run: `runFor`, and properties the robot's schema refuses are a RobotFailure too. */
export async function robotRunFor(deps: RunContextDeps, activity: Activity, job: JobRow, properties: unknown, log: Logger): Promise<{ run: RobotRun; properties: unknown }> {
  const run = await runFor(deps, job, log);
  const parsed = v.safeParse(activity.schema, properties);
  if (!parsed.success) throw new RobotFailure(parsed.issues.map((issue) => issue.message).join('; '));
  return { properties: parsed.output, run };
}

import type { RobotRun } from '../activities/activity.js';
import { RobotFailure } from '../run-failure.js';
import { PortalUnavailableError } from '../bitrix24/errors.js';
import type { JobRow } from '../db/jobs.js';
import { bindLedger } from '../jobs/ledger.js';
import type { RunContextDeps } from '../jobs/run-context.js';
import type { Logger } from '../log.js';
import type { SharedBatches } from './shared-batches.js';

/**
 * What one closed-episode job can see and do: the same context a robot run gets (portal, settings,
 * Chat2Desk, Bitrix24 REST with the installer's tokens through shared batches, the ledger bound to this job), without a
 * workflow document. A portal that cannot take it (uninstalled, waiting for reauthorisation,
 * Chat2Desk unusable) is a failure with the reason.
 */
export async function episodeRunFor(deps: RunContextDeps & { batches: SharedBatches }, job: JobRow, log: Logger): Promise<RobotRun> {
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
    // Episodes of one portal running together share batch requests (the benchmark's budget).
    bitrix24: deps.batches.forPortal(portal.memberId),
    users: {
      byEmail: (email) => deps.users.byEmail(portal.memberId, email),
      byId: (id) => deps.users.byId(portal.memberId, id),
    },
    documentId: [],
    runId: job.publicId,
    acceptedAt: job.createdAt,
    attempt: job.attempts,
    ledger: bindLedger(deps.effects, { memberId: portal.memberId, owner: job.publicId, attempt: job.attempts, clock: deps.clock }),
    clock: deps.clock,
    log,
    language: () => deps.languages.of(portal.memberId),
  };
}

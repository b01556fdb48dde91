import type { BackgroundTasks } from '../background.js';
import type { Clock } from '../clock.js';
import type { JobStore } from '../db/jobs.js';
import type { Portal } from '../db/portals.js';
import { REGISTER_APP_DEADLINE_MS, REGISTER_APP_KIND, REREGISTER_EVERY_MS } from '../jobs/kinds/register-app.js';
import type { Pipeline } from '../jobs/pipeline.js';
import type { CallerTokens } from './form-body.js';
import type { InstallerTokens } from './installer-tokens.js';

export interface AppUpdateDeps {
  jobs: JobStore;
  pipeline: Pipeline;
  installerTokens: InstallerTokens;
  background: BackgroundTasks;
  clock: Clock;
}

/**
 * ONAPPUPDATE: an update drops the app's handlers (docs/protocols.md B1), so the app registers
 * again, as a durable `register_app` job stored before we answer (src/jobs/kinds/register-app.ts).
 * Nothing in the event proves it came from Bitrix24 (the application token is on every page of the
 * app, B0), and a registration costs the portal two batch requests at work priority, so one portal
 * has at most one registration waiting, due no sooner than REREGISTER_EVERY_MS after the previous
 * one started: an update inside that time gets one registration when it ends, so a genuine update
 * is never left without its handlers.
 */
export class AppUpdates {
  constructor(private readonly deps: AppUpdateDeps) {}

  async updated(portal: Portal, tokens: CallerTokens | undefined): Promise<void> {
    const { jobs, pipeline, clock } = this.deps;
    // Kept only once the authorization server says they are the installer's (after the answer);
    // never stored in the job, which is not sealed.
    if (tokens) this.deps.background.run('tokens from update', () => this.deps.installerTokens.adoptFromUpdate(portal, tokens), { memberId: portal.memberId });
    const previous = await jobs.lastRunAt(portal.memberId, REGISTER_APP_KIND);
    await pipeline.enqueue(
      REGISTER_APP_KIND,
      portal.memberId,
      { reason: 'app_update' },
      {
        dedupKey: REGISTER_APP_KIND,
        runAt: previous === undefined ? undefined : previous + REREGISTER_EVERY_MS,
        deadlineAt: clock.now() + REGISTER_APP_DEADLINE_MS,
      },
    );
  }
}

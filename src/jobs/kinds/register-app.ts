import * as v from 'valibot';
import { PortalUnavailableError } from '../../bitrix24/errors.js';
import type { AppRegistration } from '../../bitrix24/registration.js';
import type { PortalStore } from '../../db/portals.js';
import type { Clock } from '../../clock.js';
import { retryWithBackoff } from '../failures.js';
import type { JobKind } from '../kinds.js';

export const REGISTER_APP_KIND = 'register_app';

/** Registrations of one portal start at most once in this long (a forged update costs the portal two batch requests). */
export const REREGISTER_EVERY_MS = 5 * 60_000;
/** A registration keeps retrying (Bitrix24 down, a portal waiting for reauthorisation) this long. */
export const REGISTER_APP_DEADLINE_MS = 24 * 3600_000;

const registerAppInput = v.object({
  /** What asked for it, for the log. */
  reason: v.picklist(['app_update']),
});

/**
 * Registers the robots and events again after ONAPPUPDATE (Bitrix24 drops an app's handlers on
 * update, docs/protocols.md B1). Durable: a failure is retried with backoff, so robots never stay
 * unregistered until an admin happens to save the settings. One pending job per portal; the
 * throttle is its run_at (src/bitrix24/app-updates.ts).
 */
export function registerAppKind(deps: { portals: PortalStore; registration: AppRegistration; clock: Clock }): JobKind<v.InferOutput<typeof registerAppInput>> {
  return {
    name: REGISTER_APP_KIND,
    input: registerAppInput,
    needsConfirmation: false,
    dedup: 'while_pending',
    after: 'done',
    async prepare(job) {
      return {
        run: async () => {
          const portal = await deps.portals.get(job.memberId);
          if (!portal || portal.status === 'uninstalled') return { returnValues: { status: 'skipped' }, logMessage: 'the app is not installed on this portal any more' };
          const result = await deps.registration.register(portal);
          return {
            returnValues: { status: 'registered', robots: result.robots.length, events: result.events.length, triggers: result.triggers.length },
            logMessage: 'robots, triggers and events registered again after an update',
          };
        },
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
    classify(error, job) {
      // A portal waiting for reauthorisation gets tokens back with a reinstall or its installer's next
      // robot call (or the update's own pair, once proven): worth waiting for, unlike an uninstalled one.
      if (error instanceof PortalUnavailableError && error.reason === 'reauth_required') return retryWithBackoff(job, deps.clock.now(), error.message);
      return undefined;
    },
  };
}

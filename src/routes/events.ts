import { Hono } from 'hono';
import type { BackgroundTasks } from '../background.js';
import { callerTokens, record, str } from '../bitrix24/form-body.js';
import type { AppRegistration } from '../bitrix24/registration.js';
import type { Chat2DeskWebhooks } from '../chat2desk/webhooks.js';
import type { JobStore } from '../db/jobs.js';
import type { PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import { readBitrixForm } from './form.js';

/** Lifecycle events. ONAPPUNINSTALL carries no tokens, so the application token is the only proof (protocols §1). */
export function createEventsRoute(deps: {
  portals: PortalStore;
  jobs: JobStore;
  registration: AppRegistration;
  chat2deskWebhooks: Chat2DeskWebhooks;
  background: BackgroundTasks;
  log: Logger;
}) {
  return new Hono().post('/bitrix24/events', async (c) => {
    const fields = await readBitrixForm(c);
    const auth = record(fields.auth);
    const memberId = str(auth.member_id);
    const portal = deps.portals.authenticate(memberId, str(auth.application_token));
    if (!portal) return c.json({ error: 'unknown portal or wrong application token' }, 401);
    const event = str(fields.event).toUpperCase();
    if (event === 'ONAPPUNINSTALL') {
      const removeWebhook = deps.chat2deskWebhooks.prepareRemoval(portal);
      deps.portals.uninstall(memberId);
      if (removeWebhook) deps.background.run('remove chat2desk webhook', removeWebhook, { memberId });
      const cancelled = deps.jobs.cancelPortal(memberId);
      deps.log.info({ memberId, cancelled }, 'portal uninstalled: secrets wiped, jobs stopped');
      return c.json({ status: 'uninstalled' });
    }
    if (event === 'ONAPPUPDATE') {
      const tokens = callerTokens(auth);
      if (tokens) deps.portals.saveRefreshedTokens(memberId, { ...tokens, clientEndpoint: portal.clientEndpoint });
      // An update drops the app's handlers (protocols §1): register again, after answering.
      deps.background.run('re-registration after update', () => deps.registration.register(portal), { memberId });
      return c.json({ status: 'updating' });
    }
    return c.json({ status: 'ignored' });
  });
}

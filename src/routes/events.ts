import { Hono } from 'hono';
import type { AppUpdates } from '../bitrix24/app-updates.js';
import { callerTokens, str } from '../bitrix24/form-body.js';
import { phpMap } from '../bitrix24/values.js';
import type { Uninstalls } from '../bitrix24/uninstall.js';
import type { PortalStore } from '../db/portals.js';
import { readBitrixForm } from './form.js';

/**
 * Lifecycle events. The application token lets an event in, but it is on every page of the app
 * (docs/protocols.md B0), so nothing here acts on it alone: an uninstall waits for the portal to refuse our
 * tokens, tokens in an update are kept only once proven, and registrations after updates are bounded.
 */
export function createEventsRoute(deps: { portals: PortalStore; uninstalls: Uninstalls; appUpdates: AppUpdates }) {
  return new Hono().post('/bitrix24/events', async (c) => {
    const fields = await readBitrixForm(c);
    const auth = phpMap(fields.auth);
    const memberId = str(auth.member_id);
    const portal = await deps.portals.authenticate(memberId, str(auth.application_token));
    if (!portal) return c.json({ error: 'unknown portal or wrong application token' }, 401);
    const event = str(fields.event).toUpperCase();
    if (event === 'ONAPPUNINSTALL') {
      const decision = await deps.uninstalls.request(portal.memberId);
      if (decision === 'uninstalled') return c.json({ status: 'uninstalled' });
      if (decision === 'not confirmed') return c.json({ error: 'The portal still accepts this app: the uninstall did not come from Bitrix24 and changed nothing' }, 401);
      return c.json({ status: 'checking', detail: 'The portal could not be asked yet; the uninstall is recorded and will be decided when it answers' }, 202);
    }
    if (event === 'ONAPPUPDATE') {
      // An update drops the app's handlers (docs/protocols.md B1): registered again after the answer, bounded per portal.
      deps.appUpdates.updated(portal, callerTokens(auth));
      return c.json({ status: 'updating' });
    }
    return c.json({ status: 'ignored' });
  });
}

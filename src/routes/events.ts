import { Hono } from 'hono';
import type { EventHandlers } from '../bitrix24/events/index.js';
import { str } from '../bitrix24/form-body.js';
import { phpMap } from '../bitrix24/values.js';
import type { PortalStore } from '../db/portals.js';
import { readBitrixForm } from './form.js';

/**
 * Bitrix24 events. The application token lets an event in, but it is on every page of the app
 * (docs/protocols.md B0), so no handler acts on it alone (src/bitrix24/events/).
 */
export function createEventsRoute(deps: { portals: PortalStore; events: EventHandlers }) {
  return new Hono().post('/bitrix24/events', async (c) => {
    const fields = await readBitrixForm(c);
    const auth = phpMap(fields.auth);
    const portal = await deps.portals.authenticate(str(auth.member_id), str(auth.application_token));
    if (!portal) return c.json({ error: 'unknown portal or wrong application token' }, 401);
    const answer = await deps.events.handle(str(fields.event), { portal, auth, data: fields.data, ts: str(fields.ts) });
    return c.json(answer.body, answer.status);
  });
}

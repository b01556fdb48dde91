import { Hono, type MiddlewareHandler } from 'hono';
import { EventLogRequestError, type EventLog } from '../event-log.js';
import type { AdminVariables } from './bitrix24-admin.js';

/**
 * The event log for the app page (docs: issue 8 §2 "Event log"): GET lists a portal's entries,
 * POST re-runs a failed closed episode. Both for a portal admin only (`admin` sets `c.var.portal`):
 * the log holds clients' phones and employees' work.
 */
export function createEventLogRoute(deps: { eventLog: EventLog; admin: MiddlewareHandler<AdminVariables> }) {
  return new Hono<AdminVariables>()
    .use('/api/event-log', deps.admin)
    .use('/api/event-log/*', deps.admin)
    .get('/api/event-log', async (c) => {
      try {
        const filter = deps.eventLog.parseQuery(c.get('portal'), c.req.queries());
        return c.json(await deps.eventLog.list(c.get('portal'), filter));
      } catch (error) {
        if (error instanceof EventLogRequestError) return c.json({ error: error.message }, error.httpStatus);
        throw error;
      }
    })
    .post('/api/event-log/:id/rerun', async (c) => {
      try {
        return c.json(await deps.eventLog.rerun(c.get('portal'), c.req.param('id')), 202);
      } catch (error) {
        if (error instanceof EventLogRequestError) return c.json({ error: error.message }, error.httpStatus);
        throw error;
      }
    });
}

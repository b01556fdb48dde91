import { Hono, type MiddlewareHandler } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Clock } from '../clock.js';
import type { PortalStore } from '../db/portals.js';
import type { ViewerVariables } from '../dialogs/viewer.js';
import type { LiveHub } from '../live/hub.js';
import { LiveStream, type LiveTimers } from '../live/stream.js';
import { LiveTicketRefusal, type LiveTickets } from '../live/tickets.js';

export interface LiveRouteDeps {
  /** src/dialogs/viewer.ts `dialogViewer`: the tab or app page token, the scope it gives and its expiry (the stream ends then). */
  viewer: MiddlewareHandler<ViewerVariables>;
  /** src/dialogs/viewer.ts `sameOriginWrites` with the public origin, as every other dialog write takes it (behind a proxy the request's own origin differs). */
  sameOrigin: MiddlewareHandler;
  tickets: LiveTickets;
  hub: LiveHub;
  portals: PortalStore;
  clock: Clock;
  timers: LiveTimers;
}

const NO_TICKET = 'This live ticket was used, has expired or is not ours; ask for a new one (POST /api/live/ticket)';

/**
 * Live updates for an open CRM tab or the Chat workspace.
 *
 * `POST /api/live/ticket` with `Authorization: Bearer <tab token c2dt.… | app page token c2dp.…>`
 *   → 200 `{ ticket, expiresAt }` (ms since the epoch): worth one stream, within 60 s, for this
 *   viewer; 401 `{error, renew:true}` for an expired or forged token (renew through the parent
 *   frame), 403 for a workspace user without access, 429 `{error}` + Retry-After beyond 30 tickets
 *   a minute per user. Reading needs no operator mapping.
 * `GET /api/live?ticket=<ticket>` → `text/event-stream`:
 *   - `: connected` at once, then `: ping` every 25 s;
 *   - `event: dialog` / `data: {"dialogId":number|null,"clientId":number|null,"what":"message"|"state"|"operator"|"tags"|"open_channel"}`
 *     for each Chat2Desk change of a dialog or client the viewer may see, and each client's Open
 *     Channel chat becoming known (`open_channel`): read it again through the dialog API
 *     (`dialogId` null: the client's dialogs);
 *   - the stream ends when the viewer's token expires: get a new token and a new ticket, and reconnect
 *     (reading again what may have changed meanwhile).
 *   A used, expired or unknown ticket → 401 JSON, never a stream (an EventSource retrying the same
 *   URL fails there: reconnect with a new ticket instead). Too many streams → 429 JSON.
 * The page token never goes into a URL: only the ticket does, and it is worth one connection.
 */
export function createLiveRoute(deps: LiveRouteDeps) {
  return new Hono<ViewerVariables>()
    .post('/api/live/ticket', deps.sameOrigin, deps.viewer, async (c) => {
      c.header('cache-control', 'no-store');
      try {
        return c.json(await deps.tickets.issue({ viewer: c.get('viewer') }));
      } catch (error) {
        if (error instanceof LiveTicketRefusal) return c.json({ error: error.message }, 429, { 'retry-after': String(error.retryAfterSeconds) });
        throw error;
      }
    })
    .get('/api/live', async (c) => {
      c.header('cache-control', 'no-store');
      const grant = await deps.tickets.take(c.req.query('ticket'));
      if (!grant) return c.json({ error: NO_TICKET }, 401);
      const issuedFor = grant.viewer.portal;
      const portal = await deps.portals.get(issuedFor.memberId);
      if (!portal || portal.status === 'uninstalled' || portal.installedAt !== issuedFor.installedAt) {
        return c.json({ error: 'The app was uninstalled or installed again since this page opened; open it again' }, 401);
      }
      const live = new LiveStream(grant, deps);
      // Subscribed and attached in one synchronous step: no change reaches the sink before its stream exists.
      const subscription = deps.hub.subscribe(grant.viewer, live);
      if ('refused' in subscription) return c.json({ error: subscription.refused }, 429);
      const response = streamSSE(c, (stream) => live.run(stream, subscription.unsubscribe));
      // streamSSE sets no-cache; a stream of one viewer's events is never stored. Nginx would buffer it otherwise.
      response.headers.set('cache-control', 'no-store');
      response.headers.set('x-accel-buffering', 'no');
      // A stream ends at its token's expiry or at shutdown: its connection goes with it rather than
      // idling (an idle kept-alive connection would hold up the server's close).
      response.headers.set('connection', 'close');
      return response;
    });
}

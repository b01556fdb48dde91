import { type Context, Hono } from 'hono';
import type { Portal } from '../db/portals.js';
import { type PageAuth, pageAdmin } from '../pages/page-auth.js';
import { SettingsRequestError, type SettingsService } from '../settings-service.js';

/**
 * GET/PUT /api/settings for the app page (its page token) and for scripts (a portal admin's own
 * Bitrix24 token with X-Bitrix24-Member-Id, checked with the portal): src/pages/page-auth.ts pageAdmin.
 */
export function createSettingsRoute(deps: { settings: SettingsService; pageAuth: PageAuth }) {
  const refusal = (c: Context, error: SettingsRequestError) =>
    c.json({ error: error.message }, error.httpStatus, error.retryAfterSeconds ? { 'retry-after': String(error.retryAfterSeconds) } : {});
  return new Hono<{ Variables: { portal: Portal } }>()
    .use('/api/settings', pageAdmin(deps))
    .get('/api/settings', async (c) => c.json(await deps.settings.read(c.get('portal'))))
    .put('/api/settings', async (c) => {
      let input: unknown;
      try {
        input = await c.req.json();
      } catch {
        return c.json({ error: 'The body must be a JSON object' }, 400);
      }
      try {
        return c.json(await deps.settings.update(c.get('portal'), input));
      } catch (error) {
        if (error instanceof SettingsRequestError) return refusal(c, error);
        throw error;
      }
    });
}

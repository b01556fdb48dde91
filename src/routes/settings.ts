import { type Context, Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { Portal } from '../db/portals.js';
import { SettingsRequestError, type SettingsService } from '../settings-service.js';

/** GET/PUT /api/settings for the settings page: a portal admin's own Bitrix24 token, checked with the portal. */
export function createSettingsRoute(deps: { settings: SettingsService }) {
  const refusal = (c: Context, error: SettingsRequestError) =>
    c.json({ error: error.message }, error.httpStatus, error.retryAfterSeconds ? { 'retry-after': String(error.retryAfterSeconds) } : {});
  const admin = createMiddleware<{ Variables: { portal: Portal } }>(async (c, next) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
    const memberId = c.req.header('x-bitrix24-member-id');
    if (!bearer || !memberId) return c.json({ error: 'Send Authorization: Bearer <Bitrix24 access token> and X-Bitrix24-Member-Id' }, 401);
    try {
      c.set('portal', await deps.settings.authorizeAdmin(memberId, bearer));
    } catch (error) {
      if (error instanceof SettingsRequestError) return refusal(c, error);
      throw error;
    }
    await next();
  });
  return new Hono<{ Variables: { portal: Portal } }>()
    .use('/api/settings', admin)
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

import { Hono } from 'hono';
import { SettingsRequestError, type SettingsService } from '../settings-service.js';
import { bitrix24Admin, settingsRefusal, type AdminVariables } from './bitrix24-admin.js';

/** GET/PUT /api/settings for the settings page: a portal admin's own Bitrix24 token, checked with the portal. */
export function createSettingsRoute(deps: { settings: SettingsService }) {
  return new Hono<AdminVariables>()
    .use('/api/settings', bitrix24Admin(deps))
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
        if (error instanceof SettingsRequestError) return settingsRefusal(c, error);
        throw error;
      }
    });
}

import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { Portal } from '../db/portals.js';
import { SettingsRequestError, type SettingsService } from '../settings-service.js';

/** Hono variables a route behind `bitrix24Admin` reads: the portal its caller administers. */
export type AdminVariables = { Variables: { portal: Portal } };

/** A refusal of the settings service as the JSON answer, with Retry-After when the check was held back for load. */
export function settingsRefusal(c: Context, error: SettingsRequestError) {
  return c.json({ error: error.message }, error.httpStatus, error.retryAfterSeconds ? { 'retry-after': String(error.retryAfterSeconds) } : {});
}

/**
 * The caller must be an administrator of the portal it names: its own Bitrix24 access token
 * (`Authorization: Bearer`) and the portal's member id (`X-Bitrix24-Member-Id`), checked with the
 * portal (src/settings-service.ts `authorizeAdmin`). Sets `c.var.portal`.
 */
export function bitrix24Admin(deps: { settings: Pick<SettingsService, 'authorizeAdmin'> }) {
  return createMiddleware<AdminVariables>(async (c, next) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
    const memberId = c.req.header('x-bitrix24-member-id');
    if (!bearer || !memberId) return c.json({ error: 'Send Authorization: Bearer <Bitrix24 access token> and X-Bitrix24-Member-Id' }, 401);
    try {
      c.set('portal', await deps.settings.authorizeAdmin(memberId, bearer));
    } catch (error) {
      if (error instanceof SettingsRequestError) return settingsRefusal(c, error);
      throw error;
    }
    await next();
  });
}

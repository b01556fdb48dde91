import { Hono } from 'hono';
import { str } from '../bitrix24/form-body.js';
import { phpMap } from '../bitrix24/values.js';
import { InstallRefused, type InstallClaim, type InstallService } from '../bitrix24/install.js';
import type { ClientAddresses } from '../client-address.js';
import type { Logger } from '../log.js';
import type { AppPageRenderer } from './app-page.js';
import { readBitrixForm } from './form.js';

/**
 * Both install forms: the server-side callback (`event=ONAPPINSTALL` with `auth[...]`) and the
 * install page opened in the portal (`AUTH_ID`, `member_id`, DOMAIN in the query), docs/protocols.md B1.
 * The install page is the app page (src/routes/app-page.ts) in install mode: it calls installFinish.
 */
export function createInstallRoute(deps: { install: InstallService; appPageRenderer: AppPageRenderer; log: Logger; clientAddresses: ClientAddresses }) {
  return new Hono()
    .post('/install', async (c) => {
      // The TCP peer, or what our own proxy saw (TRUSTED_PROXIES): a sender's own X-Forwarded-For cannot bound the sender.
      const address = deps.clientAddresses.of(c);
      const fields = await readBitrixForm(c);
      const auth = phpMap(fields.auth);
      if (str(auth.access_token)) {
        const claim: InstallClaim = {
          memberId: str(auth.member_id),
          domain: str(auth.domain),
          accessToken: str(auth.access_token),
          refreshToken: str(auth.refresh_token),
          expiresIn: Number(str(auth.expires_in)) || 3600,
          applicationToken: str(auth.application_token),
          userId: str(auth.user_id) ? Number(str(auth.user_id)) : null,
        };
        try {
          await deps.install.install(claim, { address });
          return c.json({ status: 'success' });
        } catch (error) {
          if (error instanceof InstallRefused) return c.json({ status: 'error', error: error.message }, error.httpStatus, retryAfter(error));
          throw error;
        }
      }
      if (str(fields.AUTH_ID)) {
        const claim: InstallClaim = {
          memberId: str(fields.member_id),
          domain: c.req.query('DOMAIN') ?? '',
          accessToken: str(fields.AUTH_ID),
          refreshToken: str(fields.REFRESH_ID),
          expiresIn: Number(str(fields.AUTH_EXPIRES)) || 3600,
          applicationToken: str(fields.APPLICATION_TOKEN),
          userId: null,
        };
        try {
          await deps.install.install(claim, { address, opening: true });
        } catch (error) {
          if (error instanceof InstallRefused) {
            const refused = deps.appPageRenderer.refusal(c, c.req.query('LANG'), error.message, error.httpStatus);
            if (error.retryAfterSeconds) refused.headers.set('retry-after', String(error.retryAfterSeconds));
            return refused;
          }
          throw error;
        }
        return deps.appPageRenderer.render(c, fields, { install: true });
      }
      return c.json({ status: 'error', error: 'Not an install request: expected auth[...] (install callback) or AUTH_ID (install page)' }, 400);
    })
    .get('/install', (c) =>
      c.text('This is the install address of Chat2Desk for Bitrix24. Bitrix24 opens it with POST when the app is installed; see the README.', 405, {
        allow: 'POST',
      }),
    );
}

function retryAfter(error: InstallRefused): Record<string, string> {
  return error.retryAfterSeconds ? { 'retry-after': String(error.retryAfterSeconds) } : {};
}

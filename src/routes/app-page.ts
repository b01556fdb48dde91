import { type Context, Hono } from 'hono';
import { str } from '../bitrix24/form-body.js';
import type { Portal } from '../db/portals.js';
import type { Logger } from '../log.js';
import { type AppPageModel, type AppPageService, loadPublicFiles } from '../pages/app-page.js';
import { PAGE_WORDS, pageLanguage } from '../pages/i18n.js';
import { PageAuthError, type PageAuth, pageAdmin, pageAuthRefusal, pageUser } from '../pages/page-auth.js';
import type { SettingsService } from '../settings-service.js';
import { loadAppTemplate } from '../templates.js';
import { readBitrixForm, readJsonObject } from './form.js';

export interface AppPageDeps {
  pageAuth: PageAuth;
  appPage: AppPageService;
  settings: SettingsService;
  log: Logger;
  /** CSP frame-ancestors sources; default: the portal's own host (docs/protocols.md B13). */
  frameAncestors?: string;
}

/** The page Bitrix24 frames, rendered for a verified opening (POST /app, or /install after installing). */
export interface AppPageRenderer {
  render(c: Context, fields: Record<string, unknown>, options: { install: boolean }): Promise<Response>;
  refusal(c: Context, lang: string | undefined, message: string, status: 400 | 401 | 403 | 429 | 502 | 503): Response;
}

/**
 * The dialog a link of ours asked the app page to open: `dialog` of the DEFAULT placement's
 * PLACEMENT_OPTIONS, which carry the page address's query (docs/protocols.md B19). A JSON string
 * written by the browser: anything but digits, or options that are not JSON, is ignored.
 */
export function dialogToOpen(fields: Record<string, unknown>): number | undefined {
  const placement = str(fields.PLACEMENT);
  const raw = str(fields.PLACEMENT_OPTIONS);
  if ((placement !== '' && placement !== 'DEFAULT') || raw === '' || raw.length > 4096) return undefined;
  let options: unknown;
  try {
    options = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const dialog = typeof options === 'object' && options !== null && !Array.isArray(options) ? (options as Record<string, unknown>).dialog : undefined;
  return typeof dialog === 'string' && /^[1-9]\d{0,14}$/.test(dialog) ? Number(dialog) : undefined;
}

/**
 * Headers of a page Bitrix24 frames (the app page, the CRM tab). No X-Frame-Options: Bitrix24 frames
 * the page from the portal's own site (docs/protocols.md B13). A refusal (no portal known) carries no
 * data and no actions: any parent may show it, so the user sees why inside Bitrix24 instead of a
 * blocked frame.
 */
export function framedPageHeaders(frameAncestors: string | undefined, portal: Portal | undefined): Record<string, string> {
  const ancestors = frameAncestors ?? (portal ? portal.domain : '*');
  const connect = portal ? ` ${portal.domain}` : '';
  return {
    'content-security-policy': `default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'${connect}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors ${ancestors}`,
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
  };
}

/**
 * POST /app (Bitrix24 opens the app, PLACEMENT=DEFAULT), the page's JSON APIs (/api/page/*) and its
 * static files (/public/*). The settings themselves go through /api/settings (src/routes/settings.ts).
 */
export function createAppPage(deps: AppPageDeps): { route: Hono<{ Variables: { portal: Portal } }>; renderer: AppPageRenderer } {
  const template = loadAppTemplate();
  const files = loadPublicFiles();
  const assets = Object.fromEntries([...files].map(([name, file]) => [name, `/public/${name}?v=${file.version}`]));

  const headers = (portal: Portal | undefined) => framedPageHeaders(deps.frameAncestors, portal);

  const renderer: AppPageRenderer = {
    async render(c, fields, options) {
      const lang = pageLanguage(c.req.query('LANG'));
      let session: Awaited<ReturnType<PageAuth['open']>>;
      try {
        session = await deps.pageAuth.open({ memberId: str(fields.member_id), applicationToken: str(fields.APPLICATION_TOKEN), authId: str(fields.AUTH_ID) });
      } catch (error) {
        if (error instanceof PageAuthError) return renderer.refusal(c, c.req.query('LANG'), error.message, error.httpStatus);
        throw error;
      }
      const model = await deps.appPage.model(session, {
        lang,
        install: options.install,
        applicationScope: str(fields.APPLICATION_SCOPE),
        assets,
        openDialogId: options.install ? undefined : dialogToOpen(fields),
      });
      return c.html(template(model), 200, headers(session.portal));
    },
    refusal(c, lang, message, status) {
      const language = pageLanguage(lang);
      const model: AppPageModel = {
        lang: language,
        t: PAGE_WORDS[language],
        install: false,
        admin: false,
        error: message,
        domain: '',
        missingScopes: [],
        robots: [],
        triggers: [],
        imMissing: false,
        transports: [],
        pageData: JSON.stringify({ error: message }).replace(/</g, '\\u003c'),
        assets,
      };
      return c.html(template(model), status, headers(undefined));
    },
  };

  const admin = pageAdmin(deps);
  const route = new Hono<{ Variables: { portal: Portal } }>()
    .post('/app', async (c) => renderer.render(c, await readBitrixForm(c), { install: false }))
    .get('/app', (c) => c.text('This is the app page of Chat2Desk for Bitrix24. Bitrix24 opens it with POST inside the portal.', 405, { allow: 'POST' }))
    .post('/api/page/renew', async (c) => {
      const previous = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
      const body = await readJsonObject(c);
      if (!body) return c.json({ error: 'The body must be a JSON object with authId' }, 400);
      if (!previous) return c.json({ error: 'Send Authorization: Bearer <the page token to renew>' }, 401);
      try {
        const session = await deps.pageAuth.renew(previous, typeof body.authId === 'string' ? body.authId : '');
        return c.json({ token: session.token, expiresAt: session.claims.expiresAt, admin: session.claims.admin });
      } catch (error) {
        if (error instanceof PageAuthError) return pageAuthRefusal(c, error);
        throw error;
      }
    })
    .get('/api/page/status', pageUser(deps), async (c) => c.json(await deps.appPage.status(c.get('session').portal)))
    .post('/api/page/webhook/repair', admin, async (c) => {
      try {
        return c.json(await deps.appPage.repairWebhook(c.get('portal')));
      } catch (error) {
        return c.json({ error: error instanceof Error ? error.message : String(error) }, 502);
      }
    })
    .post('/api/page/robots/register', admin, async (c) => {
      try {
        await deps.appPage.registerRobots(c.get('portal'));
        return c.json({ ok: true });
      } catch (error) {
        return c.json({ error: error instanceof Error ? error.message : String(error) }, 502);
      }
    })
    .get('/public/*', (c) => {
      const file = files.get(c.req.path.slice('/public/'.length));
      if (!file) return c.json({ error: 'Not found' }, 404);
      // The URLs the page uses carry the content hash: those never change and are cached for good.
      const pinned = c.req.query('v') === file.version;
      return c.body(new Uint8Array(file.body), 200, {
        'content-type': file.type,
        'cache-control': pinned ? 'public, max-age=31536000, immutable' : 'no-cache',
        etag: `"${file.version}"`,
        'x-content-type-options': 'nosniff',
      });
    });
  return { route, renderer };
}

import { type Context, Hono } from 'hono';
import { str } from '../bitrix24/form-body.js';
import type { TabAuth, TabSession } from '../dialogs/tab-auth.js';
import { bearerOf } from '../dialogs/viewer.js';
import { loadPublicFiles } from '../pages/app-page.js';
import { type PageLanguage, TAB_WORDS, type TabWords, pageLanguage } from '../pages/i18n.js';
import { PageAuthError, pageAuthRefusal } from '../pages/page-auth.js';
import { loadTemplate } from '../templates.js';
import { framedPageHeaders } from './app-page.js';
import { readBitrixForm, readJsonObject } from './form.js';

export interface TabRouteDeps {
  tabAuth: TabAuth;
  /** CSP frame-ancestors sources; default: the portal's own host (docs/protocols.md B13). */
  frameAncestors?: string;
}

/** What templates/tab.hbs renders. */
interface TabPageModel {
  lang: PageLanguage;
  t: TabWords;
  error?: string;
  /** JSON for the tab's script, with `<` escaped so it cannot close the script element. */
  pageData: string;
  assets: Record<string, string>;
}

/** What the page learns of its session, when it opens and on each renewal (the chat may have appeared meanwhile). */
function sessionView(session: TabSession) {
  return {
    token: session.token,
    expiresAt: session.claims.expiresAt,
    phones: session.claims.scope.phones,
    ...(session.openChannelChat ? { openChannelChat: session.openChannelChat } : {}),
  };
}

/**
 * The CRM card tab. POST /tab: Bitrix24 opens it in a lead, deal, contact, company or smart-process
 * card (PLACEMENT=CRM_*_DETAIL_TAB, docs/protocols.md B9); the opening is verified and the record's
 * phones read as the user (src/dialogs/tab-auth.ts), and the page gets a tab token bound to them, and
 * in Open Channels mode the record's latest Open Channel chat (docs/protocols.md B25).
 * Its dialogs come from /api/dialogs/* (src/routes/dialogs.ts). POST /api/tab/renew {authId} with the
 * old token as bearer: a fresh AUTH_ID from the parent frame buys a new token, the phones read again.
 */
export function createTabRoute(deps: TabRouteDeps): Hono {
  const template = loadTemplate<TabPageModel>('tab');
  const files = loadPublicFiles();
  const assets = Object.fromEntries([...files].map(([name, file]) => [name, `/public/${name}?v=${file.version}`]));
  const json = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

  const page = (c: Context, lang: PageLanguage, session: TabSession | undefined, error: string | undefined, status: 200 | 400 | 401 | 403 | 429 | 502) => {
    const t = TAB_WORDS[lang];
    const data = session ? { ...sessionView(session), lang, t } : { error, lang, t };
    const model: TabPageModel = { lang, t, pageData: json(data), assets, ...(error ? { error } : {}) };
    return c.html(template(model), status, framedPageHeaders(deps.frameAncestors, session?.portal));
  };

  return new Hono()
    .post('/tab', async (c) => {
      const lang = pageLanguage(c.req.query('LANG'));
      const fields = await readBitrixForm(c);
      try {
        const session = await deps.tabAuth.open({
          memberId: str(fields.member_id),
          applicationToken: str(fields.APPLICATION_TOKEN),
          authId: str(fields.AUTH_ID),
          placement: str(fields.PLACEMENT),
          placementOptions: str(fields.PLACEMENT_OPTIONS),
        });
        return page(c, lang, session, undefined, 200);
      } catch (error) {
        if (error instanceof PageAuthError) return page(c, lang, undefined, error.message, error.httpStatus);
        throw error;
      }
    })
    .get('/tab', (c) => c.text('This is the Chat2Desk tab of CRM cards. Bitrix24 opens it with POST inside a card.', 405, { allow: 'POST' }))
    .post('/api/tab/renew', async (c) => {
      const previous = bearerOf(c);
      const body = await readJsonObject(c);
      if (!body) return c.json({ error: 'The body must be a JSON object with authId' }, 400);
      const { authId } = body;
      if (!previous) return c.json({ error: 'Send Authorization: Bearer <the tab token to renew>' }, 401);
      try {
        const session = await deps.tabAuth.renew(previous, typeof authId === 'string' ? authId : '');
        return c.json(sessionView(session));
      } catch (error) {
        if (error instanceof PageAuthError) return pageAuthRefusal(c, error);
        throw error;
      }
    });
}

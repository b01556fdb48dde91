import { type Context, Hono } from 'hono';
import { str } from '../bitrix24/form-body.js';
import { CONNECTOR_ID, NotOpenChannelsError } from '../open-channels/connector.js';
import { parseLineOptions } from '../open-channels/lines.js';
import { CONNECTOR_WORDS, type ConnectorLineView, type ConnectorPage, ConnectorPageError, readConnectorPlacement } from '../open-channels/settings-page.js';
import { loadPublicFiles } from '../pages/app-page.js';
import { type PageLanguage, pageLanguage } from '../pages/i18n.js';
import { PageAuthError, type PageAuth, pageAdmin } from '../pages/page-auth.js';
import type { SettingsService } from '../settings-service.js';
import { loadTemplate } from '../templates.js';
import { framedPageHeaders } from './app-page.js';
import type { AdminVariables } from './bitrix24-admin.js';
import { readBitrixForm, readJsonObject } from './form.js';

export interface ConnectorRouteDeps {
  pageAuth: PageAuth;
  settings: Pick<SettingsService, 'authorizeAdmin'>;
  connectorPage: ConnectorPage;
  /** CSP frame-ancestors sources; default: the portal's own host (docs/protocols.md B13). */
  frameAncestors?: string;
}

interface ConnectorPageModel {
  lang: PageLanguage;
  t: (typeof CONNECTOR_WORDS)[PageLanguage];
  error?: string;
  view?: ConnectorLineView;
  /** JSON for the page's script, with `<` escaped so it cannot close the script element. */
  pageData: string;
  assets: Record<string, string>;
}

const lineIdOf = (value: string): number | undefined => (/^[1-9]\d{0,9}$/.test(value) ? Number(value) : undefined);

/**
 * The connector's settings page (README "Open Channels mode"). POST /connector: Bitrix24 opens it for
 * one line (PLACEMENT=SETTING_CONNECTOR, pages-and-modes.md §2.1), verified as the app page is
 * (the stored application token, the user asked at the stored endpoint), for admins only; the line
 * is checked to exist. Writes go through /api/connector/lines/:line with the page token (admins, the
 * portal's word from the last minute, as the app page's settings).
 */
export function createConnectorRoute(deps: ConnectorRouteDeps): Hono<AdminVariables> {
  const template = loadTemplate<ConnectorPageModel>('connector', {
    helpers: {
      eq: (a: unknown, b: unknown) => a === b,
      includes: (list: unknown, value: unknown) => Array.isArray(list) && list.includes(value),
    },
  });
  const files = loadPublicFiles();
  const assets = Object.fromEntries([...files].map(([name, file]) => [name, `/public/${name}?v=${file.version}`]));
  const json = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');
  const admin = pageAdmin(deps);

  const refusal = (c: Context, lang: PageLanguage, error: string, status: 400 | 401 | 403 | 404 | 422 | 429 | 502) => {
    const model: ConnectorPageModel = { lang, t: CONNECTOR_WORDS[lang], error, pageData: json({ error }), assets };
    return c.html(template(model), status, framedPageHeaders(deps.frameAncestors, undefined));
  };

  const answerError = (c: Context, error: unknown) => {
    if (error instanceof ConnectorPageError) return c.json({ error: error.message }, error.httpStatus);
    if (error instanceof NotOpenChannelsError) return c.json({ error: error.message }, 409);
    return c.json({ error: `Bitrix24 or Chat2Desk refused: ${error instanceof Error ? error.message : String(error)}` }, 502);
  };

  return new Hono<AdminVariables>()
    .post('/connector', async (c) => {
      const lang = pageLanguage(c.req.query('LANG'));
      const fields = await readBitrixForm(c);
      try {
        const placement = readConnectorPlacement(str(fields.PLACEMENT), str(fields.PLACEMENT_OPTIONS));
        const session = await deps.pageAuth.open({ memberId: str(fields.member_id), applicationToken: str(fields.APPLICATION_TOKEN), authId: str(fields.AUTH_ID) });
        if (!session.claims.admin) return refusal(c, lang, CONNECTOR_WORDS[lang].adminsOnly, 403);
        const view = await deps.connectorPage.view(session.portal, placement.lineId);
        const t = CONNECTOR_WORDS[lang];
        const data = {
          token: session.token,
          expiresAt: session.claims.expiresAt,
          connector: CONNECTOR_ID,
          line: view.line.id,
          connected: view.connected,
          options: view.options,
          t,
        };
        const model: ConnectorPageModel = { lang, t, view, pageData: json(data), assets };
        return c.html(template(model), 200, framedPageHeaders(deps.frameAncestors, session.portal));
      } catch (error) {
        if (error instanceof PageAuthError) return refusal(c, lang, error.message, error.httpStatus);
        if (error instanceof ConnectorPageError) return refusal(c, lang, error.message, error.httpStatus);
        // Bitrix24 could not be asked about the line: said inside the frame rather than as a bare 500.
        return refusal(c, lang, `Bitrix24 could not be asked about this line: ${error instanceof Error ? error.message : String(error)}`, 502);
      }
    })
    .get('/connector', (c) => c.text('This is the Chat2Desk connector settings page. Bitrix24 opens it with POST from an Open Channel.', 405, { allow: 'POST' }))
    .put('/api/connector/lines/:line', admin, async (c) => {
      const lineId = lineIdOf(c.req.param('line'));
      if (lineId === undefined) return c.json({ error: 'line must be an Open Channel line id' }, 400);
      const body = await readJsonObject(c);
      if (!body) return c.json({ error: 'The body must be a JSON object with options' }, 400);
      const parsed = parseLineOptions(body.options);
      if (!parsed.ok) return c.json({ error: parsed.error }, 400);
      try {
        const view = await deps.connectorPage.connect(c.get('portal'), lineId, parsed.options);
        return c.json({ connected: view.connected, options: view.options });
      } catch (error) {
        return answerError(c, error);
      }
    })
    .delete('/api/connector/lines/:line', admin, async (c) => {
      const lineId = lineIdOf(c.req.param('line'));
      if (lineId === undefined) return c.json({ error: 'line must be an Open Channel line id' }, 400);
      try {
        await deps.connectorPage.disconnect(c.get('portal'), lineId);
        return c.json({ connected: false });
      } catch (error) {
        return answerError(c, error);
      }
    });
}

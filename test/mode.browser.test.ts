import { afterEach, describe, expect, it } from 'vitest';
import { CONNECTOR_ID } from '../src/open-channels/connector.js';
import { DEFAULT_LINE_OPTIONS, type LineOptions } from '../src/open-channels/lines.js';
import { PAGE_WORDS } from '../src/pages/i18n.js';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { openInParentFrame, type ParentFrame, type ParentFrameOptions } from './support/parent-frame.js';
import { installAndConfigure, postForm, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

const en = PAGE_WORDS.en;

/**
 * The app page's "Where operators work" section (README "Open Channels mode") in headless Chromium
 * inside the fake parent frame: the switch saves through PUT /api/settings, the connector is
 * registered at (and taken out of) the fake portal, the connected lines are listed, switching back is
 * confirmed first, refusals say why, and a non-admin only sees the mode.
 */
describe('the app page’s integration-type switch', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  async function configuredStack(options: StackOptions = {}): Promise<Stack> {
    stack = await startStack({ ...options, b24: { domainIsAddress: true, ...options.b24 } });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    return stack;
  }

  async function open(options: Partial<ParentFrameOptions> = {}): Promise<ParentFrame> {
    const parent = await openInParentFrame(browser(), { b24: stack!.b24, serverUrl: stack!.server.url, ...options });
    parents.push(parent);
    await parent.ready();
    return parent;
  }

  /** The section itself, where the state is; the whole page once, to see the section in its place. */
  async function shot(parent: ParentFrame, name: string, fullPage = false) {
    if (fullPage) await parent.page.screenshot({ path: `${ARTIFACTS}/mode-${name}-page.png`, fullPage: true });
    await parent.app.locator('#section-mode').screenshot({ path: `${ARTIFACTS}/mode-${name}.png` });
  }

  /** A line connected as the connector's settings page does (Contact Center → Chat2Desk → the line). */
  async function connectLine(lineId: number, options: LineOptions) {
    const auth = stack!.b24.issueAuth(1);
    const request = stack!.b24.settingConnectorPageRequest({ line: lineId, connector: CONNECTOR_ID }, { accessToken: auth.access_token });
    const html = await (await postForm(`${stack!.server.url}/connector`, request.body, request.query)).text();
    const token = (JSON.parse(/<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)![1]!) as { token: string }).token;
    const saved = await fetch(`${stack!.server.url}/api/connector/lines/${lineId}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ options }),
    });
    expect(saved.status).toBe(200);
  }

  const result = (parent: ParentFrame) => parent.app.locator('#mode-result').innerText();
  const current = (parent: ParentFrame) => parent.app.locator('#section-mode').getAttribute('data-mode');
  const storedMode = async () => (((await stack!.server.portals.get(stack!.b24.memberId))?.settings ?? {}) as { integrationType?: string }).integrationType ?? 'chat2desk';

  it('an admin switches to Open Channels, sees the connected lines, and switches back after confirming; the fake portal registers and then loses the connector', async () => {
    await configuredStack();
    // A second line whose name carries markup: it must stay text.
    stack!.b24.openLines.set(2, { id: 2, name: 'Sales <b>WhatsApp</b>', active: true });
    const parent = await open();
    const { app } = parent;
    expect(await current(parent)).toBe('chat2desk');
    expect(await app.locator('[data-choice="chat2desk"] [data-current]').isVisible()).toBe(true);
    expect(await app.locator('#mode-switch').isVisible()).toBe(false);
    expect(await app.locator('#mode-lines').isVisible()).toBe(false);
    await shot(parent, 'chat2desk', true);

    await app.locator('[data-choice="open_channels"]').click();
    expect(await app.locator('#mode-switch').textContent()).toBe(en.modeSwitchToOpenChannels);
    await app.locator('#mode-switch').click();
    await expect.poll(() => result(parent)).toBe(en.modeSwitchedToOpenChannels);
    expect(await current(parent)).toBe('open_channels');
    expect(await storedMode()).toBe('open_channels');
    expect(stack!.b24.connectors.get(CONNECTOR_ID)).toMatchObject({ NAME: 'Chat2Desk', PLACEMENT_HANDLER: `${stack!.config.publicUrl}/connector` });
    expect(await app.locator('[data-choice="open_channels"] [data-current]').isVisible()).toBe(true);
    expect(await app.locator('#mode-connect-line').innerText()).toContain('Contact Center → Chat2Desk');
    expect(await app.locator('#mode-no-lines').isVisible()).toBe(true);
    await shot(parent, 'open-channels');

    // The admin connects two lines in the Contact Center, comes back and checks again.
    const channel = stack!.c2d.account().channels[0]!;
    await connectLine(1, { ...DEFAULT_LINE_OPTIONS, route: { kind: 'channels', channelIds: [channel.id] } });
    await connectLine(2, DEFAULT_LINE_OPTIONS);
    await app.locator('#mode-check-lines').click();
    await expect.poll(() => app.locator('#mode-lines-table tbody tr').count()).toBe(2);
    const rows = await app.locator('#mode-lines-table tbody tr').evaluateAll((items) => items.map((row) => Array.from(row.children).map((cell) => cell.textContent)));
    expect(rows).toEqual([
      ['1', 'Open Channel', `${en.modeRouteChannels} ${channel.name} (${channel.id})`],
      ['2', 'Sales <b>WhatsApp</b>', en.modeRouteDefault],
    ]);
    expect(await app.locator('#mode-lines-table b').count()).toBe(0);
    await shot(parent, 'lines');

    // The portal opens the app again: the lines come with the page.
    await parent.reopen();
    await expect.poll(() => app.locator('#mode-lines-table tbody tr').count()).toBe(2);

    // Back to Chat2Desk: a confirmation first; cancelling changes nothing.
    await app.locator('[data-choice="chat2desk"]').click();
    expect(await app.locator('#mode-switch').textContent()).toBe(en.modeSwitchToChat2desk);
    await app.locator('#mode-switch').click();
    expect(await app.locator('#mode-confirm').isVisible()).toBe(true);
    expect(await app.locator('#mode-confirm').innerText()).toContain(en.modeBackText);
    await shot(parent, 'confirm-back');
    const callsBefore = stack!.b24.calls.length;
    await app.locator('#mode-confirm-no').click();
    expect(await app.locator('#mode-confirm').isVisible()).toBe(false);
    expect(await app.locator('input[name="integration-type"]:checked').getAttribute('value')).toBe('open_channels');
    expect(stack!.b24.calls.slice(callsBefore).filter((call) => call.method.startsWith('imconnector.'))).toEqual([]);

    await app.locator('[data-choice="chat2desk"]').click();
    await app.locator('#mode-switch').click();
    await app.locator('#mode-confirm-yes').click();
    await expect.poll(() => result(parent)).toBe(en.modeSwitchedToChat2desk);
    expect(await current(parent)).toBe('chat2desk');
    expect(await storedMode()).toBe('chat2desk');
    // Each line deactivated at the portal (imconnector.activate ACTIVE=0) before the connector was unregistered.
    const deactivated = stack!.b24.calls.filter((call) => call.method === 'imconnector.activate' && String(call.params.ACTIVE) === '0').map((call) => Number(call.params.LINE));
    expect(deactivated.sort()).toEqual([1, 2]);
    expect(stack!.b24.connectors.has(CONNECTOR_ID)).toBe(false);
    expect(await app.locator('#mode-lines').isVisible()).toBe(false);
    await shot(parent, 'back-to-chat2desk');
    // The section in a narrow frame (a phone, or the slider at its narrowest).
    await shot(await open({ width: 400 }), 'narrow');
  });

  it('a switch back Bitrix24 refuses says why and that the portal stays in Open Channels mode; a server error and a network failure say why too, as text', async () => {
    await configuredStack();
    expect((await putSettings(stack!, { integrationType: 'open_channels' })).status).toBe(200);
    await connectLine(1, DEFAULT_LINE_OPTIONS);
    const parent = await open();
    const { app } = parent;
    await expect.poll(() => app.locator('#mode-lines-table tbody tr').count()).toBe(1);

    stack!.b24.failNext('imconnector.unregister', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied' });
    await app.locator('[data-choice="chat2desk"]').click();
    await app.locator('#mode-switch').click();
    await app.locator('#mode-confirm-yes').click();
    await expect.poll(() => result(parent)).toContain(en.modeBackRefused);
    expect(await result(parent)).toContain('ACCESS_DENIED');
    expect(await app.locator('#mode-result').getAttribute('class')).toContain('c2d-result--error');
    expect(await current(parent)).toBe('open_channels');
    expect(await app.locator('input[name="integration-type"]:checked').getAttribute('value')).toBe('open_channels');
    expect(await storedMode()).toBe('open_channels');
    expect(stack!.b24.connectors.has(CONNECTOR_ID)).toBe(true);
    await shot(parent, 'back-refused');

    // A server refusal with markup in its text: shown as text.
    await parent.page.route('**/api/settings', (route) =>
      route.request().method() === 'PUT'
        ? route.fulfill({ status: 400, contentType: 'application/json', body: JSON.stringify({ error: 'integrationType <img src=x id=injected> is wrong' }) })
        : route.continue(),
    );
    await app.locator('[data-choice="chat2desk"]').click();
    await app.locator('#mode-switch').click();
    await app.locator('#mode-confirm-yes').click();
    await expect.poll(() => result(parent)).toBe(`${en.modeFailed} integrationType <img src=x id=injected> is wrong`);
    expect(await app.locator('#injected').count()).toBe(0);

    await parent.page.unroute('**/api/settings');
    await parent.page.route('**/api/settings', (route) => (route.request().method() === 'PUT' ? route.abort('connectionrefused') : route.continue()));
    await app.locator('[data-choice="chat2desk"]').click();
    await app.locator('#mode-switch').click();
    await app.locator('#mode-confirm-yes').click();
    await expect.poll(() => result(parent)).toContain(en.modeUnreachable);
    expect(await current(parent)).toBe('open_channels');
    await shot(parent, 'network-failure');
  });

  it('a registration Bitrix24 refuses shows its text and offers to register again', async () => {
    // The fake refuses imconnector.register without a placement handler (bitrix24.md §12.1), as connector.test.ts does.
    let refuse = true;
    const withoutHandler: typeof fetch = (input, init) => {
      const body = refuse && typeof init?.body === 'string' && String(input).endsWith('/batch') ? init.body.replace(/PLACEMENT_HANDLER(%5D)?=/g, 'NOT_A_FIELD$1=') : init?.body;
      return fetch(input, { ...init, body });
    };
    await configuredStack({ fetch: withoutHandler });
    const parent = await open();
    const { app } = parent;
    await app.locator('[data-choice="open_channels"]').click();
    await app.locator('#mode-switch').click();
    await expect.poll(() => result(parent)).toContain(en.modeRegistrationRefused);
    expect(await result(parent)).toContain('Bitrix24 refused to register the Chat2Desk connector: HANDLER_URL_REQUIRED Placement handler is not specified');
    expect(await current(parent)).toBe('open_channels');
    await shot(parent, 'registration-refused');

    refuse = false;
    await app.locator('#mode-register-again').click();
    await expect.poll(() => result(parent)).toBe(en.modeSwitchedToOpenChannels);
    expect(stack!.b24.connectors.has(CONNECTOR_ID)).toBe(true);
  });

  it('names the missing imopenlines and imconnector scopes with what to do before switching', async () => {
    await configuredStack({ b24: { scope: 'crm,bizproc,placement,user' } });
    const parent = await open();
    const { app } = parent;
    expect(await app.locator('#mode-scopes').isVisible()).toBe(false);
    await app.locator('[data-choice="open_channels"]').click();
    expect(await app.locator('#mode-scopes').isVisible()).toBe(true);
    expect(await app.locator('#mode-scopes li').evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.scope))).toEqual(['imopenlines', 'imconnector']);
    expect(await app.locator('#mode-scopes').innerText()).toContain('Developer resources');
    await shot(parent, 'scopes-missing');
  });

  it('a non-admin sees the current mode read-only', async () => {
    await configuredStack();
    expect((await putSettings(stack!, { integrationType: 'open_channels' })).status).toBe(200);
    const parent = await open({ userId: 2, lang: 'es' });
    const { app } = parent;
    expect(await current(parent)).toBe('open_channels');
    expect(await app.locator('[data-choice="open_channels"] [data-current]').innerText()).toBe(PAGE_WORDS.es.modeCurrent);
    expect(await app.locator('input[name="integration-type"]').evaluateAll((inputs) => inputs.map((input) => (input as HTMLInputElement).disabled))).toEqual([true, true]);
    expect(await app.locator('#mode-switch').count()).toBe(0);
    expect(await app.locator('#mode-read-only').innerText()).toBe(PAGE_WORDS.es.modeReadOnly);
    await shot(parent, 'non-admin-es');
  });
});

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FrameLocator } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { TestClock } from './support/clock.js';
import { openInParentFrame, type ParentFrame, type ParentFrameOptions } from './support/parent-frame.js';
import { adminHeaders, eventually, install, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

/**
 * The app page (docs/protocols.md B13) in headless Chromium, inside a fake Bitrix24 parent frame
 * that speaks the parent protocol, so the real b24jssdk in our page is exercised. One browser for
 * the file; each test gets its own stack.
 */
describe('the app page inside a Bitrix24 parent frame', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  async function installedStack(options: StackOptions = {}): Promise<Stack> {
    stack = await startStack({ ...options, b24: { domainIsAddress: true, ...options.b24 } });
    await install(stack);
    return stack;
  }

  async function open(options: Partial<ParentFrameOptions> = {}): Promise<ParentFrame> {
    const parent = await openInParentFrame(browser(), { b24: stack!.b24, serverUrl: stack!.server.url, ...options });
    parents.push(parent);
    return parent;
  }

  async function shot(parent: ParentFrame, name: string) {
    await parent.page.screenshot({ path: `${ARTIFACTS}/app-page-${name}.png`, fullPage: true });
  }

  const pageToken = (app: FrameLocator) => app.locator('#page-data').evaluate((node) => JSON.parse(node.textContent ?? '{}').token as string);

  it('an admin connects Chat2Desk, maps an operator, sets sending defaults, saves, and sees them after the portal opens the app again', async () => {
    await installedStack();
    const parent = await open();
    const { app } = parent;
    await expect.poll(() => app.locator('#status-chat2desk').getAttribute('data-connected')).toBe('no');
    await shot(parent, 'admin-not-connected');

    await app.locator('#c2d-token').fill(stack!.c2d.token);
    await app.locator('#connect').click();
    // A connected account's operators, tags and channels are rendered by the server: the page asks the portal to open it again.
    await expect.poll(() => app.locator('#status-chat2desk').getAttribute('data-connected'), { timeout: 20_000 }).toBe('yes');
    await parent.ready();
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^reloadWindow:/));
    await shot(parent, 'admin-connected');
    // Every control has a name a screen reader announces (a <label>, aria-label or aria-labelledby).
    const unnamed = await app.locator('input, select, button').evaluateAll((controls) =>
      controls
        .filter((control) => (control as HTMLInputElement).type !== 'hidden')
        .filter((control) => {
          const labels = (control as HTMLInputElement).labels;
          const named = (labels && labels.length > 0) || control.getAttribute('aria-label') || control.getAttribute('aria-labelledby');
          return !named && !(control.tagName === 'BUTTON' && control.textContent?.trim());
        })
        .map((control) => control.outerHTML.slice(0, 80)),
    );
    expect(unnamed).toEqual([]);

    const operator = stack!.c2d.account().operators[0]!;
    const operatorSelect = app.locator(`select[data-operator="${operator.id}"]`);
    await expect.poll(() => operatorSelect.locator('option').count()).toBeGreaterThan(1);
    await operatorSelect.selectOption('2');
    await app.locator('#default-country').fill('MX');
    const channel = stack!.c2d.account().channels[0]!;
    await app.locator('#default-channel').selectOption(String(channel.id));
    await app.locator('#save').click();
    await expect.poll(() => app.locator('#save-result').textContent()).toBe('Settings saved.');
    await shot(parent, 'admin-saved');

    await parent.reopen();
    await expect.poll(() => operatorSelect.inputValue()).toBe('2');
    expect(await app.locator('#default-country').inputValue()).toBe('MX');
    expect(await app.locator('#default-channel').inputValue()).toBe(String(channel.id));
    const stored = await stack!.server.portals.get(stack!.b24.memberId);
    expect(stored?.settings).toMatchObject({ operatorMap: { [String(operator.id)]: 2 }, defaultCountry: 'MX', defaultChannelId: channel.id });
    await shot(parent, 'admin-reopened');
  });

  it('CRM settings from the portal’s own lists save for real and come back when the portal opens the app again', async () => {
    await installedStack();
    const parent = await open();
    const { app } = parent;
    await app.locator('#episode-entity').selectOption('contact_deal');
    await expect.poll(() => app.locator('#deal-category option').count()).toBe(3);
    await app.locator('#deal-category').selectOption('3');
    await expect.poll(() => app.locator('#deal-stage option[value="C3:NEGOTIATION"]').count()).toBe(1);
    await app.locator('#deal-stage').selectOption('C3:NEGOTIATION');
    await app.locator('#source').selectOption('WEB');
    await app.locator('#fallback-responsible').selectOption('2');
    // The lead moves above the company: by its own button, as a keyboard user would.
    await app.getByRole('button', { name: '↑ the lead in progress' }).click();
    await app.locator('#add-extra').click();
    await app.locator('#extra-fields [data-extra-row]:last-child [data-extra=source]').fill('client.comment');
    await app.locator('#extra-fields [data-extra-row]:last-child [data-extra=field]').fill('COMMENTS');
    // The portal's lists came from the page itself, cross-origin, with the user's own token (§3.5).
    const listed = stack!.b24.calls.filter((call) => call.method === 'crm.category.list' || call.method === 'crm.status.list').map((call) => call.method);
    expect(listed).toContain('crm.category.list');
    expect(listed).toContain('crm.status.list');
    await app.locator('#save').click();
    await expect.poll(() => app.locator('#save-result').textContent()).toBe('Settings saved.');
    await shot(parent, 'crm-saved');

    await parent.reopen();
    expect(await app.locator('#episode-entity').inputValue()).toBe('contact_deal');
    await expect.poll(() => app.locator('#deal-category').inputValue()).toBe('3');
    await expect.poll(() => app.locator('#deal-stage').inputValue()).toBe('C3:NEGOTIATION');
    await expect.poll(() => app.locator('#source').inputValue()).toBe('WEB');
    await expect.poll(() => app.locator('#fallback-responsible').inputValue()).toBe('2');
    expect(await app.locator('#match-order li').evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.item))).toEqual(['deal', 'contact', 'lead', 'company']);
    expect(await app.locator('#extra-fields [data-extra=source]').evaluateAll((inputs) => inputs.map((input) => (input as HTMLInputElement).value))).toEqual(['client.comment']);
    expect(await app.locator('#extra-fields [data-extra=field]').evaluateAll((inputs) => inputs.map((input) => (input as HTMLInputElement).value))).toEqual(['COMMENTS']);
    expect((await stack!.server.portals.get(stack!.b24.memberId))?.settings).toMatchObject({
      episodeEntity: 'contact_deal',
      dealCategoryId: 3,
      dealStageId: 'C3:NEGOTIATION',
      sourceId: 'WEB',
      fallbackResponsibleId: 2,
      matchOrder: ['deal', 'contact', 'lead', 'company'],
      extraFields: [{ source: 'client.comment', field: 'COMMENTS' }],
    });
    await shot(parent, 'crm-reopened');
  });

  it('General switches and the event log’s retention save and come back; im is named missing only once notifications are on; triggers show whether they are registered', async () => {
    // A portal that granted the app no `im`: harmless until notifications are turned on.
    await installedStack({ b24: { scope: 'crm,bizproc,placement,user' } });
    stack!.b24.triggers.delete('c2d_not_delivered');
    // The portal's pickers answer with these (SelectedUser[], SelectedAccess[]: D/DR are departments, U a user).
    const parent = await open({
      picks: {
        users: [{ id: '3', name: 'Picked' }],
        access: [
          { id: 'DR7', name: 'Sales' },
          { id: 'U5', name: 'Someone' },
          { id: 'D9', name: 'Support' },
        ],
      },
    });
    const { app } = parent;
    expect(await app.locator('#scopes-ok').isVisible()).toBe(true);
    const triggerState = (code: string) => app.locator(`#trigger-list [data-trigger="${code}"]`).getAttribute('data-registered');
    await expect.poll(() => triggerState('c2d_client_wrote')).toBe('yes');
    expect(await triggerState('c2d_dialog_closed')).toBe('yes');
    expect(await triggerState('c2d_not_delivered')).toBe('no');
    expect(stack!.b24.calls.filter((call) => call.method === 'crm.automation.trigger.list').length).toBeGreaterThan(0);
    await app.locator('#section-robots').screenshot({ path: `${ARTIFACTS}/app-page-robots-section.png` });
    await app.locator('#reregister').click();
    await expect.poll(() => triggerState('c2d_not_delivered')).toBe('yes');

    expect(await app.locator('#notify-incoming').isChecked()).toBe(false);
    expect(await app.locator('#responsible-sync').isChecked()).toBe(false);
    expect(await app.locator('#retention-days').inputValue()).toBe('30');
    expect(await app.locator('#im-missing').isVisible()).toBe(false);
    await app.locator('#notify-incoming').check();
    // Said beside the switch at once, before anything is saved.
    expect(await app.locator('#im-missing').textContent()).toContain('lacks the im permission');
    await expect.poll(() => app.locator('#im-missing').isVisible()).toBe(true);
    await app.locator('#section-general').screenshot({ path: `${ARTIFACTS}/app-page-general-im-missing.png` });
    await app.locator('#responsible-sync').check();
    await app.locator('#retention-days').fill('90');
    // The Chat workspace's settings: a mistyped id is refused by the server in words naming the field.
    expect(await app.locator('#open-links-in').inputValue()).toBe('chat2desk');
    await app.locator('#open-links-in').selectOption('app');
    await app.locator('#workspace-users').fill('4, x');
    await app.locator('#save').click();
    await expect.poll(() => app.locator('#save-result').textContent()).toContain('workspaceUsers items must be a number');
    await app.locator('#workspace-users').fill('4');
    await app.locator('[data-choose="users"]').click();
    await expect.poll(() => app.locator('#workspace-users').inputValue()).toBe('4, 3');
    await app.locator('[data-choose="departments"]').click();
    await expect.poll(() => app.locator('#workspace-departments').inputValue()).toBe('7, 9');
    await app.locator('#save').click();
    await expect.poll(() => app.locator('#save-result').textContent()).toBe('Settings saved.');
    expect((await stack!.server.portals.get(stack!.b24.memberId))?.settings).toMatchObject({
      notifyIncoming: true,
      responsibleSync: true,
      eventLogRetentionDays: 90,
      openLinksIn: 'app',
      workspaceUsers: [4, 3],
      workspaceDepartments: [7, 9],
    });

    await parent.reopen();
    expect(await app.locator('#notify-incoming').isChecked()).toBe(true);
    expect(await app.locator('#responsible-sync').isChecked()).toBe(true);
    expect(await app.locator('#retention-days').inputValue()).toBe('90');
    expect(await app.locator('#open-links-in').inputValue()).toBe('app');
    expect(await app.locator('#workspace-users').inputValue()).toBe('4, 3');
    expect(await app.locator('#workspace-departments').inputValue()).toBe('7, 9');
    expect(await app.locator('#missing-scopes li').evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.scope))).toEqual(['im']);
    await shot(parent, 'general-reopened');
  });

  it('a token Chat2Desk rejects shows Chat2Desk’s reason and saves nothing', async () => {
    await installedStack();
    const parent = await open({ lang: 'ru' });
    const { app } = parent;
    // By keyboard: type the token and press Enter.
    await app.locator('#c2d-token').focus();
    await parent.page.keyboard.type('not-a-real-token');
    await parent.page.keyboard.press('Enter');
    await expect.poll(() => app.locator('#connect-result').textContent()).toBe('Chat2Desk rejected the API token: Token is not correct');
    expect((await stack!.server.portals.get(stack!.b24.memberId))?.hasChat2deskToken).toBe(false);
    expect(await parent.messages()).not.toContainEqual(expect.stringMatching(/^reloadWindow:/));
    await shot(parent, 'rejected-token-ru');
  });

  it('a non-admin sees only the connection status, and a save forged with their page token is refused', async () => {
    await installedStack();
    const parent = await open({ userId: 2, lang: 'es' });
    const { app } = parent;
    expect(await app.locator('#section-connection').isVisible()).toBe(true);
    expect(await app.locator('#admin-only').isVisible()).toBe(true);
    for (const hidden of ['#connect-form', '#settings-form', '#section-operators', '#section-event-log']) expect(await app.locator(hidden).count()).toBe(0);
    await shot(parent, 'non-admin-es');

    const token = await pageToken(app);
    const forged = await fetch(`${stack!.server.url}/api/settings`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ defaultCountry: 'MX' }),
    });
    expect(forged.status).toBe(403);
    const read = await fetch(`${stack!.server.url}/api/settings`, { headers: { authorization: `Bearer ${token}` } });
    expect(read.status).toBe(403);
    expect((await stack!.server.portals.get(stack!.b24.memberId))?.settings).not.toHaveProperty('defaultCountry', 'MX');
    // The status itself is theirs to see.
    expect((await fetch(`${stack!.server.url}/api/page/status`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  });

  it('a save more than a minute after the portal last confirmed the admin renews through the parent frame (refreshAuth) first', async () => {
    const clock = new TestClock();
    await installedStack({ clock });
    const parent = await open();
    const { app } = parent;
    const firstToken = await pageToken(app);
    clock.advance(61_000);
    const stale = await fetch(`${stack!.server.url}/api/settings`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${firstToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ defaultCountry: 'MX' }),
    });
    expect(stale.status).toBe(401);
    expect(await stale.json()).toMatchObject({ renew: true });
    const profilesBefore = stack!.b24.calls.filter((call) => call.method === 'profile').length;

    await app.locator('#default-country').fill('MX');
    await app.locator('#save').click();
    await expect.poll(() => app.locator('#save-result').textContent()).toBe('Settings saved.');
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^refreshAuth:/));
    expect(stack!.b24.calls.filter((call) => call.method === 'profile').length).toBe(profilesBefore + 1);
    expect((await stack!.server.portals.get(stack!.b24.memberId))?.settings).toMatchObject({ defaultCountry: 'MX' });
  });

  it('never asks a DOMAIN or SERVER_ENDPOINT from the request who the user is: only the portal’s stored endpoint', async () => {
    const elsewhere: string[] = [];
    const decoy: Server = createServer((request, response) => {
      elsewhere.push(`${request.method} ${request.url}`);
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{"ID":"1","ADMIN":true}}');
    });
    await new Promise<void>((resolve) => decoy.listen(0, '127.0.0.1', resolve));
    try {
      await installedStack();
      const decoyHost = `127.0.0.1:${(decoy.address() as AddressInfo).port}`;
      stack!.b24.resetCalls();
      const parent = await open({ overrides: { domain: decoyHost, serverEndpoint: `http://${decoyHost}/rest/` } });
      expect(await parent.app.locator('#settings-form').count()).toBe(1);
      expect(stack!.b24.calls.filter((call) => call.method === 'profile')).toHaveLength(1);
      expect(elsewhere).toEqual([]);
    } finally {
      await new Promise((resolve) => decoy.close(resolve));
    }
  });

  it('the event log from the real API: a refused closed dialog shows its error as text with its next step, and “Run again” makes a new entry that runs', async () => {
    await installedStack();
    const payload = '<img src=x onerror="window.__xss=1">';
    expect((await putSettings(stack!, { chat2deskApiToken: stack!.c2d.token, episodesEnabled: true, defaultCountry: 'RU' })).status).toBe(200);
    await stack!.server.idle();
    // The portal demands a field the app does not fill; its name (a portal's field title is free text)
    // carries markup, and so does the client's name from Chat2Desk.
    stack!.b24.requireFields('lead', [`UF_CRM_${payload}`]);
    const { client, dialog } = stack!.c2d.seedClient({ phone: '79161234567', name: `Maria ${payload}`, withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: client.id as number, text: `Hello ${payload}` });
    const closed = stack!.c2d.closeDialog(dialog!.id as number);
    expect(await stack!.c2d.deliverWebhook(closed.closeDialog)).toEqual([200]);
    expect(await stack!.c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    // One admin token for the whole wait: each new one would be a caller check of its own.
    const headers = adminHeaders(stack!);
    const failed = await eventually(async () => {
      const page = (await (await fetch(`${stack!.server.url}/api/event-log?status=failed`, { headers })).json()) as { entries: Array<{ id: string }> };
      if (!page.entries) throw new Error(JSON.stringify(page));
      return page.entries[0];
    });

    const parent = await open();
    const { app } = parent;
    const entry = app.locator(`#event-log [data-entry="${failed.id}"]`);
    await entry.waitFor();
    expect(await entry.locator('img, script').count()).toBe(0);
    expect(await entry.locator('.c2d-event__error').textContent()).toContain(`Required field "UF_CRM_${payload}" is not filled.`);
    expect(await entry.locator('.c2d-event__next').textContent()).toMatch(/^Next step: \S/);
    expect(await entry.locator('a').evaluateAll((links) => links.map((link) => (link as HTMLAnchorElement).protocol))).toEqual(['http:']);
    expect(await app.locator('body').evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    await app.locator('#section-event-log').screenshot({ path: `${ARTIFACTS}/app-page-event-log-failed.png` });

    // The admin makes the field optional in the portal and runs the dialog again.
    stack!.b24.requireFields('lead', []);
    const rerun = parent.page.waitForResponse((response) => response.url().endsWith(`/api/event-log/${failed.id}/rerun`));
    await entry.getByRole('button', { name: 'Run again' }).click();
    const { id: again } = (await (await rerun).json()) as { id: string };
    await expect.poll(() => entry.textContent()).toContain('Queued again.');
    expect(again).not.toBe(failed.id);
    await app.locator('#event-filter').getByRole('button', { name: 'Show' }).click();
    const second = app.locator(`#event-log [data-entry="${again}"]`);
    await second.waitFor();
    expect(await app.locator(`#event-log [data-entry="${failed.id}"] .c2d-badge`).textContent()).toBe('failed');
    await expect
      .poll(async () => {
        await app.locator('#event-filter').getByRole('button', { name: 'Show' }).click();
        return second.locator('.c2d-badge').textContent();
      })
      .toBe('done');
    expect(await second.textContent()).toMatch(/Created lead \d+ and pinned the dialog to it/);
    expect(stack!.b24.crm.leads.size).toBe(1);
    // The lead's "Chat2Desk dialog closed" trigger is in the log under a name, not a job kind.
    const titles = async () => {
      await app.locator('#event-filter').getByRole('button', { name: 'Show' }).click();
      return app.locator('#event-log .c2d-event__title').allTextContents();
    };
    await expect.poll(titles).toContain('Trigger “Chat2Desk dialog closed”');
    await app.locator('#ev-kind').selectOption('automation');
    await expect.poll(titles).toEqual(['Trigger “Chat2Desk dialog closed”']);
    await app.locator('#ev-kind').selectOption('');
    expect(await titles()).not.toContain('fire_trigger');
    await app.locator('#section-event-log').screenshot({ path: `${ARTIFACTS}/app-page-event-log-rerun.png` });
  });

  // Our API only ever sends http(s) links; this proves the page holds even if a server sent worse.
  it('a hostile server’s javascript: link and markup in the event log stay inert', async () => {
    await installedStack();
    const payload = '<img src=x onerror="window.__xss=1">';
    const entries = [
      {
        id: 'job-1',
        kind: 'closed_episode',
        title: `Closed dialog of ${payload}`,
        status: 'failed',
        at: '2026-12-01T10:00:00.000Z',
        finishedAt: '2026-12-01T10:00:01.000Z',
        record: { type: 'lead', id: 12, url: 'javascript:window.__xss=2' },
        dialog: { id: 77, url: 'https://web.chat2desk.com/chat/all?dialogID=77' },
        phone: '+79991234567',
        summary: `Client ${payload} wrote: <script>window.__xss=3</script>`,
        error: { message: `Bitrix24 refused: field ${payload} is required`, nextStep: 'Make the field optional or map it in Extra fields, then run again.' },
        canRerun: true,
      },
    ];
    const rerun: string[] = [];
    const parent = await openInParentFrame(browser(), {
      b24: stack!.b24,
      serverUrl: stack!.server.url,
      beforeOpen: async (page) => {
        await page.route('**/api/event-log?*', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ entries, next: null }) }));
        await page.route('**/api/event-log/*/rerun', (route) => {
          rerun.push(route.request().url());
          return route.fulfill({ status: 202, contentType: 'application/json', body: JSON.stringify({ id: 'job-2' }) });
        });
      },
    });
    parents.push(parent);
    const { app } = parent;
    const entry = app.locator('#event-log [data-entry="job-1"]');
    await entry.waitFor();
    expect(await entry.locator('img, script').count()).toBe(0);
    expect(await entry.textContent()).toContain(payload);
    expect(await entry.locator('a').evaluateAll((links) => links.map((link) => (link as HTMLAnchorElement).href))).toEqual(['https://web.chat2desk.com/chat/all?dialogID=77']);
    expect(await app.locator('body').evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    await app.locator('#section-event-log').screenshot({ path: `${ARTIFACTS}/app-page-event-log-section.png` });
    await entry.getByRole('button', { name: 'Run again' }).click();
    await expect.poll(() => entry.textContent()).toContain('Queued again.');
    expect(rerun).toEqual([expect.stringMatching(/\/api\/event-log\/job-1\/rerun$/)]);
  });

  it('fits the frame to its content, also at a narrow width', async () => {
    await installedStack();
    const parent = await open({ width: 380 });
    const contentHeight = () => parent.app.locator('html').evaluate((html) => html.scrollHeight);
    await expect.poll(async () => Math.abs((await parent.frameHeight()) - (await contentHeight()))).toBeLessThanOrEqual(2);
    expect(await parent.frameHeight()).toBeGreaterThan(600);
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^resizeWindow:\{"width":"100%","height":\d+\}/));
    // Nothing wider than the frame: no sideways scrolling at a phone's width.
    expect(await parent.app.locator('html').evaluate((html) => html.scrollWidth <= html.clientWidth)).toBe(true);
    await shot(parent, 'narrow');
    await parent.app.locator('#section-general').screenshot({ path: `${ARTIFACTS}/app-page-narrow-general.png` });
    await parent.app.locator('#section-robots').screenshot({ path: `${ARTIFACTS}/app-page-narrow-robots.png` });
  });

  it('in install mode installs, shows the page and calls installFinish', async () => {
    stack = await startStack({ b24: { domainIsAddress: true } });
    const parent = await open({ install: true });
    await expect.poll(() => parent.messages()).toContainEqual(expect.stringMatching(/^setInstallFinish:/));
    expect(stack.b24.installed).toBe(true);
    expect(await parent.app.locator('#install-note').isVisible()).toBe(true);
    expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('active');
    expect(stack.b24.robots.size).toBe(5);
    await shot(parent, 'install');
  });

  it('is framed by the portal only: no X-Frame-Options, frame-ancestors is the portal’s host', async () => {
    await installedStack();
    const request = stack!.b24.installPageRequest();
    const response = await fetch(`${stack!.server.url}/app?${request.query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: request.body,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-frame-options')).toBeNull();
    expect(response.headers.get('content-security-policy')).toContain(`frame-ancestors ${stack!.b24.domain}`);
    expect(response.headers.get('set-cookie')).toBeNull();
  });
});

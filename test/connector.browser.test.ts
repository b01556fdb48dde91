import { afterEach, describe, expect, it } from 'vitest';
import { CONNECTOR_ID } from '../src/open-channels/connector.js';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { openInParentFrame, type ParentFrame } from './support/parent-frame.js';
import { eventually, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

/**
 * The connector settings page (SETTING_CONNECTOR, pages-and-modes.md §2.1) in headless Chromium,
 * inside the fake Bitrix24 parent frame that POSTs /connector with the line's PLACEMENT_OPTIONS and
 * speaks the parent protocol through the real b24jssdk.
 */
describe('the connector settings page inside Bitrix24', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  async function open(lang = 'en'): Promise<ParentFrame> {
    const options = {
      CONNECTOR: CONNECTOR_ID,
      LINE: '1',
      ACTIVE_STATUS: false,
      CONNECTION_STATUS: false,
      REGISTER_STATUS: false,
      ERROR_STATUS: false,
      URI: '/contact_center/connector/?ID=chat2desk',
    };
    const parent = await openInParentFrame(browser(), {
      b24: stack!.b24,
      serverUrl: stack!.server.url,
      placement: 'SETTING_CONNECTOR',
      placementOptions: options,
      lang,
      width: 900,
    });
    parents.push(parent);
    return parent;
  }

  it('a line saved after the portal left Open Channels mode (the page still open) is refused, and the page says why', async () => {
    stack = await startStack({ b24: { domainIsAddress: true } });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    expect((await putSettings(stack, { integrationType: 'open_channels' })).status).toBe(200);
    const parent = await open();
    const { app } = parent;
    await expect(app.locator('#line-status').textContent()).resolves.toBe('Not connected');
    // Another tab switches the portal back to Chat2Desk while this page is open.
    expect((await putSettings(stack, { integrationType: 'chat2desk' })).status).toBe(200);
    await app.locator('#save').click();
    await app.locator('#save-result.c2d-result--error').waitFor();
    await expect(app.locator('#save-result').textContent()).resolves.toContain('The portal is not in Open Channels mode (any more)');
    await expect(app.locator('#line-status').textContent()).resolves.toBe('Not connected');
    await parent.page.screenshot({ path: `${ARTIFACTS}/connector-not-open-channels.png`, fullPage: true });
    expect(await stack.db.rows('select line_id from open_lines')).toEqual([]);
  });

  it('an admin connects a line routed by a channel, with the operator signature, and sees it saved', async () => {
    stack = await startStack({ b24: { domainIsAddress: true } });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    expect((await putSettings(stack, { integrationType: 'open_channels' })).status).toBe(200);
    const parent = await open();
    const { app } = parent;
    await expect(app.locator('#line-status').textContent()).resolves.toBe('Not connected');
    await parent.page.screenshot({ path: `${ARTIFACTS}/connector-new.png`, fullPage: true });

    await app.locator('input[name="route"][value="channels"]').check();
    await app.locator('#route-channels').selectOption(['17404']);
    await app.locator('input[name="signature"]').check();
    await app.locator('input[name="holdUntilOperator"]').uncheck();
    await app.locator('#save').click();
    await app.locator('#line-status[data-connected="yes"]').waitFor();
    await expect(app.locator('#save-result').textContent()).resolves.toBe('Saved');
    await parent.page.screenshot({ path: `${ARTIFACTS}/connector-connected.png`, fullPage: true });

    const row = await eventually(() => stack!.db.row<{ options: string }>('select options from open_lines where line_id = 1'), 5000, 'the saved line');
    expect(JSON.parse(row.options)).toMatchObject({ route: { kind: 'channels', channelIds: [17404] }, signature: true, holdUntilOperator: false });
    expect(stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)).toMatchObject({ active: true, connected: true });
    // The page talked to the parent through the SDK (fitWindow → resizeWindow).
    expect((await parent.messages()).some((message) => message.startsWith('resizeWindow'))).toBe(true);

    // Opened again (Bitrix24 shows the channel's settings now): the saved options, in Spanish.
    const again = await open('la');
    await expect(again.app.locator('#line-status').textContent()).resolves.toBe('Conectado a Chat2Desk');
    await expect(again.app.locator('#route-channels option[value="17404"]').evaluate((option) => (option as HTMLOptionElement).selected)).resolves.toBe(true);
    await again.page.screenshot({ path: `${ARTIFACTS}/connector-reopened-es.png`, fullPage: true });
  });
});

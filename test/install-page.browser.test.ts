import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchChromium } from './support/browser.js';
import { startStack, type Stack } from './support/stack.js';

/**
 * Bitrix24 opens the install page in an iframe with a form POST; the page must call
 * BX24.installFinish() or the app stays "not installed" (docs/protocols.md B1). BX24.js comes
 * from api.bitrix24.com, which is stood in for here by a script that records the call.
 */
const FAKE_BX24 = `window.BX24 = {
  init: function (callback) { setTimeout(callback, 0); },
  installFinish: function () { window.__installFinished = (window.__installFinished || 0) + 1; }
};`;

describe('the install page in a browser', () => {
  let browser: Browser;
  let stack: Stack;
  let page: Page;

  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(() => browser.close());
  beforeEach(async () => {
    stack = await startStack();
    page = await browser.newPage();
    await page.route('**/api.bitrix24.com/api/v1/**', (route) => route.fulfill({ contentType: 'application/javascript', body: FAKE_BX24 }));
  });
  afterEach(async () => {
    await page.close();
    await stack.close();
  });

  async function openInstallPage(request: { query: string; body: string }) {
    const url = `${stack.server.url}/install?${request.query}`;
    // Bitrix24 POSTs the form into its iframe; the browser is made to do the same.
    await page.route(url, (route) =>
      route.continue({ method: 'POST', postData: request.body, headers: { ...route.request().headers(), 'content-type': 'application/x-www-form-urlencoded' } }),
    );
    return page.goto(url);
  }

  it('finishes the installation with BX24.installFinish and lists the robots', async () => {
    const response = await openInstallPage(stack.b24.installPageRequest());
    expect(response?.status()).toBe(200);
    await page.waitForFunction(() => (window as unknown as { __installFinished?: number }).__installFinished === 1, undefined, { timeout: 5_000 });
    expect(await page.locator('#status').innerText()).toBe(`Chat2Desk for Bitrix24 is installed on ${stack.b24.domain}`);
    const robots = await page.locator('#robots li').allInnerTexts();
    expect(robots).toEqual([
      'Send Chat2Desk message c2d_send_message',
      'Find dialogs by phone c2d_find_dialogs',
      'Assign operator c2d_assign_operator',
      'Tag dialog c2d_tag_dialog',
      'Log closed dialog to timeline c2d_log_dialog',
    ]);
    expect(await page.locator('#next-step').isVisible()).toBe(true);
    expect(stack.b24.robots.size).toBe(5);
  });

  it('shows a refused install plainly and never finishes it', async () => {
    const response = await openInstallPage(stack.b24.installPageRequest({ memberId: 'f'.repeat(32) }));
    expect(response?.status()).toBe(403);
    expect(await page.locator('#status').innerText()).toBe('Installation failed');
    expect(await page.locator('#error').innerText()).toBe('Install refused: member_id does not match the token');
    await page.waitForTimeout(300);
    expect(await page.evaluate(() => (window as unknown as { __installFinished?: number }).__installFinished ?? 0)).toBe(0);
    expect(await stack.server.portals.get('f'.repeat(32))).toBeUndefined();
  });

  it('can be framed by the portal (no X-Frame-Options or frame-ancestors)', async () => {
    const response = await openInstallPage(stack.b24.installPageRequest());
    const headers = response!.headers();
    expect(headers['x-frame-options']).toBeUndefined();
    expect(headers['content-security-policy'] ?? '').not.toContain('frame-ancestors');
  });
});

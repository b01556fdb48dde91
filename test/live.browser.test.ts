import type { FrameLocator } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { TestClock } from './support/clock.js';
import { openInParentFrame, type ParentFrame, type ParentFrameOptions } from './support/parent-frame.js';
import { installAndConfigure, startStack, type Stack } from './support/stack.js';

const PHONE = '79161000001';
/** How long a change may take to show: a debounce, a ticket, reads through the API, on a busy machine. */
const SOON = { timeout: 10_000 };

/**
 * Live updates in the pages (README "Live updates"): a Chat2Desk webhook, delivered signed as
 * Chat2Desk does (test/live.test.ts), reaches an open CRM tab and an open Chat workspace without a
 * reload; a hidden page gives its stream up and reads again what it shows when it is shown again.
 */
describe('live updates in the CRM tab and the Chat workspace', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  /** One client with an open dialog and a first message; one live stream per user, so a second one shows whether the page's is still open. */
  async function seededStack(clock?: TestClock) {
    stack = await startStack({ b24: { domainIsAddress: true }, env: { LIVE_STREAMS_PER_USER: '1' }, clock });
    const { client, dialog } = stack.c2d.seedClient({ phone: PHONE, name: 'Ana López', withDialog: 'open' });
    const clientId = client.id as number;
    stack.c2d.receiveMessage({ clientId, text: 'first message' });
    const dialogId = dialog!.id as number;
    // Chat2Desk operator 617 is the admin's (the same e-mail in both fakes): "Mine" lists this dialog.
    (stack.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = 617;
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    return { clientId, dialogId };
  }

  async function open(options: Partial<ParentFrameOptions>): Promise<ParentFrame> {
    const parent = await openInParentFrame(browser(), { b24: stack!.b24, serverUrl: stack!.server.url, ...options });
    parents.push(parent);
    return parent;
  }

  async function openTab(): Promise<ParentFrame> {
    const contact = stack!.b24.seedContact({ name: 'Ana', phones: ['+7 916 100-00-01'] });
    return open({ placement: 'CRM_CONTACT_DETAIL_TAB', placementOptions: { ID: String(contact) }, width: 900 });
  }

  const liveState = (app: FrameLocator) => app.locator('body').getAttribute('data-live');
  /** Marks the frame's document: a reload would lose the mark. */
  const markDocument = (app: FrameLocator) => app.locator('body').evaluate(() => Object.assign(window, { __sameDocument: true }));
  const sameDocument = (app: FrameLocator) => app.locator('body').evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument === true);
  const messages = (app: FrameLocator, root: string) => app.locator(`${root} .c2d-msg__text`).allInnerTexts();

  async function clientWrites(clientId: number, text: string) {
    expect(await stack!.c2d.deliverWebhook(stack!.c2d.receiveMessage({ clientId, text }).webhook)).toEqual([200]);
  }

  /** The page as the browser sees it when the user switches to another tab (document.visibilityState). */
  const setVisibility = (app: FrameLocator, state: 'hidden' | 'visible') =>
    app.locator('body').evaluate((_body, value) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => value });
      document.dispatchEvent(new Event('visibilitychange'));
    }, state);

  /** A stream of this user's own, beside the page's: refused (429) while the page's is open, since a user may hold one. */
  async function ownStreamStatus(app: FrameLocator): Promise<number> {
    const token = await app.locator('#page-data').evaluate((node) => JSON.parse(node.textContent ?? '{}').token as string);
    const ticket = await fetch(`${stack!.server.url}/api/live/ticket`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(ticket.status).toBe(200);
    const stream = await fetch(`${stack!.server.url}/api/live?ticket=${encodeURIComponent(((await ticket.json()) as { ticket: string }).ticket)}`);
    await stream.body?.cancel();
    return stream.status;
  }

  it('a message a client writes appears in the open CRM tab without a reload', async () => {
    const { clientId } = await seededStack();
    const parent = await openTab();
    const { app } = parent;
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message']);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    await markDocument(app);
    await clientWrites(clientId, 'Where is my order?');
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message', 'Where is my order?']);
    await expect.poll(() => app.locator('#preview [data-field="last-action"]').innerText(), SOON).toContain('Where is my order?');
    expect(await sameDocument(app)).toBe(true);
    await parent.page.screenshot({ path: `${ARTIFACTS}/live-tab-message.png`, fullPage: true });
  });

  it('a live update keeps the user’s place: the draft in the composer, the operator chosen but not yet assigned, and the keyboard on it', async () => {
    const { clientId } = await seededStack();
    const parent = await openTab();
    const { app } = parent;
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message']);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    await app.locator('#history [data-action="message"]').fill('half a thought');
    const operator = app.locator('#preview [data-action="operator"]');
    // Another operator than the dialog's, chosen and not yet assigned.
    const chosen = await operator.evaluate((node) => {
      const select = node as HTMLSelectElement;
      const other = Array.from(select.options).find((option) => option.value && option.value !== select.value);
      return other ? other.value : '';
    });
    expect(chosen).not.toBe('');
    await operator.selectOption(chosen);
    await operator.focus();

    await clientWrites(clientId, 'are you there?');
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message', 'are you there?']);
    expect(await app.locator('#history [data-action="message"]').inputValue()).toBe('half a thought');
    expect(await operator.inputValue()).toBe(chosen);
    expect(await app.locator('body').evaluate(() => document.activeElement?.getAttribute('data-action'))).toBe('operator');
    await parent.page.screenshot({ path: `${ARTIFACTS}/live-tab-keeps-draft.png`, fullPage: true });
  });

  it('a live update keeps the older messages the user paged back to', async () => {
    const { clientId } = await seededStack();
    for (let index = 1; index <= 24; index++) stack!.c2d.receiveMessage({ clientId, text: `message ${index}` });
    const parent = await openTab();
    const { app } = parent;
    await expect.poll(async () => (await messages(app, '#history')).length, SOON).toBe(20);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    await app.locator('#load-older').click();
    await expect.poll(async () => (await messages(app, '#history')).length, SOON).toBe(25);
    await clientWrites(clientId, 'still there?');
    await expect.poll(async () => (await messages(app, '#history')).at(-1), SOON).toBe('still there?');
    const shown = await messages(app, '#history');
    expect(shown).toEqual(['first message', ...Array.from({ length: 24 }, (_, index) => `message ${index + 1}`), 'still there?']);
  });

  it('a stream that opens and drops at once is reconnected ever more slowly, not in a storm', async () => {
    await seededStack();
    const contact = stack!.b24.seedContact({ name: 'Ana', phones: ['+7 916 100-00-01'] });
    const parent = await openInParentFrame(browser(), {
      b24: stack!.b24,
      serverUrl: stack!.server.url,
      placement: 'CRM_CONTACT_DETAIL_TAB',
      placementOptions: { ID: String(contact) },
      width: 900,
    });
    parents.push(parent);
    // Every stream is accepted and ends at once (a proxy that cuts long responses, a server restarting).
    const opened: number[] = [];
    await expect.poll(() => liveState(parent.app), SOON).toBe('open');
    await parent.page.route(
      (url) => url.pathname === '/api/live',
      async (route) => {
        opened.push(Date.now());
        await route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-store' }, body: '' });
      },
    );
    // Hidden and shown again: the page's stream is opened anew, through the route.
    await setVisibility(parent.app, 'hidden');
    await setVisibility(parent.app, 'visible');
    await expect.poll(() => opened.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(4);
    const gaps = opened.slice(1, 4).map((at, index) => at - opened[index]!);
    // The delay doubles from ½–1 s each time the stream drops, since an open that did not last proves nothing.
    expect(gaps[2]).toBeGreaterThanOrEqual(2000);
  });

  it('a message a client writes appears in the open workspace dialog and in the list without a reload', async () => {
    const { clientId, dialogId } = await seededStack();
    const parent = await open({});
    const { app } = parent;
    await app.locator('#section-chat[data-ready="yes"]').waitFor();
    await app.locator(`#chat-list [data-dialog-id="${dialogId}"]`).click();
    await expect.poll(() => messages(app, '#chat-history'), SOON).toEqual(['first message']);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    await markDocument(app);
    await clientWrites(clientId, '¿Dónde está mi pedido?');
    await expect.poll(() => messages(app, '#chat-history'), SOON).toEqual(['first message', '¿Dónde está mi pedido?']);
    await expect.poll(() => app.locator(`#chat-list [data-dialog-id="${dialogId}"] [data-field="last"]`).innerText(), SOON).toBe('¿Dónde está mi pedido?');
    expect(await sameDocument(app)).toBe(true);
    await app.locator('#section-chat').screenshot({ path: `${ARTIFACTS}/live-workspace-message.png` });
  });

  it('a hidden page closes its stream, and shown again it reconnects and shows what arrived meanwhile', async () => {
    const { clientId } = await seededStack();
    const parent = await openTab();
    const { app } = parent;
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message']);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    // The page's stream holds the user's only place.
    expect(await ownStreamStatus(app)).toBe(429);

    await setVisibility(app, 'hidden');
    expect(await liveState(app)).toBe('paused');
    // The server let the page's stream go: the place is free (the close reaches it shortly after).
    await expect.poll(() => ownStreamStatus(app), SOON).toBe(200);
    await clientWrites(clientId, 'written while you were away');
    await setVisibility(app, 'visible');
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message', 'written while you were away']);
    await expect.poll(() => liveState(app), SOON).toBe('open');
    // And it is live again.
    await clientWrites(clientId, 'and one more');
    await expect.poll(() => messages(app, '#history'), SOON).toEqual(['first message', 'written while you were away', 'and one more']);
    await parent.page.screenshot({ path: `${ARTIFACTS}/live-tab-after-hidden.png`, fullPage: true });
  });

  it('with its token expired, the page renews it through the parent frame for the new ticket and is live again', async () => {
    const clock = new TestClock();
    const { clientId } = await seededStack(clock);
    const parent = await open({});
    const { app } = parent;
    await app.locator('#section-chat[data-ready="yes"]').waitFor();
    await expect.poll(() => liveState(app), SOON).toBe('open');
    await setVisibility(app, 'hidden');
    clock.advance(15 * 60_000 + 1);
    await setVisibility(app, 'visible');
    await expect.poll(() => liveState(app), SOON).toBe('open');
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^refreshAuth:/));
    await clientWrites(clientId, 'after the renewal');
    await expect.poll(() => app.locator('#chat-list [data-field="last"]').first().innerText(), SOON).toBe('after the renewal');
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { openInParentFrame, type ParentFrame, type ParentFrameOptions } from './support/parent-frame.js';
import { connectOpenLine } from './support/open-channels.js';
import { eventually, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

/** How long a list or a dialog may take to show on a busy machine. */
const SOON = { timeout: 10_000 };
const XSS_NAME = '<img src=x onerror="window.__xss=1">Eve';

/** Chat2Desk operator 617 ↔ admin user 1, 311416 ↔ user 2 (the same e-mails in both fakes). */
const ADMIN_OPERATOR = 617;
const MANAGER_OPERATOR = 311416;

/**
 * The app page's Chat section (README "The Chat workspace") in headless Chromium inside the fake
 * Bitrix24 parent frame: the views a user is offered, the search, "Load more", opening a dialog and
 * a link to one.
 */
describe('the Chat workspace in the app page', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  /** A dialog of a client who wrote, assigned to `operatorId`; seeded before Chat2Desk is connected so the cache knows the name. */
  function dialogOf(phone: string, name: string, operatorId: number | null, state: 'open' | 'closed' = 'open'): number {
    const { client, dialog } = stack!.c2d.seedClient({ phone, name, withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: client.id as number, text: `hello from ${name}` });
    const dialogId = dialog!.id as number;
    (stack!.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = operatorId;
    if (state === 'closed') stack!.c2d.closeDialog(dialogId);
    return dialogId;
  }

  async function seededStack() {
    stack = await startStack({ b24: { domainIsAddress: true } });
    const seeded = {
      anna: dialogOf('79161110001', 'Anna Petrova', MANAGER_OPERATOR),
      boris: dialogOf('79161110002', 'Boris', ADMIN_OPERATOR),
      clara: dialogOf('79161110003', 'Clara', MANAGER_OPERATOR, 'closed'),
      dmitri: dialogOf('79161110004', 'Dmitri', null, 'closed'),
    };
    await installAndConfigure(stack);
    return seeded;
  }

  async function open(options: Partial<ParentFrameOptions> = {}): Promise<ParentFrame> {
    const parent = await openInParentFrame(browser(), { b24: stack!.b24, serverUrl: stack!.server.url, ...options });
    parents.push(parent);
    return parent;
  }

  /** The Chat section as the frame shows it (the settings below are another test's). */
  async function shot(parent: ParentFrame, name: string) {
    await parent.app.locator('#section-chat').screenshot({ path: `${ARTIFACTS}/workspace-${name}.png` });
  }

  const chatReady = (parent: ParentFrame) => parent.app.locator('#section-chat[data-ready="yes"]').waitFor();
  const listed = (parent: ParentFrame) =>
    parent.app.locator('#chat-list [data-dialog-id]').evaluateAll((nodes) => nodes.map((node) => Number(node.getAttribute('data-dialog-id'))));
  const sorted = (ids: number[]) => [...ids].sort((a, b) => a - b);

  it('an admin lists Mine, Open and All, searches by name and by phone, and opens a dialog', async () => {
    const seeded = await seededStack();
    const parent = await open();
    const { app } = parent;
    await chatReady(parent);
    expect(await app.locator('#chat-views [data-view]').allInnerTexts()).toEqual(['Mine', 'Open', 'All']);
    expect(await app.locator('#chat-views [aria-pressed="true"]').innerText()).toBe('Mine');
    await expect.poll(() => listed(parent), SOON).toEqual([seeded.boris]);

    await app.locator('#chat-views [data-view="open"]').click();
    await expect.poll(async () => sorted(await listed(parent)), SOON).toEqual(sorted([seeded.anna, seeded.boris]));
    expect(await app.locator('#chat-views [aria-pressed="true"]').innerText()).toBe('Open');
    await app.locator('#chat-views [data-view="all"]').click();
    await expect.poll(async () => sorted(await listed(parent)), SOON).toEqual(sorted(Object.values(seeded)));
    const anna = app.locator(`#chat-list [data-dialog-id="${seeded.anna}"]`);
    expect(await anna.locator('[data-field="client"]').innerText()).toBe('Anna Petrova');
    expect(await anna.locator('[data-field="last"]').innerText()).toBe('hello from Anna Petrova');
    expect(await anna.locator('[data-field="operator"]').innerText()).not.toBe('');
    await shot(parent, 'admin-all');

    // By name, then by phone (as people type it), within the view chosen.
    await app.locator('#chat-q').fill('petrova');
    await app.locator('#chat-q').press('Enter');
    await expect.poll(() => listed(parent), SOON).toEqual([seeded.anna]);
    await app.locator('#chat-q').fill('+7 (916) 111-00-03');
    await app.locator('#chat-search button[type="submit"]').click();
    await expect.poll(() => listed(parent), SOON).toEqual([seeded.clara]);
    await app.locator('#chat-q').fill('Nobody like this');
    await app.locator('#chat-q').press('Enter');
    await expect.poll(() => app.locator('#chat-status').innerText(), SOON).toBe('No dialogs match this search.');

    // Opening a dialog, by keyboard: its summary and history, the keyboard taken there.
    await app.locator('#chat-q').fill('Boris');
    await app.locator('#chat-q').press('Enter');
    await expect.poll(() => listed(parent), SOON).toEqual([seeded.boris]);
    await app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).focus();
    await parent.page.keyboard.press('Enter');
    await app.locator('#chat-preview [data-field="client"]').waitFor();
    expect(await app.locator('#chat-preview [data-field="client"]').innerText()).toBe('Boris');
    await expect.poll(() => app.locator('#chat-history .c2d-msg').count(), SOON).toBe(1);
    expect(await app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).getAttribute('aria-current')).toBe('true');
    expect(await app.locator('#chat-preview h2').evaluate((node) => node === document.activeElement)).toBe(true);
    await shot(parent, 'admin-open-dialog');

    // The same actions as the CRM tab: a message written here goes out as the user's operator, once,
    // and the dialog closed from here is closed in Chat2Desk (the write controls of public/dialog-view.js).
    const composer = app.locator('#chat-history [data-mount="composer"]');
    await composer.locator('textarea').waitFor(SOON);
    await composer.locator('textarea').fill('Written from the workspace');
    await composer.locator('[data-action="send"]').dblclick();
    await expect.poll(() => app.locator('#chat-history .c2d-msg--out').last().innerText(), SOON).toContain('Written from the workspace');
    const sent = stack!.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200);
    expect(sent.map((call) => (call.body as Record<string, unknown>).text)).toEqual(['Written from the workspace']);
    expect((sent[0]!.body as Record<string, unknown>).operator_id).toBe(ADMIN_OPERATOR);
    await app.locator('#chat-preview [data-action="close"]').click();
    await expect.poll(() => stack!.c2d.account().dialogs.find((item) => item.id === seeded.boris)?.state, SOON).toBe('closed');
    await app.locator('#chat-preview [data-action="reopen"]').waitFor(SOON);
    await shot(parent, 'admin-acted');
  });

  it('"Load more" lists the next page the API offers', async () => {
    stack = await startStack({ b24: { domainIsAddress: true } });
    for (let index = 0; index < 55; index++) dialogOf(`7916222${String(index).padStart(4, '0')}`, `Client ${index}`, null);
    await installAndConfigure(stack);
    const parent = await open();
    const { app } = parent;
    await chatReady(parent);
    await app.locator('#chat-views [data-view="all"]').click();
    await expect.poll(() => listed(parent), SOON).toHaveLength(50);
    expect(await app.locator('#chat-more').isVisible()).toBe(true);
    await app.locator('#chat-more').click();
    await expect.poll(() => listed(parent), SOON).toHaveLength(55);
    await expect.poll(() => app.locator('#chat-more').isHidden(), SOON).toBe(true);
  });

  it('the dialog’s actions bar reads as in the tab at 1100 px: each choice’s label beside its list, on one line', async () => {
    const seeded = await seededStack();
    const parent = await open({ lang: 'ru' });
    const { app } = parent;
    await chatReady(parent);
    await app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).click();
    const operator = app.locator('#chat-preview [data-action="operator"]');
    await operator.waitFor();
    for (const action of ['operator', 'tag-choice', 'tag-target']) {
      const boxes = await app.locator(`#chat-preview [data-action="${action}"]`).evaluate((select) => {
        const label = (select.ownerDocument.querySelector(`label[for="${select.id}"]`) as HTMLElement).getBoundingClientRect();
        const box = select.getBoundingClientRect();
        return { labelRight: label.right, selectLeft: box.left, labelMiddle: label.top + label.height / 2, selectTop: box.top, selectBottom: box.bottom };
      });
      expect(boxes.labelRight, action).toBeLessThanOrEqual(boxes.selectLeft);
      expect(boxes.labelMiddle, action).toBeGreaterThan(boxes.selectTop);
      expect(boxes.labelMiddle, action).toBeLessThan(boxes.selectBottom);
    }
    await shot(parent, 'actions-bar-ru');
  });

  it('the frame shrinks with the list when a search finds fewer dialogs', async () => {
    await seededStack();
    const parent = await open({});
    const { app } = parent;
    await chatReady(parent);
    await app.locator('#chat-views [data-view="all"]').click();
    await expect.poll(async () => (await listed(parent)).length, SOON).toBe(4);
    const contentHeight = () => app.locator('html').evaluate(() => document.body.getBoundingClientRect().height);
    await expect.poll(async () => (await parent.frameHeight()) - (await contentHeight())).toBeLessThanOrEqual(40);
    const before = await parent.frameHeight();
    await app.locator('#chat-q').fill('nobody by this name');
    await app.locator('#chat-search button[type="submit"]').click();
    await expect.poll(async () => (await listed(parent)).length, SOON).toBe(0);
    await expect.poll(() => parent.frameHeight(), SOON).toBeLessThan(before - 100);
    expect((await parent.messages()).filter((message) => message.startsWith('resizeWindow:')).at(-1)).toContain('"width":"100%"');
  });

  it('a linked dialog read after the user already chose another does not replace it', async () => {
    const seeded = await seededStack();
    let entered!: () => void;
    const arrived = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const parent = await open({
      placement: 'DEFAULT',
      placementOptions: { dialog: String(seeded.clara) },
      beforeOpen: async (page) => {
        await page.route(
          (url) => url.pathname === `/api/dialogs/${seeded.clara}`,
          async (route) => {
            entered();
            await held;
            await route.fallback();
          },
        );
      },
    });
    const { app } = parent;
    await arrived;
    await app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).click();
    await expect.poll(() => app.locator('#chat-preview [data-field="client"]').innerText(), SOON).toBe('Boris');
    release();
    await chatReady(parent);
    expect(await app.locator('#chat-preview [data-field="client"]').innerText()).toBe('Boris');
  });

  it('in Open Channels mode a dialog offers its client’s Open Channel chat, opened in the Bitrix24 messenger; a client with none yet gets a note', async () => {
    const seeded = await seededStack();
    expect((await putSettings(stack!, { integrationType: 'open_channels' })).status).toBe(200);
    await connectOpenLine(stack!, 1);
    // Boris writes again: the message goes to the Open Channel, and Bitrix24 names the chat it is in.
    const boris = stack!.c2d.account().dialogs.find((item) => item.id === seeded.boris)!;
    const { webhook } = stack!.c2d.receiveMessage({ clientId: Number(boris.client_id), text: 'Is my order on its way?' });
    expect(await stack!.c2d.deliverWebhook(webhook)).toEqual([200]);
    const chat = await eventually(() => stack!.b24.openLineChats(1).find((item) => item.externalChatId === `c${boris.client_id}`), 15_000, 'the Open Channel chat');
    await eventually(async () => (await stack!.db.rows('select im_chat_id from open_channel_chats')).length === 1, 15_000, 'the chat remembered');

    const parent = await open();
    const { app } = parent;
    await chatReady(parent);
    await app.locator('#chat-views [data-view="all"]').click();
    // Opened by keyboard: the chat's line comes in after the dialog is drawn, and the keyboard stays on its heading.
    await app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).focus();
    await parent.page.keyboard.press('Enter');
    const button = app.locator('#chat-preview [data-field="open-channel"] [data-open-chat]');
    await button.waitFor(SOON);
    expect(await button.innerText()).toBe('Open chat');
    expect(await app.locator('#chat-preview h2').evaluate((node) => node === document.activeElement)).toBe(true);
    expect(await app.locator('#chat-preview dt', { hasText: 'Open Channel' }).count()).toBe(1);
    await shot(parent, 'open-channel-chat');
    await button.click();
    // The portal opens its messenger on the chat and never answers imOpenMessenger (pages-and-modes §3.3).
    await expect.poll(() => parent.messengerOpened()).toEqual([{ dialogId: `chat${chat.chatId}` }]);

    // Anna's messages never reached an Open Channel: a note, no button.
    await app.locator(`#chat-list [data-dialog-id="${seeded.anna}"]`).click();
    const none = app.locator('#chat-preview [data-field="no-open-chat"]');
    await none.waitFor(SOON);
    expect(await none.innerText()).toBe('No Open Channel chat known for this client yet: it shows here once an Open Channel takes one of their messages.');
    expect(await app.locator('#chat-preview [data-open-chat]').count()).toBe(0);
    await shot(parent, 'open-channel-none');

    // Anna writes now: her message reaches the Open Channel, and the dialog shown hears of its chat.
    const anna = stack!.c2d.account().dialogs.find((item) => item.id === seeded.anna)!;
    expect(await stack!.c2d.deliverWebhook(stack!.c2d.receiveMessage({ clientId: Number(anna.client_id), text: 'Any news?' }).webhook)).toEqual([200]);
    const annaChat = await eventually(() => stack!.b24.openLineChats(1).find((item) => item.externalChatId === `c${anna.client_id}`), 15_000, 'her Open Channel chat');
    await app.locator(`#chat-preview [data-open-chat="chat${annaChat.chatId}"]`).waitFor(SOON);
    expect(await app.locator('#chat-preview [data-field="no-open-chat"]').count()).toBe(0);

    // At 400 px, in Russian: the line and its button below the other facts.
    const narrow = await open({ width: 400, lang: 'ru' });
    await chatReady(narrow);
    await narrow.app.locator('#chat-views [data-view="all"]').click();
    await narrow.app.locator(`#chat-list [data-dialog-id="${seeded.boris}"]`).click();
    const narrowButton = narrow.app.locator('#chat-preview [data-field="open-channel"] [data-open-chat]');
    await narrowButton.waitFor(SOON);
    expect(await narrowButton.innerText()).toBe('Открыть чат');
    await narrow.app.locator('#chat-preview').screenshot({ path: `${ARTIFACTS}/workspace-open-channel-chat-400-ru.png` });
  });

  it('a user mapped to an operator, not an admin, sees only Mine: their operator’s dialogs', async () => {
    const seeded = await seededStack();
    const parent = await open({ userId: 2, lang: 'ru' });
    const { app } = parent;
    await chatReady(parent);
    expect(await app.locator('#chat-views [data-view]').allInnerTexts()).toEqual(['Мои']);
    await expect.poll(async () => sorted(await listed(parent)), SOON).toEqual(sorted([seeded.anna, seeded.clara]));
    // The settings stay an admin's.
    expect(await app.locator('#settings-form').count()).toBe(0);
    await app.locator(`#chat-list [data-dialog-id="${seeded.clara}"]`).click();
    await expect.poll(() => app.locator('#chat-preview [data-field="status"]').innerText(), SOON).toBe('Закрыт');
    await shot(parent, 'mapped-mine-ru');
  });

  it('a user with no operator and no wider access is told so, with no list', async () => {
    await seededStack();
    const userId = stack!.b24.seedUser({ name: 'Nora', email: 'nora@example.com' });
    const parent = await open({ userId });
    const { app } = parent;
    await app.locator('#chat-note').waitFor();
    expect(await app.locator('#chat-note').innerText()).toBe("You have no Chat2Desk operator and no access to other people's dialogs; ask your administrator.");
    expect(await app.locator('#chat-list').count()).toBe(0);
    await shot(parent, 'no-access');
  });

  it('a link with a dialog id opens that dialog; one the user may not see says so', async () => {
    const seeded = await seededStack();
    const parent = await open({ placement: 'DEFAULT', placementOptions: { dialog: String(seeded.clara) } });
    const { app } = parent;
    await chatReady(parent);
    expect(await app.locator('#chat-preview [data-field="client"]').innerText()).toBe('Clara');
    expect(await app.locator('#chat-preview [data-field="status"]').innerText()).toBe('Closed');
    await expect.poll(() => app.locator('#chat-history .c2d-msg').count(), SOON).toBeGreaterThan(0);
    await shot(parent, 'linked-dialog');

    const manager = await open({ userId: 2, placement: 'DEFAULT', placementOptions: { dialog: String(seeded.boris) }, width: 400 });
    await chatReady(manager);
    expect(await manager.app.locator('#chat-not-available').innerText()).toContain('This dialog is not available to you');
    expect(await manager.app.locator('#chat-preview').innerHTML()).toBe('');
    await shot(manager, 'linked-not-available-400');
  });

  it('a stranger’s client name is text in the list and in the dialog, and the page fits 400 px', async () => {
    stack = await startStack({ b24: { domainIsAddress: true } });
    const evil = dialogOf('79161110009', XSS_NAME, ADMIN_OPERATOR);
    await installAndConfigure(stack);
    const parent = await open({ width: 400 });
    const { app } = parent;
    await chatReady(parent);
    const item = app.locator(`#chat-list [data-dialog-id="${evil}"]`);
    expect(await item.locator('[data-field="client"]').innerText()).toBe(XSS_NAME);
    await item.click();
    await app.locator('#chat-preview [data-field="client"]').waitFor();
    expect(await app.locator('#chat-preview [data-field="client"]').innerText()).toBe(XSS_NAME);
    expect(await app.locator('#section-chat img').count()).toBe(0);
    expect(await app.locator('body').evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    // Nothing wider than the frame.
    expect(await app.locator('body').evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(parent, 'xss-as-text-400');
  });
});

import type { FrameLocator, Locator } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { TestClock } from './support/clock.js';
import { openInParentFrame, type ParentFrame } from './support/parent-frame.js';
import { openChannelChatOf } from './support/open-channels.js';
import { installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

const XSS_NAME = '<img src=x onerror="window.__xss=1">Ana';
const XSS_TEXT = '<script>window.__xss=2</script><b>bold?</b>';
const XSS_FILE = '<svg onload="window.__xss=3">.pdf';

/**
 * The CRM tab (docs/protocols.md B9, B18) in headless Chromium, inside the fake Bitrix24 parent
 * frame that POSTs /tab with PLACEMENT and PLACEMENT_OPTIONS and speaks the parent protocol, so the
 * real b24jssdk in our page is exercised. One browser for the file; each test gets its own stack.
 */
describe('the CRM tab inside a Bitrix24 card', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  async function configuredStack(clock?: TestClock): Promise<Stack> {
    stack = await startStack({ b24: { domainIsAddress: true }, clock });
    const operator = { id: 9001, email: 'ops@example.com', first_name: 'Olga', last_name: 'Operator', role: 'operator', online: 1 };
    stack.c2d.account().operators.push(operator);
    await installAndConfigure(stack, { defaultCountry: 'RU', operatorMap: { '9001': 2 } });
    return stack;
  }

  async function open(placement: string, id: number, width = 900): Promise<ParentFrame> {
    const parent = await openInParentFrame(browser(), { b24: stack!.b24, serverUrl: stack!.server.url, placement, placementOptions: { ID: String(id) }, width });
    parents.push(parent);
    return parent;
  }

  async function shot(parent: ParentFrame, name: string) {
    await parent.page.screenshot({ path: `${ARTIFACTS}/tab-${name}.png`, fullPage: true });
  }

  /** A client with a named, tagged, assigned open dialog of 25 messages (one with files), and a second, closed dialog. */
  async function richClient(phone: string, name: string) {
    const c2d = stack!.c2d;
    // An older, closed dialog of the same phone on another channel: "Show more" lists it.
    const other = c2d.seedClient({ phone, name, withDialog: 'closed', channelId: c2d.account().channels[1]?.id });
    const seeded = c2d.seedClient({ phone, name, withDialog: 'open' });
    const clientId = Number(seeded.client.id);
    const client = c2d.account().clients.find((item) => item.id === clientId)!;
    client.tags = [{ id: 1, label: 'VIP', description: '', group_id: 1, group_name: 'Main' }];
    for (let index = 1; index <= 24; index++) c2d.receiveMessage({ clientId, text: `message ${index}` });
    c2d.receiveMessage({
      clientId,
      text: 'here are the files',
      attachments: [
        { name: 'contract.pdf', link: 'https://files.example.com/contract.pdf' },
        { name: 'evil', link: 'javascript:alert(1)' },
      ],
    });
    const dialog = c2d.account().dialogs.find((item) => item.id === Number(seeded.dialog!.id))!;
    dialog.operator_id = 9001;
    return { clientId, dialogId: Number(seeded.dialog!.id), otherDialogId: Number(other.dialog!.id) };
  }

  const text = (scope: FrameLocator | Locator, selector: string) => scope.locator(selector).first().innerText();

  it('shows the latest dialog with every field, the other dialogs on "Show more", and pages the history back', async () => {
    await configuredStack();
    const main = await richClient('79161000001', 'Ana López');
    const second = stack!.c2d.seedClient({ phone: '79161000002', name: 'Boris', withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: Number(second.client.id), text: 'hi from Boris' });
    const first = stack!.b24.seedContact({ name: 'Ana', phones: ['+7 916 100-00-01'] });
    const secondContact = stack!.b24.seedContact({ name: 'Boris', phones: ['+7 916 100-00-02'] });
    const deal = stack!.b24.seedDeal({ contactIds: [first, secondContact] });
    const parent = await open('CRM_DEAL_DETAIL_TAB', deal);
    const { app } = parent;

    const preview = app.locator('#preview');
    await preview.locator('[data-field="client"]').waitFor();
    expect(await text(preview, '[data-field="client"]')).toBe('Ana López');
    expect(await text(preview, '[data-field="contacts"]')).toBe('+79161000001');
    expect(await text(preview, '[data-field="tags"]')).toBe('VIP');
    const channel = stack!.c2d.account().channels[0]!;
    expect(await text(preview, '[data-field="channel"]')).toBe(channel.name);
    expect(await text(preview, '[data-field="messenger"]')).toBe(channel.transports[0]);
    expect(await text(preview, '[data-field="last-action"]')).toContain('here are the files');
    expect(await text(preview, '[data-field="operator"]')).toBe('Olga Operator (Bitrix24 user #2)');
    expect(await text(preview, '[data-field="status"]')).toBe('Open');
    const link = preview.locator('[data-field="chat2desk"]');
    expect(await link.getAttribute('href')).toContain(`dialogID=${main.dialogId}`);
    expect(await link.getAttribute('target')).toBe('_blank');
    expect(await link.getAttribute('rel')).toContain('noopener');
    // Two phones on the record: a switcher, the first chosen.
    expect(await app.locator('#phones button').allInnerTexts()).toEqual(['+79161000001', '+79161000002']);
    expect(await app.locator('#phones button[aria-pressed="true"]').innerText()).toBe('+79161000001');

    // The history: the newest 20, oldest first, the files as links (http(s) only).
    const history = app.locator('#history .c2d-history > li');
    await expect.poll(() => history.count()).toBe(20);
    expect(await history.last().innerText()).toContain('here are the files');
    const files = app.locator('#history .c2d-msg__files a');
    expect(await files.count()).toBe(1);
    expect(await files.first().getAttribute('href')).toBe('https://files.example.com/contract.pdf');
    // The javascript: link is dropped by the server (contract: http(s) only), not shown as a link.
    expect(await app.locator('#history').innerHTML()).not.toContain('javascript:');
    // The page fitted its frame to its content through the parent (resizeWindow).
    await expect.poll(() => parent.frameHeight()).toBeGreaterThan(400);
    await shot(parent, 'preview');

    // Load older, by keyboard: the rest comes in above, and the button goes.
    await app.locator('#load-older').focus();
    await parent.page.keyboard.press('Enter');
    await expect.poll(() => history.count()).toBe(25);
    expect(await history.first().innerText()).toContain('message 1');
    await expect.poll(() => app.locator('#load-older').isHidden()).toBe(true);
    await shot(parent, 'history-older');

    // Show more: the phone's other dialog and the second phone's.
    await app.locator('#show-more').click();
    expect(await app.locator('#show-more').getAttribute('aria-expanded')).toBe('true');
    const items = app.locator('#more .c2d-item__open');
    await expect.poll(() => items.count()).toBe(2);
    const listed = await items.evaluateAll((nodes) => nodes.map((node) => Number(node.getAttribute('data-dialog-id'))));
    expect(listed).toEqual(expect.arrayContaining([main.otherDialogId, Number(second.dialog!.id)]));
    await shot(parent, 'show-more');
    await app.locator(`#more .c2d-item__open[data-dialog-id="${main.otherDialogId}"]`).click();
    await expect.poll(() => text(app, '#preview [data-field="status"]')).toBe('Closed');

    // Every control has a name a screen reader announces.
    const unnamed = await app
      .locator('button, a')
      .evaluateAll((controls) =>
        controls.filter((control) => !control.textContent?.trim() && !control.getAttribute('aria-label')).map((control) => control.outerHTML.slice(0, 80)),
      );
    expect(unnamed).toEqual([]);
  });

  it('switches between the record’s phones and says when Chat2Desk has no dialog for one', async () => {
    await configuredStack();
    const seeded = stack!.c2d.seedClient({ phone: '79161000001', name: 'Ana', withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: Number(seeded.client.id), text: 'hola' });
    const contact = stack!.b24.seedContact({ name: 'Ana', phones: ['+7 916 100-00-01', '+7 916 100-00-07'] });
    const parent = await open('CRM_CONTACT_DETAIL_TAB', contact);
    const { app } = parent;
    await app.locator('#preview [data-field="client"]').waitFor();
    await app.locator('#phones button[data-phone="79161000007"]').click();
    await app.locator('#not-found').waitFor();
    expect(await app.locator('#not-found').innerText()).toContain('Dialogs not found');
    expect(await app.locator('#phones button[aria-pressed="true"]').innerText()).toBe('+79161000007');
    await shot(parent, 'not-found');
    await app.locator('#phones button[data-phone="79161000001"]').click();
    await app.locator('#preview [data-field="client"]').waitFor();
    expect(await text(app, '#preview [data-field="client"]')).toBe('Ana');
    await shot(parent, 'switched-back');
  });

  it('renews an expired tab token through the parent frame and carries on', async () => {
    const clock = new TestClock();
    await configuredStack(clock);
    stack!.c2d.seedClient({ phone: '79161000001', name: 'Ana', withDialog: 'open' });
    stack!.c2d.seedClient({ phone: '79161000002', name: 'Boris', withDialog: 'open' });
    const contact = stack!.b24.seedContact({ phones: ['+7 916 100-00-01', '+7 916 100-00-02'] });
    const parent = await open('CRM_CONTACT_DETAIL_TAB', contact);
    const { app } = parent;
    await app.locator('#preview [data-field="client"]').waitFor();
    clock.advance(15 * 60_000 + 1);
    await app.locator('#phones button[data-phone="79161000002"]').click();
    await expect.poll(() => text(app, '#preview [data-field="client"]')).toBe('Boris');
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^refreshAuth:/));
  });

  it('in Open Channels mode opens the record’s Open Channel chat in the Bitrix24 messenger, or says there is none yet', async () => {
    await configuredStack();
    expect((await putSettings(stack!, { integrationType: 'open_channels' })).status).toBe(200);
    const seeded = stack!.c2d.seedClient({ phone: '79161000001', name: 'Ana López', withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: Number(seeded.client.id), text: 'Hola, ¿sigue disponible?' });
    const contact = stack!.b24.seedContact({ name: 'Ana', phones: ['+7 916 100-00-01'] });
    const deal = stack!.b24.seedDeal({ contactIds: [contact] });
    const chatId = await openChannelChatOf(stack!, { entityTypeId: 2, entityId: deal });
    const parent = await open('CRM_DEAL_DETAIL_TAB', deal);
    const { app } = parent;
    await app.locator('#preview [data-field="client"]').waitFor();
    const button = app.locator('#open-channel #open-chat');
    expect(await button.innerText()).toBe('Open chat');
    expect(await button.getAttribute('class')).toContain('ui-btn');
    expect(await text(app, '#open-channel')).toContain('Open Channel');
    await shot(parent, 'open-chat');
    await button.click();
    // The portal opens its messenger on the chat and never answers imOpenMessenger (pages-and-modes §3.3).
    await expect.poll(() => parent.messengerOpened()).toEqual([{ dialogId: `chat${chatId}` }]);
    expect(await parent.messages()).toContainEqual(expect.stringMatching(new RegExp(`^imOpenMessenger:\\{"dialogId":"chat${chatId}"\\}:`)));

    // A lead with no Open Channel chat yet, in Spanish: a hint, no button. A Telegram client of the
    // Open Channel has no phone: the hint comes before the no-phone message all the same.
    const lead = stack!.b24.seedLead({ name: 'Nadie' });
    const spanish = await openInParentFrame(browser(), {
      b24: stack!.b24,
      serverUrl: stack!.server.url,
      placement: 'CRM_LEAD_DETAIL_TAB',
      placementOptions: { ID: String(lead) },
      lang: 'es',
      width: 900,
    });
    parents.push(spanish);
    await spanish.app.locator('#no-phones').waitFor();
    expect(await text(spanish.app, '#no-open-chat')).toBe('Todavía no hay un chat del Canal abierto con este cliente.');
    expect(await spanish.app.locator('#open-chat').count()).toBe(0);
    await shot(spanish, 'open-chat-none');
  });

  it('in Open Channels mode a renewal brings the Open Channel chat that appeared meanwhile', async () => {
    const clock = new TestClock();
    await configuredStack(clock);
    expect((await putSettings(stack!, { integrationType: 'open_channels' })).status).toBe(200);
    stack!.c2d.seedClient({ phone: '79161000001', name: 'Ana', withDialog: 'open' });
    stack!.c2d.seedClient({ phone: '79161000002', name: 'Boris', withDialog: 'open' });
    const contact = stack!.b24.seedContact({ phones: ['+7 916 100-00-01', '+7 916 100-00-02'] });
    const parent = await open('CRM_CONTACT_DETAIL_TAB', contact);
    const { app } = parent;
    await app.locator('#no-open-chat').waitFor();
    const chatId = await openChannelChatOf(stack!, { entityTypeId: 3, entityId: contact });
    clock.advance(15 * 60_000 + 1);
    await app.locator('#phones button[data-phone="79161000002"]').click();
    await expect.poll(() => text(app, '#preview [data-field="client"]')).toBe('Boris');
    await app.locator('#open-chat').waitFor({ timeout: 10_000 });
    expect(await app.locator('#no-open-chat').count()).toBe(0);
    await app.locator('#open-chat').click();
    await expect.poll(() => parent.messengerOpened()).toEqual([{ dialogId: `chat${chatId}` }]);
  });

  it('says clearly when the record has no phone', async () => {
    await configuredStack();
    const lead = stack!.b24.seedLead({ name: 'Nobody' });
    const parent = await open('CRM_LEAD_DETAIL_TAB', lead);
    await parent.app.locator('#no-phones').waitFor();
    expect(await parent.app.locator('#no-phones').innerText()).toContain('no phone number');
    await shot(parent, 'no-phones');
  });

  it('renders a stranger’s client name, message and file name as text', async () => {
    await configuredStack();
    const seeded = stack!.c2d.seedClient({ phone: '79161000001', name: XSS_NAME, withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: Number(seeded.client.id), text: XSS_TEXT, attachments: [{ name: XSS_FILE, link: 'https://files.example.com/a.pdf' }] });
    const contact = stack!.b24.seedContact({ phones: ['+7 916 100-00-01'] });
    const parent = await open('CRM_CONTACT_DETAIL_TAB', contact, 600);
    const { app } = parent;
    await app.locator('#history .c2d-msg').first().waitFor();
    expect(await text(app, '#preview [data-field="client"]')).toBe(XSS_NAME);
    expect(await text(app, '#history .c2d-msg__text')).toBe(XSS_TEXT);
    expect(await text(app, '#history .c2d-msg__files a')).toBe(XSS_FILE);
    expect(await app.locator('img, svg, script:not([src]):not([type="application/json"]), b').count()).toBe(0);
    expect(await app.locator('body').evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    await shot(parent, 'xss-as-text');
  });
});

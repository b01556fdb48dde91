import type { FrameLocator } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { ARTIFACTS, chromiumForFile } from './support/browser.js';
import { TestClock } from './support/clock.js';
import { openInParentFrame, type ParentFrame } from './support/parent-frame.js';
import { installAndConfigure, sentMessages, startStack, type Stack } from './support/stack.js';

/** Chat2Desk operator 617 has Bitrix24 user 1's e-mail (admin@example.com): user 1 writes as 617. */
const OPERATOR = 617;
const OTHER_OPERATOR = 311416;
const PHONE = '79161000001';
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082', 'hex');
const XSS_FILE = '<img src=x onerror="window.__xss=1">.png';

/**
 * The dialog view's write controls (issue 9 slice 2) in the CRM tab: real Chromium inside the fake
 * Bitrix24 parent frame, against our server, its job pipeline and the fake Chat2Desk. One browser
 * for the file; each test gets its own stack.
 */
describe('writing, tagging, closing and assigning from the CRM tab', () => {
  const browser = chromiumForFile();
  let stack: Stack | undefined;
  const parents: ParentFrame[] = [];

  afterEach(async () => {
    for (const parent of parents.splice(0)) await parent.close();
    await stack?.close();
    stack = undefined;
  });

  async function configuredStack(options: { clock?: TestClock; env?: Record<string, string> } = {}): Promise<Stack> {
    stack = await startStack({ b24: { domainIsAddress: true }, ...options });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    return stack;
  }

  /** A contact whose phone has an open dialog on WhatsApp, in which the client wrote once. */
  function clientWithDialog(phone = PHONE) {
    const seeded = stack!.c2d.seedClient({ phone, name: 'Ana', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    stack!.c2d.receiveMessage({ clientId: Number(seeded.client.id), text: 'Hola, ¿tienen stock?' });
    return { clientId: Number(seeded.client.id), dialogId: Number(seeded.dialog!.id) };
  }

  async function openContact(phones: string[], options: { userId?: number; width?: number; lang?: string } = {}): Promise<ParentFrame> {
    const contact = stack!.b24.seedContact({ name: 'Ana', phones: phones.map((phone) => `+${phone}`) });
    const parent = await openInParentFrame(browser(), {
      b24: stack!.b24,
      serverUrl: stack!.server.url,
      placement: 'CRM_CONTACT_DETAIL_TAB',
      placementOptions: { ID: String(contact) },
      width: options.width ?? 900,
      userId: options.userId,
      lang: options.lang,
    });
    parents.push(parent);
    return parent;
  }

  const shot = (parent: ParentFrame, name: string) => parent.page.screenshot({ path: `${ARTIFACTS}/tab-actions-${name}.png`, fullPage: true });
  const statusOf = (app: FrameLocator, field: string) => app.locator(`[data-field="${field}"]`).first().innerText();
  const dialogOf = (id: number) => stack!.c2d.account().dialogs.find((dialog) => dialog.id === id)!;
  const clientTagIds = (id: number) => ((stack!.c2d.account().clients.find((client) => client.id === id)?.tags ?? []) as Array<{ id: number }>).map((tag) => tag.id);

  it('sends a message as the mapped operator once, on a double click and on a retry after a network error', async () => {
    await configuredStack();
    const { clientId } = clientWithDialog();
    const parent = await openContact([PHONE]);
    const { app, page } = parent;
    const composer = app.locator('#history [data-mount="composer"]');
    await composer.locator('textarea').waitFor();
    // The textarea has a label a screen reader announces.
    expect(await composer.locator('label', { hasText: 'Message' }).count()).toBe(1);

    await composer.locator('textarea').fill('Sí, tenemos: ¿cuántos?');
    await composer.locator('[data-action="send"]').dblclick();
    await expect.poll(() => statusOf(app, 'send-status')).toBe('Sent.');
    await expect.poll(() => app.locator('#history .c2d-msg--out').last().innerText()).toContain('Sí, tenemos: ¿cuántos?');
    const sent = sentMessages(stack!);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.body).toMatchObject({ text: 'Sí, tenemos: ¿cuántos?', operator_id: OPERATOR, client_id: clientId });
    expect(await composer.locator('textarea').inputValue()).toBe('');
    await shot(parent, 'sent');

    // The server takes the next message but its answer is lost on the way back: the page says so and
    // keeps the key, so sending again is the same action (the server answers the job it already has).
    let lost = 0;
    await page.route('**/api/dialog-actions', async (route) => {
      if (route.request().method() !== 'POST' || lost > 0) return route.fallback();
      lost++;
      await route.fetch();
      await route.abort('connectionreset');
    });
    await composer.locator('textarea').fill('¿Los envío hoy?');
    await composer.locator('textarea').press('Control+Enter');
    await expect.poll(() => statusOf(app, 'send-status')).toBe('No answer from the server. Try again: it will not be done twice.');
    await shot(parent, 'network-error');
    await composer.locator('[data-action="send"]').click();
    await expect.poll(() => statusOf(app, 'send-status')).toBe('Sent.');
    expect(lost).toBe(1);
    expect(sentMessages(stack!).map((call) => (call.body as { text: string }).text)).toEqual(['Sí, tenemos: ¿cuántos?', '¿Los envío hoy?']);
  });

  it('adds and removes tags on the client and the request, closes and reopens, and assigns another operator', async () => {
    await configuredStack();
    const { clientId, dialogId } = clientWithDialog();
    const account = stack!.c2d.account();
    const [first, second] = account.tags;
    const parent = await openContact([PHONE]);
    const { app } = parent;
    const actions = app.locator('#preview [data-mount="actions"]');
    await actions.locator('[data-action="close"]').waitFor();

    // A tag on the client: shown at once with its remove button.
    await actions.locator('[data-action="tag-choice"]').selectOption(String(first!.id));
    await actions.locator('[data-action="tag-target"]').selectOption('client');
    await actions.locator('[data-action="tag-add"]').click();
    await expect.poll(() => app.locator('#preview [data-field="tags"]').innerText()).toBe(first!.label);
    expect(clientTagIds(clientId)).toEqual([first!.id]);
    const remove = actions.locator(`[data-action="untag-${first!.id}"]`);
    expect(await remove.getAttribute('aria-label')).toBe(`Remove tag ${first!.label}`);
    await shot(parent, 'tagged');

    // A tag on the current request, then removed from it.
    const requestTags = () => account.requests.find((request) => request.id === dialogOf(dialogId).last_request_id)!.tags.map((tag) => tag.id);
    await actions.locator('[data-action="tag-choice"]').selectOption(String(second!.id));
    await actions.locator('[data-action="tag-target"]').selectOption('request');
    await actions.locator('[data-action="tag-add"]').click();
    await expect.poll(requestTags).toEqual([second!.id]);
    await expect.poll(() => statusOf(app, 'action-status')).toBe('Done.');
    await actions.locator('[data-action="tag-choice"]').selectOption(String(second!.id));
    await actions.locator('[data-action="tag-target"]').selectOption('request');
    await actions.locator('[data-action="tag-remove"]').click();
    await expect.poll(requestTags).toEqual([]);

    // The client's tag removed by its button, by keyboard.
    await actions.locator(`[data-action="untag-${first!.id}"]`).focus();
    await parent.page.keyboard.press('Enter');
    await expect.poll(() => app.locator('#preview [data-field="tags"]').innerText()).toBe('no tags');
    expect(clientTagIds(clientId)).toEqual([]);

    // Close, then reopen: the status and the button follow, the focus stays on the button.
    await actions.locator('[data-action="close"]').click();
    await expect.poll(() => app.locator('#preview [data-field="status"]').innerText()).toBe('Closed');
    expect(dialogOf(dialogId).state).toBe('closed');
    await expect.poll(() => app.locator('[data-action="reopen"]').evaluate((node) => node === document.activeElement)).toBe(true);
    await shot(parent, 'closed');
    await actions.locator('[data-action="reopen"]').click();
    await expect.poll(() => app.locator('#preview [data-field="status"]').innerText()).toBe('Open');
    expect(dialogOf(dialogId).state).toBe('open');

    // Assign to another operator, chosen from the select by keyboard.
    const operators = actions.locator('[data-action="operator"]');
    expect(await actions.locator('label', { hasText: 'Assign to' }).getAttribute('for')).toBe(await operators.getAttribute('id'));
    await operators.selectOption(String(OTHER_OPERATOR));
    await actions.locator('[data-action="assign"]').focus();
    await parent.page.keyboard.press('Enter');
    await expect.poll(() => dialogOf(dialogId).operator_id).toBe(OTHER_OPERATOR);
    // Operator 311416 has Bitrix24 user 2's e-mail (617 has user 1's).
    await expect.poll(() => app.locator('#preview [data-field="operator"]').innerText()).toBe('John Doe (Bitrix24 user #2)');
    expect(await actions.locator('[data-action="operator"]').inputValue()).toBe(String(OTHER_OPERATOR));
    await shot(parent, 'assigned');

    // Write first is there too when dialogs exist; Cancel closes it and gives the focus back.
    await app.locator('#write-first-open').click();
    expect(await app.locator('#write-first-open').getAttribute('aria-expanded')).toBe('true');
    expect(await app.locator('#write-first [data-action="wf-phone"]').inputValue()).toBe(PHONE);
    await shot(parent, 'write-first-open');

    // Every control has a name a screen reader announces.
    const unnamed = await app
      .locator('button, a, select, textarea, input:not([type="hidden"])')
      .evaluateAll((controls) =>
        controls
          .filter(
            (control) =>
              !control.textContent?.trim() &&
              !control.getAttribute('aria-label') &&
              !(control.id && document.querySelector(`label[for="${control.id}"]`)) &&
              !control.closest('label')?.textContent?.trim(),
          )
          .map((control) => control.outerHTML.slice(0, 80)),
      );
    expect(unnamed).toEqual([]);
    await app.locator('#write-first [data-action="wf-cancel"]').click();
    expect(await app.locator('#write-first').isHidden()).toBe(true);
    expect(await app.locator('#write-first-open').evaluate((node) => node === document.activeElement)).toBe(true);
  });

  it('writes first with an attachment when there is no dialog: the WhatsApp template rule in words, the file fetched, a renewal mid-send, the link expired', async () => {
    const clock = new TestClock();
    await configuredStack({ clock, env: { UPLOAD_MAX_BYTES: '4096', FILE_LINK_HOURS: '2' } });
    const phone = '79161000009';
    const parent = await openContact([phone], { width: 400 });
    const { app } = parent;
    await app.locator('#not-found').waitFor();
    const form = app.locator('#write-first');
    await form.locator('textarea').waitFor();
    expect(await form.locator('[data-action="wf-phone"]').inputValue()).toBe(phone);

    // A file over UPLOAD_MAX_BYTES: the server's words, naming the limit.
    await form.locator('[data-action="attach"]').setInputFiles({ name: 'big.png', mimeType: 'image/png', buffer: Buffer.concat([PNG, Buffer.alloc(5000)]) });
    await expect.poll(() => form.locator('.c2d-file--error').innerText()).toContain('The file is larger than 4 KB');
    await form.locator('[aria-label="Remove file big.png"]').click();
    // A stranger-named file renders as text, in the pending list and later in the history. Its upload
    // is held until the page has shown it uploading and refused to send meanwhile.
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    await parent.page.route('**/api/files', async (route) => {
      await held;
      await route.fallback();
    });
    await form.locator('[data-action="attach"]').setInputFiles({ name: XSS_FILE, mimeType: 'image/png', buffer: PNG });
    await form.locator('.c2d-file[data-state="uploading"] progress').waitFor();
    await form.locator('textarea').fill('Hola Ana, le escribimos por su pedido');
    await form.locator('[data-action="send"]').click();
    await expect.poll(() => statusOf(app, 'send-status')).toBe('Wait until the files are uploaded.');
    await shot(parent, 'uploading');
    release();
    await expect.poll(() => form.locator('.c2d-file').getAttribute('data-state')).toBe('ready');
    expect(await form.locator('.c2d-file__name').innerText()).toBe(XSS_FILE);

    // wa_dialog (WhatsApp Business) refuses a first message without a template: said in words.
    await form.locator('[data-action="wf-channel"]').selectOption('17404');
    await form.locator('[data-action="wf-transport"]').selectOption('wa_dialog');
    await form.locator('[data-action="send"]').click();
    await expect.poll(() => statusOf(app, 'send-status')).toMatch(/only with a template WhatsApp approved: send the first message from Chat2Desk/);
    expect(sentMessages(stack!)).toHaveLength(0);
    await shot(parent, 'template-refused');

    // Another messenger is another action (a new key): it goes out, and the view shows the new dialog.
    await form.locator('[data-action="wf-transport"]').selectOption('whatsapp');
    await form.locator('[data-action="send"]').click();
    await app.locator('#preview [data-field="client"]').waitFor();
    await expect.poll(() => app.locator('#preview h2').evaluate((node) => node === document.activeElement)).toBe(true);
    const [message] = sentMessages(stack!);
    const body = message!.body as { text: string; operator_id: number; attachment: string; attachment_filename: string };
    expect(body).toMatchObject({ text: 'Hola Ana, le escribimos por su pedido', operator_id: OPERATOR, attachment_filename: XSS_FILE });
    expect(stack!.c2d.fetchedAttachments[0]).toMatchObject({ url: body.attachment, status: 200, contentType: 'image/png' });
    await expect.poll(() => app.locator('#history .c2d-msg__files a').first().innerText()).toBe(XSS_FILE);
    expect(await app.locator('#history .c2d-msg--out .c2d-msg__text').first().innerText()).toBe('Hola Ana, le escribimos por su pedido');
    expect(await app.locator('img').count()).toBe(0);
    expect(await app.locator('body').evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    await shot(parent, 'wrote-first');

    // The tab token expires (15 minutes): the send is refused 401 {renew}, the page renews through the
    // parent frame and sends the same action again, with the same key.
    const posts: string[] = [];
    parent.page.on('request', (request) => {
      if (request.method() === 'POST' && request.url().endsWith('/api/dialog-actions')) posts.push(JSON.parse(request.postData() ?? '{}').key);
    });
    clock.advance(15 * 60_000 + 1);
    const composer = app.locator('#history [data-mount="composer"]');
    await composer.locator('textarea').fill('¿Le llegó el archivo?');
    await composer.locator('[data-action="send"]').click();
    await expect.poll(() => statusOf(app, 'send-status')).toBe('Sent.');
    expect(posts).toHaveLength(2);
    expect(posts[1]).toBe(posts[0]);
    expect(await parent.messages()).toContainEqual(expect.stringMatching(/^refreshAuth:/));
    expect(sentMessages(stack!).map((call) => (call.body as { text?: string }).text)).toEqual(['Hola Ana, le escribimos por su pedido', '¿Le llegó el archivo?']);

    // The link Chat2Desk fetched stops working FILE_LINK_HOURS after the upload.
    clock.advance(2 * 3600_000 - 15 * 60_000);
    expect(await stack!.c2d.fetchAttachment(body.attachment)).toMatchObject({ status: 410 });
  });

  it('a first message still on its way when the user switches phone goes out once, is announced, and leaves the user on the phone they chose', async () => {
    await configuredStack();
    const first = '79161000009';
    clientWithDialog(PHONE);
    const parent = await openContact([first, PHONE]);
    const { app, page } = parent;
    const form = app.locator('#write-first');
    await form.locator('textarea').waitFor();
    // The write-first request is held until the user has moved to the other phone.
    let entered!: () => void;
    const arrived = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    await page.route('**/api/dialog-actions', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      entered();
      await held;
      await route.fallback();
    });
    await form.locator('textarea').fill('Hola Ana');
    await form.locator('[data-action="send"]').click();
    await arrived;
    await app.locator(`button[data-phone="${PHONE}"]`).click();
    await expect.poll(() => statusOf(app, 'contacts')).toBe(`+${PHONE}`);
    release();
    // The late outcome is told where the user is now, and the view stays on the phone they chose.
    await expect.poll(() => app.locator('#dialog-view > .c2d-status').first().innerText(), { timeout: 10_000 }).toBe(`First message sent to +${first}.`);
    expect(sentMessages(stack!)).toHaveLength(1);
    expect(await app.locator(`button[data-phone="${PHONE}"]`).getAttribute('aria-pressed')).toBe('true');
    expect(await statusOf(app, 'contacts')).toBe(`+${PHONE}`);
    await shot(parent, 'wrote-first-elsewhere');
  });

  it('an action still on its way when the user opens another dialog is told under that dialog’s name and leaves the user where they are', async () => {
    await configuredStack();
    const older = stack!.c2d.seedClient({ phone: PHONE, name: 'Ana', withDialog: 'closed', channelId: stack!.c2d.account().channels[1]?.id });
    const otherId = Number(older.dialog!.id);
    const { dialogId } = clientWithDialog();
    const parent = await openContact([PHONE]);
    const { app, page } = parent;
    const actions = app.locator('#preview [data-mount="actions"]');
    await actions.locator('[data-action="close"]').waitFor();
    let entered!: () => void;
    const arrived = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    await page.route('**/api/dialog-actions', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      entered();
      await held;
      await route.fallback();
    });
    await actions.locator('[data-action="close"]').click();
    await arrived;
    await app.locator('#show-more').click();
    const otherItem = app.locator(`#more [data-dialog-id="${otherId}"]`);
    await otherItem.click();
    await expect.poll(() => app.locator('#preview [data-dialog-id]').first().getAttribute('data-dialog-id')).toBe(String(otherId));
    // The keyboard follows to the dialog opened (its item left the list).
    expect(await app.locator('body').evaluate(() => document.activeElement?.id)).toBe(`dialog-${otherId}-title`);
    release();
    await expect.poll(() => dialogOf(dialogId).state).toBe('closed');
    await expect.poll(() => statusOf(app, 'action-status'), { timeout: 10_000 }).toBe(`Dialog #${dialogId}: Done.`);
    expect(await app.locator('#preview [data-dialog-id]').first().getAttribute('data-dialog-id')).toBe(String(otherId));
    // The keyboard stays on the dialog the user chose, not pulled into its actions bar.
    expect(await app.locator('body').evaluate(() => document.activeElement?.id)).toBe(`dialog-${otherId}-title`);
    await shot(parent, 'acted-elsewhere');
  });

  it('an action clicked again after a live update redrew the actions bar is the same action (the same idempotency key)', async () => {
    await configuredStack();
    const { clientId, dialogId } = clientWithDialog();
    const parent = await openContact([PHONE]);
    const { app, page } = parent;
    const actions = app.locator('#preview [data-mount="actions"]');
    await actions.locator('[data-action="close"]').waitFor();
    await expect.poll(() => app.locator('body').getAttribute('data-live')).toBe('open');
    const keys: string[] = [];
    let entered!: () => void;
    const arrived = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    await page.route('**/api/dialog-actions', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      keys.push((route.request().postDataJSON() as { key: string }).key);
      if (keys.length === 1) {
        entered();
        await held;
      }
      await route.fallback();
    });
    await actions.locator('[data-action="close"]').click();
    await arrived;
    // The client writes meanwhile: the live update draws the bar again, its Close button enabled.
    expect(await stack!.c2d.deliverWebhook(stack!.c2d.receiveMessage({ clientId, text: 'hello?' }).webhook)).toEqual([200]);
    await expect.poll(() => app.locator('#history .c2d-msg__text').last().innerText(), { timeout: 10_000 }).toBe('hello?');
    await actions.locator('[data-action="close"]').click();
    await expect.poll(() => keys.length).toBe(2);
    release();
    await expect.poll(() => dialogOf(dialogId).state).toBe('closed');
    expect(keys[1]).toBe(keys[0]);
  });

  it('the frame grows with the Write first form and shrinks back when it is cancelled, its width left to the portal ("100%")', async () => {
    await configuredStack();
    clientWithDialog();
    const parent = await openContact([PHONE]);
    const { app } = parent;
    await app.locator('#history [data-mount="composer"] textarea').waitFor();
    const contentHeight = () =>
      app
        .locator('body')
        .evaluate((body) =>
          Math.ceil(body.getBoundingClientRect().height + Number.parseFloat(getComputedStyle(body).marginTop) + Number.parseFloat(getComputedStyle(body).marginBottom)),
        );
    await expect.poll(async () => Math.abs((await parent.frameHeight()) - (await contentHeight()))).toBeLessThanOrEqual(2);
    const before = await parent.frameHeight();
    await app.locator('#write-first-open').click();
    await expect.poll(() => parent.frameHeight()).toBeGreaterThan(before + 150);
    await app.locator('[data-action="wf-cancel"]').click();
    await expect.poll(() => parent.frameHeight(), { timeout: 10_000 }).toBeLessThanOrEqual(before + 2);
    // The last resize asked for the portal's full width, as fitWindow does.
    const resizes = (await parent.messages()).filter((message) => message.startsWith('resizeWindow:'));
    expect(resizes.at(-1)).toContain('"width":"100%"');
  });

  it('"Show more" lists the dialogs other than the one shown, so the latest dialog can be opened again', async () => {
    await configuredStack();
    const older = stack!.c2d.seedClient({ phone: PHONE, name: 'Ana', withDialog: 'closed', channelId: stack!.c2d.account().channels[1]?.id });
    const otherId = Number(older.dialog!.id);
    const { dialogId } = clientWithDialog();
    const parent = await openContact([PHONE]);
    const { app } = parent;
    await app.locator('#preview [data-action="close"]').waitFor();
    await app.locator('#show-more').click();
    const listedIds = () => app.locator('#more [data-dialog-id]').evaluateAll((nodes) => nodes.map((node) => Number(node.getAttribute('data-dialog-id'))));
    await expect.poll(listedIds).toEqual([otherId]);
    await app.locator(`#more [data-dialog-id="${otherId}"]`).click();
    await expect.poll(listedIds).toEqual([dialogId]);
    await app.locator(`#more [data-dialog-id="${dialogId}"]`).click();
    await expect.poll(() => app.locator('#preview [data-dialog-id]').first().getAttribute('data-dialog-id')).toBe(String(dialogId));
    await expect.poll(listedIds).toEqual([otherId]);
    expect(await app.locator('body').evaluate(() => document.activeElement?.id)).toBe(`dialog-${dialogId}-title`);
  });

  it('shows an unmapped user how to get mapped and no write controls, and the server refuses a forced write', async () => {
    await configuredStack();
    const { dialogId } = clientWithDialog();
    const unmapped = stack!.b24.seedUser({ name: 'Ulises', email: 'ulises@example.com' });
    const parent = await openContact([PHONE], { userId: unmapped });
    const { app } = parent;
    await app.locator('#preview [data-field="not-mapped"]').waitFor();
    expect(await app.locator('#preview [data-field="not-mapped"]').innerText()).toBe(
      "Ask a Bitrix24 administrator to map you to a Chat2Desk operator in the app's Operators section",
    );
    await app.locator('#history .c2d-msg').first().waitFor();
    expect(await app.locator('textarea, select, input[type="file"], [data-action]').count()).toBe(0);
    expect(await app.locator('#write-first-open').isHidden()).toBe(true);
    await shot(parent, 'unmapped');

    // The page's own token, forced through a POST from the page: 403 not_mapped, nothing sent.
    const forced = await app.locator('body').evaluate(async (_, id) => {
      const token = JSON.parse(document.getElementById('page-data')!.textContent!).token;
      const response = await fetch('/api/dialog-actions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ key: crypto.randomUUID(), action: 'send', dialogId: id, text: 'forced' }),
      });
      return { status: response.status, body: await response.json() };
    }, dialogId);
    expect(forced).toEqual({ status: 403, body: { error: expect.stringMatching(/^Ask a Bitrix24 administrator/), code: 'not_mapped' } });
    expect(sentMessages(stack!)).toHaveLength(0);

    // In the user's language.
    const russian = await openContact([PHONE], { userId: unmapped, lang: 'ru', width: 400 });
    await russian.app.locator('#preview [data-field="not-mapped"]').waitFor();
    expect(await russian.app.locator('#preview [data-field="not-mapped"]').innerText()).toMatch(/^Попросите администратора Битрикс24/);
    await shot(russian, 'unmapped-ru');
  });
});

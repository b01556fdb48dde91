import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TEMPLATE_REQUIRED_MESSAGE } from './fakes/chat2desk.js';
import { TestClock, eventuallyOnClock, noRetryWait } from './support/clock.js';
import { adminHeaders, eventually, installAndConfigure, putSettings, sentMessages, startStack, type Stack } from './support/stack.js';
import { bearer, pageToken, tabToken } from './support/viewer-tokens.js';

const PHONE_A = '79161234567';
const PHONE_B = '79167654321';
/** Chat2Desk operator 617 has Bitrix24 user 1's e-mail (admin@example.com): user 1 is mapped to it. */
const OPERATOR = 617;
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082', 'hex');

interface ActionStatus {
  key: string;
  state: 'queued' | 'running' | 'done' | 'failed';
  result?: Record<string, unknown>;
  error?: string;
}

describe('Dialog actions from the CRM tab and the workspace', () => {
  let stack: Stack;
  let clock: TestClock;
  let tokenA: string;
  let dialogA: number;
  let clientA: number;
  let dialogB: number;
  let keys = 0;

  beforeEach(async () => {
    clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    const a = stack.c2d.seedClient({ phone: PHONE_A, transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const b = stack.c2d.seedClient({ phone: PHONE_B, transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    // The client wrote: the dialog's messages name its client and channel (docs/protocols.md C4).
    stack.c2d.receiveMessage({ clientId: a.client.id as number, text: 'Hello' });
    stack.c2d.receiveMessage({ clientId: b.client.id as number, text: 'Hi' });
    dialogA = a.dialog!.id as number;
    clientA = a.client.id as number;
    dialogB = b.dialog!.id as number;
    tokenA = await tabToken(stack, { userId: 1, phones: [PHONE_A], clock });
    stack.c2d.resetCalls();
  });
  afterEach(() => stack.close());

  const newKey = () => `key-${Date.now()}-${++keys}`;
  const post = (body: Record<string, unknown>, token = tokenA, headers: Record<string, string> = {}) =>
    fetch(`${stack.server.url}/api/dialog-actions`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json', ...headers }), body: JSON.stringify(body) });
  const status = async (key: string, token = tokenA): Promise<ActionStatus> => {
    const response = await fetch(`${stack.server.url}/api/dialog-actions/${key}`, { headers: bearer(token) });
    expect(response.status).toBe(200);
    return (await response.json()) as ActionStatus;
  };
  const finished = (key: string, token = tokenA) =>
    eventuallyOnClock(
      () => stack.server,
      clock,
      async () => {
        const current = await status(key, token);
        return current.state === 'done' || current.state === 'failed' ? current : undefined;
      },
      15_000,
      `action ${key} finished`,
    );
  const act = async (body: Record<string, unknown>, token = tokenA): Promise<ActionStatus> => {
    const key = newKey();
    const response = await post({ key, ...body }, token);
    expect(response.status, JSON.stringify(await response.clone().json())).toBe(202);
    return finished(key, token);
  };
  const upload = async (bytes: Buffer, name: string, token = tokenA): Promise<string> => {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(bytes)]), name);
    const response = await fetch(`${stack.server.url}/api/files`, { method: 'POST', headers: bearer(token), body: form });
    expect(response.status).toBe(201);
    return ((await response.json()) as { id: string }).id;
  };
  const dialog = (id: number) => stack.c2d.account().dialogs.find((item) => item.id === id)!;

  it('sends a message as the mapped operator, and the event log shows who did what', async () => {
    const key = newKey();
    const response = await post({ key, action: 'send', dialogId: dialogA, text: 'Your order is ready' });
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ key, state: expect.stringMatching(/queued|running|done/) });
    const done = await finished(key);
    expect(done).toMatchObject({ state: 'done', result: { action: 'send', dialogId: dialogA, clientId: clientA } });
    const [message] = sentMessages(stack);
    expect(message?.body).toMatchObject({ client_id: clientA, text: 'Your order is ready', operator_id: OPERATOR, channel_id: 17404, transport: 'whatsapp' });
    expect(stack.c2d.account().messages.at(-1)).toMatchObject({ text: 'Your order is ready', operator_id: OPERATOR, type: 'to_client' });

    const log = await fetch(`${stack.server.url}/api/event-log?kind=dialog_action&phone=%2B${PHONE_A}`, { headers: adminHeaders(stack) });
    const { entries } = (await log.json()) as { entries: Array<Record<string, unknown>> };
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      kind: 'dialog_action',
      title: 'Message sent in the CRM tab by Bitrix24 user 1',
      status: 'done',
      phone: `+${PHONE_A}`,
      dialog: { id: dialogA },
      summary: `Message sent in dialog ${dialogA} as Chat2Desk operator ${OPERATOR}`,
    });
  });

  it('sends once when the same request is replayed, or posted twice at once (a double click)', async () => {
    const key = newKey();
    const body = { key, action: 'send', dialogId: dialogA, text: 'once' };
    const both = await Promise.all([post(body), post(body)]);
    expect(both.map((response) => response.status)).toEqual([202, 202]);
    await finished(key);
    const replay = await post(body);
    expect(replay.status).toBe(202);
    expect(await replay.json()).toMatchObject({ key, state: 'done' });
    expect(sentMessages(stack)).toHaveLength(1);
    expect(await stack.db.row("select count(*) as n from jobs where kind = 'dialog_action'")).toEqual({ n: 1 });
  });

  it('refuses another request under a key already used, with 409, and changes nothing', async () => {
    const key = newKey();
    expect((await post({ key, action: 'send', dialogId: dialogA, text: 'first' })).status).toBe(202);
    await finished(key);
    const other = await post({ key, action: 'send', dialogId: dialogA, text: 'second' });
    expect(other.status).toBe(409);
    expect(((await other.json()) as { error: string }).error).toMatch(/already used for another action/);
    expect(sentMessages(stack).map((call) => (call.body as { text: string }).text)).toEqual(['first']);
  });

  it('settles a send whose answer was lost instead of sending it again', async () => {
    const hold = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const key = newKey();
    expect((await post({ key, action: 'send', dialogId: dialogA, text: 'lost answer' })).status).toBe(202);
    await hold.arrived;
    hold.lose();
    const done = await finished(key);
    expect(done.state).toBe('done');
    const stored = stack.c2d.account().messages.filter((item) => item.text === 'lost answer');
    expect(stored).toHaveLength(1);
    expect(done.result?.messageIds).toEqual([stored[0]!.id]);
    expect(stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages')).toHaveLength(1);
  });

  for (const [chat2deskAtGiveUp, expected] of [
    ['answers', { state: 'done', result: { summary: expect.stringContaining('found after the answer was lost') } }],
    ['cannot be asked', { state: 'failed', error: expect.stringContaining('it may already have been sent') }],
  ] as const) {
    it(`settles at give-up a message whose answer was lost when Chat2Desk ${chat2deskAtGiveUp}, and never sends it again`, async () => {
      const hold = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
      const key = newKey();
      expect((await post({ key, action: 'send', dialogId: dialogA, text: 'lost, then given up' })).status).toBe(202);
      await hold.arrived;
      hold.lose();
      const job = async () => (await stack.db.row("select state, attempts from jobs where kind = 'dialog_action'")) as { state: string; attempts: number };
      await eventually(async () => (await job()).state === 'queued' && (await job()).attempts === 1, 10_000, 'the first attempt to end in doubt');
      // The next attempt comes after the action's 15 minutes: the job is given up, its message settled first.
      if (chat2deskAtGiveUp === 'cannot be asked') stack.c2d.failNext({ method: 'GET', path: '/messages' }, { status: 503, body: 'busy' }, 5);
      clock.advance(16 * 60_000);
      stack.server.worker.wake();
      // The tab's token lived 15 minutes too: the page renews it.
      expect(await finished(key, await tabToken(stack, { userId: 1, phones: [PHONE_A], clock }))).toMatchObject(expected);
      expect(stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages')).toHaveLength(1);
      expect(stack.c2d.account().messages.filter((item) => item.text === 'lost, then given up')).toHaveLength(1);
    });
  }

  it('refuses every write of a user without a Chat2Desk operator with 403 not_mapped; reads still work', async () => {
    const unmapped = await tabToken(stack, { userId: 7, phones: [PHONE_A], clock });
    for (const body of [
      { action: 'send', dialogId: dialogA, text: 'x' },
      { action: 'write_first', phone: PHONE_A, channelId: 17404, transport: 'whatsapp', text: 'x' },
      { action: 'tag', dialogId: dialogA, tagId: 1, target: 'client' },
      { action: 'untag', dialogId: dialogA, tagId: 1, target: 'client' },
      { action: 'close', dialogId: dialogA },
      { action: 'reopen', dialogId: dialogA },
      { action: 'assign', dialogId: dialogA, operatorId: OPERATOR },
    ]) {
      const response = await post({ key: newKey(), ...body }, unmapped);
      expect(response.status, body.action).toBe(403);
      expect(await response.json()).toMatchObject({ code: 'not_mapped', error: expect.stringContaining('map you to a Chat2Desk operator') });
    }
    const read = await fetch(`${stack.server.url}/api/dialog-actions/${newKey()}`, { headers: bearer(unmapped) });
    expect(read.status).toBe(404);
    expect(sentMessages(stack)).toHaveLength(0);
    expect(await stack.db.row("select count(*) as n from jobs where kind = 'dialog_action'")).toEqual({ n: 0 });
  });

  it("refuses a tab token for one record acting on another record's dialog or phone (404)", async () => {
    for (const body of [
      { action: 'send', dialogId: dialogB, text: 'x' },
      { action: 'close', dialogId: dialogB },
      { action: 'tag', dialogId: dialogB, tagId: 1, target: 'client' },
      { action: 'assign', dialogId: dialogB, operatorId: OPERATOR },
      { action: 'write_first', phone: PHONE_B, channelId: 17404, transport: 'whatsapp', text: 'x' },
      { action: 'send', dialogId: 999_999_999, text: 'x' },
    ]) {
      const response = await post({ key: newKey(), ...body });
      expect(response.status, JSON.stringify(body)).toBe(404);
    }
    expect(sentMessages(stack)).toHaveLength(0);
    expect(dialog(dialogB).state).toBe('open');
    // The workspace of an admin sees every dialog: the same action is taken there.
    const admin = await pageToken(stack, { userId: 1, admin: true, clock });
    expect((await act({ action: 'close', dialogId: dialogB }, admin)).state).toBe('done');
    expect(dialog(dialogB).state).toBe('closed');
  });

  it("lets a workspace user who is not an admin act only on their own operator's dialogs", async () => {
    const mine = await pageToken(stack, { userId: 1, admin: false, clock });
    // Nobody answers dialog A yet: it is not user 1's operator's.
    expect((await post({ key: newKey(), action: 'close', dialogId: dialogA }, mine)).status).toBe(404);
    await act({ action: 'assign', dialogId: dialogA, operatorId: OPERATOR });
    expect((await act({ action: 'close', dialogId: dialogA }, mine)).state).toBe('done');
    expect(dialog(dialogA).state).toBe('closed');
    expect((await post({ key: newKey(), action: 'close', dialogId: dialogB }, mine)).status).toBe(404);
    expect(dialog(dialogB).state).toBe('open');
  });

  it("does not let a workspace user who is not an admin write first into another operator's conversation", async () => {
    const mine = await pageToken(stack, { userId: 1, admin: false, clock });
    // Client A has a dialog, not user 1's operator's: writing first to its number would post into it.
    const intoOthers = await post({ key: newKey(), action: 'write_first', phone: PHONE_A, channelId: 17404, transport: 'whatsapp', text: 'Hello' }, mine);
    expect(intoOthers.status).toBe(404);
    expect(await intoOthers.json()).toEqual({ error: 'No such dialog here' });
    expect(sentMessages(stack)).toEqual([]);
    // A number nobody talks to yet, and one whose only dialog is the user's own, are theirs to write to.
    expect(await act({ action: 'write_first', phone: '79005550012', channelId: 17404, transport: 'whatsapp', text: 'New here' }, mine)).toMatchObject({ state: 'done' });
    await act({ action: 'assign', dialogId: dialogA, operatorId: OPERATOR });
    expect(await act({ action: 'write_first', phone: PHONE_A, channelId: 17404, transport: 'whatsapp', text: 'Mine now' }, mine)).toMatchObject({
      state: 'done',
      result: { dialogId: dialogA },
    });
  });

  it('tags and untags the client and the current request', async () => {
    const [tag] = stack.c2d.account().tags;
    const client = () => stack.c2d.account().clients.find((item) => item.id === clientA) as { tags: Array<{ id: number }> };
    const request = () => stack.c2d.account().requests.find((item) => item.id === dialog(dialogA).last_request_id)!;
    expect(await act({ action: 'tag', dialogId: dialogA, tagId: tag!.id, target: 'client' })).toMatchObject({ state: 'done' });
    expect(client().tags.map((item) => item.id)).toEqual([tag!.id]);
    expect(await act({ action: 'tag', dialogId: dialogA, tagId: tag!.id, target: 'request' })).toMatchObject({ state: 'done' });
    expect(request().tags.map((item) => item.id)).toEqual([tag!.id]);
    await act({ action: 'untag', dialogId: dialogA, tagId: tag!.id, target: 'client' });
    await act({ action: 'untag', dialogId: dialogA, tagId: tag!.id, target: 'request' });
    expect(client().tags).toEqual([]);
    expect(request().tags).toEqual([]);
    const unknown = await post({ key: newKey(), action: 'tag', dialogId: dialogA, tagId: 999_999, target: 'client' });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toBe('tagId: Chat2Desk has no tag 999999');
  });

  it('closes and reopens the dialog, and the cache shows each change at once', async () => {
    const directory = (await stack.server.directoryOf(stack.b24.memberId))!;
    expect((await directory.dialog(dialogA)).state).toBe('open');
    expect(await act({ action: 'close', dialogId: dialogA })).toMatchObject({ state: 'done', result: { summary: `Dialog ${dialogA} closed` } });
    expect(dialog(dialogA).state).toBe('closed');
    expect((await directory.dialog(dialogA)).state).toBe('closed');
    await act({ action: 'reopen', dialogId: dialogA });
    expect(dialog(dialogA).state).toBe('open');
    expect((await directory.dialog(dialogA)).state).toBe('open');
    const log = await fetch(`${stack.server.url}/api/event-log?kind=dialog_action`, { headers: adminHeaders(stack) });
    const { entries } = (await log.json()) as { entries: Array<{ title: string; status: string; dialog: { id: number } }> };
    expect(entries.map(({ title, status, dialog: { id } }) => ({ title, status, id }))).toEqual([
      { title: 'Dialog reopened in the CRM tab by Bitrix24 user 1', status: 'done', id: dialogA },
      { title: 'Dialog closed in the CRM tab by Bitrix24 user 1', status: 'done', id: dialogA },
    ]);
  });

  it('transfers the dialog to an existing operator, and names an unknown one', async () => {
    const other = stack.c2d.account().operators.find((item) => item.id !== OPERATOR && item.role !== 'deleted')!.id as number;
    expect(await act({ action: 'assign', dialogId: dialogA, operatorId: other })).toMatchObject({ state: 'done' });
    expect(dialog(dialogA).operator_id).toBe(other);
    const unknown = await post({ key: newKey(), action: 'assign', dialogId: dialogA, operatorId: 424242 });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toBe('operatorId: Chat2Desk has no operator 424242');
  });

  it('writes first with an attachment the fake Chat2Desk fetches by its link, which stops working when it expires', async () => {
    const phone = '79005550011';
    const token = await tabToken(stack, { userId: 1, phones: [phone], clock });
    const fileId = await upload(PNG, 'счёт.png', token);
    const done = await act({ action: 'write_first', phone, channelId: 17404, transport: 'whatsapp', text: 'Hello, here is your invoice', fileIds: [fileId] }, token);
    expect(done).toMatchObject({ state: 'done', result: { wroteFirst: true } });
    expect(stack.c2d.calls.find((call) => call.method === 'POST' && call.path === '/clients')?.body).toMatchObject({ phone, transport: 'whatsapp', channel_id: 17404 });
    const [message] = sentMessages(stack);
    const body = message?.body as { attachment: string; attachment_filename: string; text: string; operator_id: number };
    expect(body).toMatchObject({ text: 'Hello, here is your invoice', attachment_filename: 'счёт.png', operator_id: OPERATOR });
    expect(body.attachment.startsWith(`${stack.server.url}/files/`)).toBe(true);
    const [fetched] = stack.c2d.fetchedAttachments;
    expect(fetched).toMatchObject({ url: body.attachment, status: 200, contentType: 'image/png' });
    expect(fetched!.bytes.equals(PNG)).toBe(true);

    clock.advance(24 * 3600_000 + 1);
    expect(await stack.c2d.fetchAttachment(body.attachment)).toMatchObject({ status: 410 });
    // Its id is no use any more either.
    const again = await post(
      { key: newKey(), action: 'write_first', phone, channelId: 17404, transport: 'whatsapp', fileIds: [fileId] },
      await tabToken(stack, { userId: 1, phones: [phone], clock }),
    );
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toMatch(/^fileIds: No such file, or its link expired/);
  });

  it('sends several files as several messages, the text with the first, and takes only the user’s own files', async () => {
    const first = await upload(PNG, 'one.png');
    const second = await upload(Buffer.from('plain notes'), 'notes.txt');
    const done = await act({ action: 'send', dialogId: dialogA, text: 'Two files', fileIds: [first, second] });
    expect(done.result).toMatchObject({ messageIds: [expect.any(Number), expect.any(Number)] });
    expect(sentMessages(stack).map((call) => call.body)).toEqual([
      expect.objectContaining({ text: 'Two files', attachment_filename: 'one.png' }),
      expect.not.objectContaining({ text: expect.anything() }),
    ]);
    expect(stack.c2d.fetchedAttachments.map((item) => item.status)).toEqual([200, 200]);
    // Bitrix24 user 2, mapped to operator 311416, names user 1's file: as good as unknown.
    expect((await putSettings(stack, { operatorMap: { '311416': 2 } })).status).toBe(200);
    const someoneElses = await post({ key: newKey(), action: 'send', dialogId: dialogA, fileIds: [first] }, await pageToken(stack, { userId: 2, admin: true, clock }));
    expect(someoneElses.status).toBe(400);
    expect(((await someoneElses.json()) as { error: string }).error).toMatch(/^fileIds: No such file/);
    expect(sentMessages(stack)).toHaveLength(2);
  });

  it('refuses a file named twice in one action: one message per file, and a lost answer settled per message', async () => {
    const file = await upload(PNG, 'one.png');
    const twice = await post({ key: newKey(), action: 'send', dialogId: dialogA, fileIds: [file, file] });
    expect(twice.status).toBe(400);
    expect(await twice.json()).toEqual({ error: 'fileIds: name each file once' });
    expect(sentMessages(stack)).toEqual([]);
  });

  it('refuses a text with control characters or a broken surrogate, and keeps newlines, tabs and emoji', async () => {
    for (const text of ['Hi\u0000there', 'bell\u0007', 'escape \u001b[31mred', 'half an emoji \ud83d']) {
      const refused = await post({ key: newKey(), action: 'send', dialogId: dialogA, text });
      expect(refused.status, JSON.stringify(text)).toBe(400);
      expect(await refused.json()).toEqual({ error: 'text: no control characters or broken characters' });
    }
    expect(sentMessages(stack)).toEqual([]);
    expect(await act({ action: 'send', dialogId: dialogA, text: 'Line one\n\tline two 👍' })).toMatchObject({ state: 'done' });
    expect(sentMessages(stack).map((call) => (call.body as { text: string }).text)).toEqual(['Line one\n\tline two 👍']);
  });

  it('says in words a manager can act on that WhatsApp Business needs an approved template first', async () => {
    const phone = '79005550022';
    const token = await tabToken(stack, { userId: 1, phones: [phone], clock });
    const failed = await act({ action: 'write_first', phone, channelId: 17404, transport: 'wa_dialog', text: 'Hello' }, token);
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/only with a template WhatsApp approved: send the first message from Chat2Desk/);
    expect(failed.error).not.toContain(TEMPLATE_REQUIRED_MESSAGE);
    const log = await fetch(`${stack.server.url}/api/event-log?kind=dialog_action&status=failed`, { headers: adminHeaders(stack) });
    const { entries } = (await log.json()) as { entries: Array<{ error: { nextStep: string } }> };
    expect(entries[0]?.error.nextStep).toMatch(/approved WhatsApp template/);
  });

  it('answers a body that is JSON but not an object with a clear 400', async () => {
    for (const body of ['null', '[]', '"send"', '42']) {
      const response = await fetch(`${stack.server.url}/api/dialog-actions`, { method: 'POST', headers: bearer(tokenA, { 'content-type': 'application/json' }), body });
      expect(response.status, body).toBe(400);
      expect(await response.json()).toEqual({ error: 'Send the action as a JSON object' });
    }
  });

  it('refuses an expired token with 401 renew, a cross-site write with 403, and a bad field with 400 naming it', async () => {
    const crossSite = await post({ key: newKey(), action: 'close', dialogId: dialogA }, tokenA, { origin: 'https://evil.example' });
    expect(crossSite.status).toBe(403);
    const badKey = await post({ key: 'short', action: 'close', dialogId: dialogA });
    expect(badKey.status).toBe(400);
    expect(((await badKey.json()) as { error: string }).error).toMatch(/^key must be/);
    const badDialog = await post({ key: newKey(), action: 'close', dialogId: 'abc' });
    expect(((await badDialog.json()) as { error: string }).error).toBe('dialogId must be a Chat2Desk dialog id');
    const badAction = await post({ key: newKey(), action: 'delete', dialogId: dialogA });
    expect(((await badAction.json()) as { error: string }).error).toMatch(/^action must be one of send, write_first/);
    const empty = await post({ key: newKey(), action: 'send', dialogId: dialogA, text: '  ' });
    expect(((await empty.json()) as { error: string }).error).toBe('text: write a message or attach a file');
    clock.advance(16 * 60_000);
    const expired = await post({ key: newKey(), action: 'close', dialogId: dialogA });
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ renew: true });
    expect(dialog(dialogA).state).toBe('open');
    expect(await stack.db.row("select count(*) as n from jobs where kind = 'dialog_action'")).toEqual({ n: 0 });
  });
});

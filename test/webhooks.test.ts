import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { webhookSignature } from '../src/chat2desk/webhooks.js';
import type { DialogDirectory } from '../src/chat2desk/directory.js';
import { TestClock } from './support/clock.js';
import { install, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

type Row = Record<string, unknown>;

describe('Chat2Desk webhook and the dialog cache', () => {
  let stack: Stack;
  let directory: DialogDirectory;
  let client: Row;
  let dialog: Row;
  let clock: TestClock;

  beforeEach(async () => {
    clock = new TestClock();
    stack = await startStack({ clock });
    const seeded = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    client = seeded.client;
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Hello, is my order ready?' });
    dialog = stack.c2d.account().dialogs.find((item) => item.id === seeded.dialog!.id)!;
    await installAndConfigure(stack);
    directory = (await stack.server.directoryOf(stack.b24.memberId))!;
  });
  afterEach(() => stack.close());

  const webhookUrl = () => String(stack.c2d.account().webhooks[0]!.url);
  const apiCalls = () => stack.c2d.calls.length;

  it('registers one webhook per portal on the first settings save, under an unguessable URL', async () => {
    const hooks = stack.c2d.account().webhooks;
    expect(hooks).toHaveLength(1);
    expect(webhookUrl()).toMatch(new RegExp(`^${stack.server.url}/chat2desk/webhook/[A-Za-z0-9_-]{32}$`));
    expect(hooks[0]!.events).toEqual(expect.arrayContaining(['inbox', 'outbox', 'close_dialog', 'dialog_transferred', 'add_tag_to_client', 'client_updated']));
    expect((await putSettings(stack, { defaultCountry: 'RU' })).status).toBe(200);
    expect(stack.c2d.account().webhooks).toHaveLength(1);
  });

  it('serves repeated lookups from the cache filled after the settings save', async () => {
    expect((await directory.clientsByPhone('79161234567')).map((item) => item.id)).toEqual([client.id]);
    expect((await directory.dialogsOfClient(client.id as number))[0]).toMatchObject({ id: dialog.id, state: 'open', lastMessageText: 'Hello, is my order ready?' });
    expect(apiCalls()).toBe(0);
  });

  it('serves a cached fact while it is younger than cacheTtlSeconds by the clock, then asks Chat2Desk again', async () => {
    const dialogReads = () => stack.c2d.calls.filter((call) => call.path === `/dialogs/${String(dialog.id)}`);
    // Filled by the sync after the settings save, with the default TTL of 900 s.
    await directory.dialog(dialog.id as number);
    clock.advance(880_000);
    await directory.dialog(dialog.id as number);
    expect(dialogReads()).toHaveLength(0);
    clock.advance(25_000);
    expect((await directory.dialog(dialog.id as number)).id).toBe(dialog.id);
    expect(dialogReads()).toHaveLength(1);
  });

  it('stores a delivery once: Chat2Desk retries are acknowledged as duplicates', async () => {
    const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'one more' });
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
    const rows = (await stack.db.row("select count(*) as n from webhook_deliveries where hook_type = 'inbox'")) as { n: number };
    expect(rows.n).toBe(1);
    const second = await fetch(webhookUrl(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(webhook) });
    expect(await second.json()).toEqual({ status: 'duplicate' });
  });

  it('keeps the webhook secret and the API token out of the log', async () => {
    const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'log check' });
    await stack.c2d.deliverWebhook(webhook);
    await fetch(webhookUrl(), { method: 'POST', body: '{"hook_type": 1' });
    await stack.server.chat2deskWebhooks.checkAll();
    const secret = webhookUrl().split('/').at(-1)!;
    const logText = stack.logs.join('');
    expect(logText).toContain('chat2desk webhook registered');
    expect(logText).not.toContain(secret);
    expect(logText).not.toContain(stack.c2d.token);
  });

  it('refuses forged deliveries and changes nothing', async () => {
    await directory.dialogsOfClient(client.id as number);
    const body = JSON.stringify({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id, event_time: '2026-11-24T10:00:00Z' });
    const wrongPath = await fetch(`${stack.server.url}/chat2desk/webhook/${'A'.repeat(32)}`, { method: 'POST', body });
    expect(wrongPath.status).toBe(404);
    const badSignature = await fetch(webhookUrl(), { method: 'POST', body, headers: { 'x-signature': 'f'.repeat(64), 'x-timestamp': '1743681006' } });
    expect(badSignature.status).toBe(401);
    const signedWithOtherToken = await fetch(webhookUrl(), {
      method: 'POST',
      body,
      headers: { 'x-signature': webhookSignature('another-token', body, '1743681006'), 'x-timestamp': '1743681006' },
    });
    expect(signedWithOtherToken.status).toBe(401);
    expect(await stack.db.row('select count(*) as n from webhook_deliveries')).toEqual({ n: 0 });
    stack.c2d.resetCalls();
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('open');
    expect(apiCalls()).toBe(0);
    const notJson = await fetch(webhookUrl(), { method: 'POST', body: 'nope' });
    expect(notJson.status).toBe(400);
  });

  it('accepts the vendor signature computed over the raw body and timestamp', async () => {
    const body = JSON.stringify({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id, event_time: '2026-11-24T10:00:00Z' });
    const response = await fetch(webhookUrl(), {
      method: 'POST',
      body,
      headers: { 'x-signature': webhookSignature(stack.c2d.token, body, '1743681006'), 'x-timestamp': '1743681006' },
    });
    expect(response.status).toBe(200);
  });

  describe('a read after a delivery never returns the old value', () => {
    const dialogNow = () => directory.dialogsOfClient(client.id as number).then((list) => list[0]!);

    it('inbox: the new last message', async () => {
      expect((await dialogNow()).lastMessageText).toBe('Hello, is my order ready?');
      const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Any news?' });
      expect((await dialogNow()).lastMessageText).toBe('Hello, is my order ready?'); // cached until told
      await stack.c2d.deliverWebhook(webhook);
      expect((await dialogNow()).lastMessageText).toBe('Any news?');
    });

    it('inbox without a dialog_id (request not yet assigned): the dialog the client has', async () => {
      expect((await directory.dialog(dialog.id as number)).lastMessageText).toBe('Hello, is my order ready?');
      const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Anyone there?' });
      await stack.c2d.deliverWebhook({ ...webhook, dialog_id: null, operator_id: null });
      expect((await directory.dialog(dialog.id as number)).lastMessageText).toBe('Anyone there?');
    });

    it('a repeated delivery key still applies: events without a time must not swallow a change', async () => {
      await dialogNow();
      await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id });
      const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'reopened' });
      await stack.c2d.deliverWebhook(webhook);
      expect((await dialogNow()).lastMessageText).toBe('reopened');
      dialog.state = 'closed';
      expect(await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id })).toEqual([200]);
      expect((await dialogNow()).state).toBe('closed');
    });

    it('outbox: an operator reply', async () => {
      await dialogNow();
      const sent = await fetch(`${stack.c2d.url}/messages`, {
        method: 'POST',
        headers: { authorization: stack.c2d.token, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: client.id, text: 'It ships today' }),
      });
      const messageId = ((await sent.json()) as { data: { message_id: number } }).data.message_id;
      await stack.c2d.deliverWebhook(stack.c2d.messageWebhookBody(messageId));
      expect((await dialogNow()).lastMessageText).toBe('It ships today');
    });

    it('close_dialog: the state', async () => {
      await dialogNow();
      dialog.state = 'closed';
      await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id, event_time: '2026-11-24T10:00:00Z' });
      expect((await dialogNow()).state).toBe('closed');
    });

    it('close_dialog without client_id still drops the dialog from its client list', async () => {
      await dialogNow();
      dialog.state = 'closed';
      await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, event_time: '2026-11-24T10:00:01Z' });
      expect((await dialogNow()).state).toBe('closed');
    });

    it('dialog_transferred: the operator', async () => {
      expect((await directory.dialog(dialog.id as number)).operatorId).toBe(dialog.operator_id ?? null);
      dialog.operator_id = 311416;
      await stack.c2d.deliverWebhook({ hook_type: 'dialog_transferred', dialog_id: dialog.id, client_id: client.id, operator_id: 311416, event_time: '2026-11-24T10:00:02Z' });
      expect((await directory.dialog(dialog.id as number)).operatorId).toBe(311416);
      expect((await dialogNow()).operatorId).toBe(311416);
    });

    it('add_tag_to_client and delete_tag_from_client: the tags', async () => {
      expect((await directory.client(client.id as number)).tags).toEqual([]);
      const tag = stack.c2d.account().tags[0]!;
      (client.tags as unknown[]).push(tag);
      await stack.c2d.deliverWebhook({ hook_type: 'add_tag_to_client', client_id: client.id, tag_id: tag.id, event_time: '2026-11-24T10:00:03Z' });
      expect((await directory.client(client.id as number)).tags).toEqual([{ id: tag.id, label: tag.label }]);
      (client.tags as unknown[]).length = 0;
      await stack.c2d.deliverWebhook({ hook_type: 'delete_tag_from_client', client_id: client.id, tag_id: tag.id, event_time: '2026-11-24T10:00:04Z' });
      expect((await directory.client(client.id as number)).tags).toEqual([]);
    });

    it('client_updated: the name, and a changed phone', async () => {
      expect((await directory.clientsByPhone('79161234567'))[0]?.assignedName).toBe(client.assigned_name ?? null);
      client.assigned_name = 'Ivan Petrov';
      client.phone = '79160000001';
      await stack.c2d.deliverWebhook({ hook_type: 'client_updated', client_id: client.id, event_time: '2026-11-24T10:00:05Z' });
      expect(await directory.clientsByPhone('79161234567')).toEqual([]);
      expect((await directory.clientsByPhone('79160000001'))[0]).toMatchObject({ id: client.id, assignedName: 'Ivan Petrov' });
    });

    it('new_client: a number that had no client now has one', async () => {
      expect(await directory.clientsByPhone('79169999999')).toEqual([]);
      const { message } = stack.c2d.receiveMessage({ phone: '79169999999', text: 'Hi, new here' });
      await stack.c2d.deliverWebhook({
        hook_type: 'new_client',
        client_id: message.client_id,
        client: { id: message.client_id, phone: '79169999999' },
        event_time: '2026-11-24T10:00:06Z',
      });
      expect((await directory.clientsByPhone('79169999999')).map((item) => item.id)).toEqual([message.client_id]);
    });

    it('new_request: a new dialog of the client', async () => {
      await dialogNow();
      dialog.state = 'closed';
      const { message } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Me again' });
      await stack.c2d.deliverWebhook({
        hook_type: 'new_request',
        request_id: message.request_id,
        client_id: client.id,
        dialog_id: message.dialog_id,
        event_time: '2026-11-24T10:00:07Z',
      });
      const latest = await dialogNow();
      expect(latest.lastMessageText).toBe('Me again');
    });

    it('a lookup in flight also replays a delivery whose key was seen before', async () => {
      await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id });
      // The lookup starts after the first delivery's stamp, so only the repeat's new stamp can make it replay.
      const { stamped } = (await stack.db.row('select max(received_at) as stamped from webhook_deliveries')) as { stamped: number };
      clock.advance(Math.max(1, stamped - clock.now() + 1));
      const answered = stack.c2d.holdNext({ method: 'GET', path: new RegExp(`/dialogs/${String(dialog.id)}$`) });
      const racing = directory.dialog(dialog.id as number);
      await answered.arrived; // Chat2Desk has answered "open"; the answer is on its way
      dialog.state = 'closed';
      expect(await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id })).toEqual([200]);
      answered.release();
      expect((await racing).state).toBe('open');
      expect((await directory.dialog(dialog.id as number)).state).toBe('closed');
    });

    it('a lookup that was in flight when the delivery came does not store the old value', async () => {
      // Make the dialog a cache miss first, so the read below goes to Chat2Desk.
      await stack.c2d.deliverWebhook({ hook_type: 'dialog_transferred', dialog_id: dialog.id, client_id: client.id, operator_id: 617, event_time: '2026-11-24T09:59:00Z' });
      stack.c2d.resetCalls();
      const answered = stack.c2d.holdNext({ method: 'GET', path: new RegExp(`/dialogs/${String(dialog.id)}$`) });
      const racing = directory.dialog(dialog.id as number);
      await answered.arrived; // Chat2Desk has answered "open"; the answer is on its way
      dialog.state = 'closed';
      await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: client.id, event_time: '2026-11-24T10:00:08Z' });
      answered.release();
      expect((await racing).state).toBe('open'); // Chat2Desk answered before the change
      expect(stack.c2d.calls.filter((call) => call.path === `/dialogs/${String(dialog.id)}`)).toHaveLength(1);
      expect((await directory.dialog(dialog.id as number)).state).toBe('closed');
    });
  });

  it('notices a disabled webhook, re-enables it and reconciles what changed during the gap', async () => {
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('open');
    const hook = stack.c2d.account().webhooks[0]!;
    stack.c2d.disableWebhook(hook.id as number);
    // Changes Chat2Desk could not deliver while the webhook was off:
    dialog.state = 'closed';
    expect(await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, event_time: '2026-11-24T11:00:00Z' })).toEqual([]);
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('open');

    await stack.server.chat2deskWebhooks.checkAll();
    expect(stack.c2d.account().webhooks[0]!.status).toBe('enable');
    expect(stack.c2d.account().webhooks).toHaveLength(1);
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('closed');
  });

  it('reconciles when Chat2Desk reports deliveries it gave up on, though the webhook stayed enabled', async () => {
    await stack.server.chat2deskWebhooks.checkAll(); // a first check: nothing missed so far
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('open');
    dialog.state = 'closed';
    const hook = stack.c2d.account().webhooks[0]!;
    (hook.errors as unknown[]).push({ text: 'Timeout', created_at: Math.floor(Date.now() / 1000) + 1 });
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('open');
    await stack.server.chat2deskWebhooks.checkAll();
    expect((await directory.dialogsOfClient(client.id as number))[0]?.state).toBe('closed');
  });

  it('re-creates the webhook when it was deleted in Chat2Desk', async () => {
    stack.c2d.account().webhooks.length = 0;
    await stack.server.chat2deskWebhooks.checkAll();
    expect(stack.c2d.account().webhooks).toHaveLength(1);
    expect(await stack.c2d.deliverWebhook({ hook_type: 'close_dialog', dialog_id: dialog.id, event_time: '2026-11-24T12:00:00Z' })).toEqual([200]);
  });

  it('finds a Telegram client by the real number it keeps in client_phone', async () => {
    const telegram = { ...client, id: 17349999, phone: '[tg] 807892', client_phone: '79165550000', name: 'Peter', tags: [], channels: [{ id: 17404, transports: ['telegram'] }] };
    stack.c2d.account().clients.push(telegram);
    expect((await directory.clientsByPhone('79165550000')).map((item) => item.id)).toEqual([17349999]);
    expect(stack.c2d.calls.filter((call) => call.path === '/clients').map((call) => Object.keys(call.query).filter((key) => key !== 'limit'))).toEqual([
      ['phone'],
      ['client_phone'],
    ]);
  });

  it('lists operators, channels and tags in the settings, with the mapping suggested by e-mail', async () => {
    const response = await fetch(`${stack.server.url}/api/settings`, {
      headers: { authorization: `Bearer ${stack.b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId },
    });
    const view = (await response.json()) as Record<string, unknown>;
    expect((view.operators as Row[]).map((operator) => operator.id)).toEqual([617, 311416, 313753]);
    expect((view.tags as Row[]).map((tag) => tag.id)).toEqual(stack.c2d.account().tags.map((tag) => tag.id));
    expect((view.channels as Row[]).map((channel) => channel.id)).toEqual([17404, 126]);
    expect(view.suggestedOperatorMap).toEqual({ 617: 1, 311416: 2 });
    expect(view.webhook).toBeUndefined();
    expect((await putSettings(stack, { operatorMap: { 311416: 5 }, cacheTtlSeconds: 60 })).status).toBe(200);
    const saved = (await (
      await fetch(`${stack.server.url}/api/settings`, { headers: { authorization: `Bearer ${stack.b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId } })
    ).json()) as Record<string, unknown>;
    expect(saved).toMatchObject({ operatorMap: { 311416: 5 }, cacheTtlSeconds: 60, suggestedOperatorMap: { 617: 1 } });
  });
});

describe('webhook registration over time', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack({ c2d: { tokens: ['c2d-first-account', 'c2d-second-account'] } });
  });
  afterEach(() => stack.close());

  it('retries a registration that failed at the settings save on the next check', async () => {
    stack.c2d.failNext({ method: 'POST', path: '/webhooks' }, { status: 500, body: { status: 'error', message: 'Internal error' } }, 1);
    await installAndConfigure(stack);
    expect(stack.c2d.account().webhooks).toHaveLength(0);
    await stack.server.chat2deskWebhooks.checkAll();
    expect(stack.c2d.account().webhooks).toHaveLength(1);
  });

  it('moves the webhook when the admin switches to another Chat2Desk account, and keeps it when the same token is saved again', async () => {
    await installAndConfigure(stack);
    expect(stack.c2d.account('c2d-first-account').webhooks).toHaveLength(1);
    const firstUrl = stack.c2d.account('c2d-first-account').webhooks[0]!.url;
    expect((await putSettings(stack, { chat2deskApiToken: 'c2d-first-account' })).status).toBe(200);
    expect(stack.c2d.account('c2d-first-account').webhooks.map((hook) => hook.url)).toEqual([firstUrl]);

    expect((await putSettings(stack, { chat2deskApiToken: 'c2d-second-account' })).status).toBe(200);
    await stack.server.idle();
    expect(stack.c2d.account('c2d-first-account').webhooks).toHaveLength(0);
    expect(stack.c2d.account('c2d-second-account').webhooks).toHaveLength(1);
  });
});

describe('Chat2Desk webhook registration when first saves race', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await install(stack);
  });
  afterEach(() => stack.close());

  it('registers one webhook when five first saves of a new token run at once, and it is the one that works', async () => {
    const { client } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const answers = await Promise.all(Array.from({ length: 5 }, () => putSettings(stack, { chat2deskApiToken: stack.c2d.token })));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    const views = (await Promise.all(answers.map((answer) => answer.json()))) as Array<{ webhook?: unknown }>;
    expect(views.map((view) => view.webhook)).toEqual(Array(5).fill({ ok: true }));
    await stack.server.idle();

    const hooks = stack.c2d.account().webhooks;
    expect(hooks).toHaveLength(1);
    const stored = await stack.db.rows('select webhook_id, status from c2d_webhooks');
    expect(stored).toEqual([{ webhook_id: hooks[0]!.id, status: 'enable' }]);
    const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'reaches us' });
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
  });
});

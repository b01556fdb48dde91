/**
 * Tests of the Chat2Desk fake itself, over real HTTP. The expected shapes are the example bodies in
 * test/fixtures/protocol-examples/chat2desk/ (key lists inlined below; a drift check compares them
 * with the files).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  SIGNATURE_HEADER,
  TEMPLATE_REQUIRED_MESSAGE,
  TIMESTAMP_HEADER,
  computeWebhookSignature,
  signWebhook,
  startFakeChat2Desk,
  webhookSigningKey,
  type FakeChat2Desk,
} from './chat2desk.js';

const EXAMPLES_DIR = fileURLToPath(new URL('../fixtures/protocol-examples/chat2desk/', import.meta.url));

// Key sets of the example bodies' `data` objects.
const KEYS = {
  client: [
    'id',
    'name',
    'username',
    'comment',
    'assigned_name',
    'phone',
    'client_phone',
    'avatar',
    'region_id',
    'country_id',
    'first_client_message',
    'last_client_message',
    'extra_comment_1',
    'extra_comment_2',
    'extra_comment_3',
    'custom_fields',
    'client_external_id',
    'external_id',
    'external_ids',
    'channels',
    'tags',
  ],
  dialog: ['id', 'state', 'begin', 'end', 'operator_id', 'last_request_id', 'messages', 'last_message'],
  dialogLastMessage: [
    'id',
    'text',
    'type',
    'created',
    'coordinates',
    'transport',
    'read',
    'pdf',
    'remote_id',
    'recipient_status',
    'dialog_id',
    'operator_id',
    'channel_id',
    'attachments',
    'photo',
    'video',
    'audio',
    'client_id',
    'request_id',
    'extra_data',
  ],
  // §2 GET /messages/{id} field list + external_id (our assumption).
  message: [
    'id',
    'text',
    'type',
    'transport',
    'read',
    'created',
    'client_id',
    'operator_id',
    'channel_id',
    'dialog_id',
    'request_id',
    'attachments',
    'photo',
    'video',
    'audio',
    'pdf',
    'coordinates',
    'remote_id',
    'recipient_status',
    'ai_tips',
    'is_new',
    'extra_data',
    'status',
    'external_id',
  ],
  postMessage: ['message_id', 'channel_id', 'operator_id', 'transport', 'type', 'client_id', 'dialog_id', 'request_id'],
  operator: [
    'id',
    'email',
    'phone',
    'role',
    'access_right_id',
    'online',
    'offline_type',
    'avatar',
    'opened_dialogs',
    'first_name',
    'last_name',
    'external_id',
    'last_visit',
    'status_id',
    'two_factor',
    'status',
    'access_right_name',
  ],
  tag: ['id', 'group_id', 'group_name', 'label', 'description'],
  channel: ['id', 'name', 'phone', 'transports'],
  webhook: ['id', 'name', 'url', 'events', 'status', 'errors', 'source', 'channels'],
  apiInfo: ['mode', 'hook', 'chat_close_web_hook', 'current_version', 'requests_this_month', 'channels', 'company_name'],
  requestMessage: [
    'id',
    'text',
    'video',
    'photo',
    'audio',
    'pdf',
    'coordinates',
    'transport',
    'type',
    'read',
    'created',
    'clientID',
    'operatorID',
    'channelID',
    'companyID',
    'dialogID',
    'gateway_status',
    'extra_data',
  ],
  inboxWebhook: [
    'message_id',
    'type',
    'text',
    'transport',
    'client_id',
    'operator_id',
    'dialog_id',
    'channel_id',
    'photo',
    'coordinates',
    'audio',
    'pdf',
    'client',
    'hook_type',
    'request_id',
    'attachments',
    'is_new_request',
    'is_new_client',
    'insta_comment',
    'extra_data',
    'is_new',
    'event_time',
  ],
};
const sorted = (keys: string[]) => [...keys].sort();
const keysOf = (o: unknown) => sorted(Object.keys(o as object));
const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d UTC$/;

type Reply = { status: number; body: any; text: string; headers: Headers };

async function call(f: FakeChat2Desk, method: string, path: string, body?: unknown, token: string | null = f.token): Promise<Reply> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = token;
  const res = await fetch(f.url + path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}

const get = (f: FakeChat2Desk, path: string, token?: string | null) => call(f, 'GET', path, undefined, token);
const post = (f: FakeChat2Desk, path: string, body: unknown) => call(f, 'POST', path, body);
const put = (f: FakeChat2Desk, path: string, body: unknown) => call(f, 'PUT', path, body);

let fake: FakeChat2Desk;
beforeEach(async () => {
  fake = await startFakeChat2Desk();
});
afterEach(async () => {
  await fake.close();
});

async function createClient(phone = '79161234567', extra: Record<string, unknown> = {}) {
  const r = await post(fake, '/clients', { phone, transport: 'whatsapp', channel_id: 17404, ...extra });
  expect(r.status).toBe(200);
  return r.body.data as Record<string, any>;
}

describe('envelope, auth, routing', () => {
  it('uses the raw token header; missing or Bearer-prefixed tokens get 401 error-unauthorized.json', async () => {
    const expected = { status: 'error', message: 'Token is not correct' };
    for (const token of [null, `Bearer ${fake.token}`, 'wrong']) {
      const r = await get(fake, '/channels', token);
      expect(r.status).toBe(401);
      expect(r.body).toEqual(expected);
    }
    expect((await get(fake, '/channels')).status).toBe(200);
    expect(fake.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  });

  it('unknown path → 404 Page not found; bad JSON → 400 error envelope', async () => {
    expect(await get(fake, '/nope')).toMatchObject({ status: 404, body: { status: 'error', message: 'Page not found' } });
    const bad = await call(fake, 'POST', '/clients', '{"phone":');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ status: 'error', message: expect.any(String) });
  });

  it('GET /companies/api_info has the example shape and counts real calls', async () => {
    await get(fake, '/channels');
    await get(fake, '/channels', 'wrong'); // not authenticated: not counted
    const r = await get(fake, '/companies/api_info');
    expect(keysOf(r.body.data)).toEqual(sorted(KEYS.apiInfo));
    expect(r.body).toMatchObject({ status: 'success', data: { requests_this_month: 2, channels: 2, mode: 'full' } });
  });

  it('records every call', async () => {
    await post(fake, '/clients?x=1', { phone: '79161234567', transport: 'whatsapp' });
    await get(fake, '/channels', 'bad');
    expect(fake.calls).toMatchObject([
      { method: 'POST', path: '/clients', query: { x: '1' }, body: { phone: '79161234567' }, token: fake.token, status: 200 },
      { method: 'GET', path: '/channels', token: 'bad', status: 401 },
    ]);
    expect(fake.calls[0]!.at).toBeGreaterThan(0);
    fake.resetCalls();
    expect(fake.calls).toHaveLength(0);
  });

  it('each token is its own company with its own state', async () => {
    const multi = await startFakeChat2Desk({ tokens: ['a', 'b'] });
    try {
      const created = await call(multi, 'POST', '/clients', { phone: '79161234567', transport: 'whatsapp' }, 'a');
      expect(created.status).toBe(200);
      const id = created.body.data.id;
      expect((await call(multi, 'GET', `/clients/${id}`, undefined, 'b')).status).toBe(404);
      expect(multi.account('a').clients).toHaveLength(1);
      expect(multi.account('b').clients).toHaveLength(0);
      // §5: another company's client "does not belong".
      const tag = await call(multi, 'POST', '/tags/assign_to', { tag_ids: [996], assignee_type: 'client', assignee_id: id }, 'b');
      expect(tag.body.status).toBe('error');
      expect(JSON.stringify(tag.body)).toContain('client does not belong');
    } finally {
      await multi.close();
    }
  });
});

describe('paging', () => {
  it('default 20, max 200, meta echoes limit and offset', async () => {
    for (let i = 0; i < 25; i++) fake.seedClient({ phone: `7916000${String(i).padStart(4, '0')}` });
    const first = await get(fake, '/clients');
    expect(first.body.meta).toEqual({ total: 25, limit: 20, offset: 0 });
    expect(first.body.data).toHaveLength(20);
    const second = await get(fake, '/clients?limit=10&offset=20');
    expect(second.body.meta).toEqual({ total: 25, limit: 10, offset: 20 });
    expect(second.body.data).toHaveLength(5);
    expect((await get(fake, '/tags?limit=1000')).body.meta.limit).toBe(200);
    expect((await get(fake, '/clients?limit=abc')).body.status).toBe('error');
    const desc = await get(fake, '/clients?order=desc&limit=1');
    expect(desc.body.data[0].phone).toBe('79160000024');
  });
});

describe('channels, transports, operators, tags', () => {
  it('channels match get-channels-response.json', async () => {
    const r = await get(fake, '/channels?limit=100');
    expect(r.body).toEqual({
      data: [
        { id: 17404, name: 'Sales WhatsApp', phone: '79160000000', transports: ['whatsapp', 'wa_dialog'] },
        { id: 126, name: 'Site', phone: '', transports: ['widget'] },
      ],
      meta: { total: 2, limit: 100, offset: 0 },
      status: 'success',
    });
    expect((await get(fake, '/channels/126')).body.data.name).toBe('Site');
    expect((await get(fake, '/channels/1')).body.status).toBe('error');
  });

  it('GET /help/transports lists transport strings', async () => {
    const r = await get(fake, '/help/transports');
    expect(r.body.status).toBe('success');
    expect(r.body.data).toEqual(expect.arrayContaining(['whatsapp', 'wa_dialog', 'telegram', 'widget']));
  });

  it('operators are the example rows with distinct emails; filters email and online', async () => {
    const all = await get(fake, '/operators');
    expect(all.body.meta).toEqual({ total: 3, limit: 20, offset: 0 });
    for (const op of all.body.data) expect(keysOf(op)).toEqual(sorted(KEYS.operator));
    expect(all.body.data.map((o: any) => [o.id, o.email, o.role])).toEqual([
      [617, 'admin@example.com', 'admin'],
      [311416, 'manager@example.com', 'operator'],
      [313753, 'deleted@example.com', 'deleted'],
    ]);
    expect((await get(fake, '/operators?email=manager@example.com')).body.data.map((o: any) => o.id)).toEqual([311416]);
    expect((await get(fake, '/operators?online=0')).body.data.map((o: any) => o.id)).toEqual([313753]);
  });

  it('tags match get-tags-response.json; /tags/{id}', async () => {
    const r = await get(fake, '/tags?limit=200');
    expect(r.body.meta).toEqual({ total: 2, limit: 200, offset: 0 });
    expect(r.body.data[0]).toEqual({ id: 996, group_id: 313, group_name: 'Язык клиента', label: 'R', description: 'Русский язык' });
    for (const t of r.body.data) expect(keysOf(t)).toEqual(sorted(KEYS.tag));
    expect((await get(fake, '/tags/2960')).body.data.label).toBe('Т');
    expect((await get(fake, '/tags/1')).status).toBe(404);
  });

  it('assign_to / delete_from on clients and requests, with the documented errors', async () => {
    const client = await createClient();
    const assign = await post(fake, '/tags/assign_to', { tag_ids: [996, 2960], assignee_type: 'client', assignee_id: client.id });
    expect(assign.body.status).toBe('success');
    const got = await get(fake, `/clients/${client.id}`);
    expect(got.body.data.tags.map((t: any) => t.id)).toEqual([996, 2960]);
    expect(keysOf(got.body.data.tags[0])).toEqual(sorted(KEYS.tag));
    expect((await get(fake, '/clients?tags=2960')).body.data.map((c: any) => c.id)).toEqual([client.id]);

    const del = await call(fake, 'DELETE', '/tags/996/delete_from', { client_id: client.id });
    expect(del.body.status).toBe('success');
    expect(fake.account().clients[0]!.tags).toEqual([expect.objectContaining({ id: 2960 })]);

    const noTag = await post(fake, '/tags/assign_to', { tag_ids: [1], assignee_type: 'client', assignee_id: client.id });
    expect(noTag.body.status).toBe('error');
    expect(JSON.stringify(noTag.body)).toContain('tag does not exist');
    const noClient = await post(fake, '/tags/assign_to', { tag_ids: [996], assignee_type: 'client', assignee_id: 5 });
    expect(JSON.stringify(noClient.body)).toContain('client not found');
    const dialogType = await post(fake, '/tags/assign_to', { tag_ids: [996], assignee_type: 'dialog', assignee_id: 5 });
    expect(dialogType.body.status).toBe('error');

    const sent = await post(fake, '/messages', { client_id: client.id, text: 'hi' });
    const requestId = sent.body.data.request_id;
    expect((await post(fake, '/tags/assign_to', { tag_ids: [996], assignee_type: 'request', assignee_id: requestId })).body.status).toBe('success');
    expect(
      fake
        .account()
        .requests.find((r) => r.id === requestId)!
        .tags.map((t) => t.id),
    ).toEqual([996]);
    expect((await call(fake, 'DELETE', '/tags/996/delete_from', { request_id: requestId })).body.status).toBe('success');
    expect(fake.account().requests.find((r) => r.id === requestId)!.tags).toEqual([]);
  });

  it('a tag added through the API gives the add_tag_to_client / add_tag_to_request event to deliver, once per new tag', async () => {
    const client = await createClient();
    fake.tagEvents.length = 0;
    await post(fake, '/tags/assign_to', { tag_ids: [996], assignee_type: 'client', assignee_id: client.id });
    await post(fake, '/tags/assign_to', { tag_ids: [996], assignee_type: 'client', assignee_id: client.id });
    const sent = await post(fake, '/messages', { client_id: client.id, text: 'hi' });
    const requestId = sent.body.data.request_id;
    await post(fake, '/tags/assign_to', { tag_ids: [2960], assignee_type: 'request', assignee_id: requestId });
    expect(fake.tagEvents).toEqual([
      { hook_type: 'add_tag_to_client', client_id: client.id, tag_id: 996, event_time: expect.any(String) },
      { hook_type: 'add_tag_to_request', request_id: requestId, client_id: client.id, tag_id: 2960, event_time: expect.any(String) },
    ]);
    expect(fake.assignTag({ tagId: 2960, clientId: client.id })).toMatchObject({ hook_type: 'add_tag_to_client', client_id: client.id, tag_id: 2960 });
  });
});

describe('clients', () => {
  it('POST /clients returns the full client object (post-clients-response.json shape)', async () => {
    const client = await createClient('79161234567', { nickname: 'Ivan Petrov', assigned_phone: '79990001122' });
    expect(keysOf(client)).toEqual(sorted(KEYS.client));
    expect(client).toMatchObject({
      phone: '79161234567',
      assigned_name: 'Ivan Petrov',
      client_phone: '79990001122',
      channels: [{ id: 17404, transports: ['whatsapp'] }],
      tags: [],
      custom_fields: {},
      external_ids: {},
    });
    expect(fake.account().clients).toHaveLength(1);
  });

  it('existing phone → HTTP 400 error-client-already-exists.json with the real id', async () => {
    const client = await createClient();
    const r = await post(fake, '/clients', { phone: '79161234567', transport: 'whatsapp', channel_id: 17404 });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({
      status: 'error',
      message: 'Client already exists',
      errors: { client: ['Client already exists', JSON.stringify({ id: client.id })] },
    });
    expect(JSON.parse(r.body.errors.client[1])).toEqual({ id: client.id });
  });

  it('validates phone digits, transport and channel', async () => {
    const plus = await post(fake, '/clients', { phone: '+79161234567', transport: 'whatsapp' });
    expect(plus.body.status).toBe('error');
    const noTransport = await post(fake, '/clients', { phone: '79161234567' });
    expect(noTransport.body.status).toBe('error');
    const badTransport = await post(fake, '/clients', { phone: '79161234567', transport: 'telegram', channel_id: 17404 });
    expect(badTransport.body.status).toBe('error');
    expect(JSON.stringify(badTransport.body)).toMatch(/transport.*incorrect/);
    const badChannel = await post(fake, '/clients', { phone: '79161234567', transport: 'whatsapp', channel_id: 999 });
    expect(JSON.stringify(badChannel.body)).toMatch(/channel.*not found/);
    expect(fake.account().clients).toHaveLength(0);
  });

  it('GET /clients filters phone (exact digits) and client_phone; GET /clients/{id} 404', async () => {
    const a = await createClient('79161234567');
    await createClient('79161234568', { assigned_phone: '79001112233' });
    const byPhone = await get(fake, '/clients?phone=79161234567');
    expect(byPhone.body.data.map((c: any) => c.id)).toEqual([a.id]);
    expect(keysOf(byPhone.body.data[0])).toEqual(sorted(KEYS.client));
    expect((await get(fake, '/clients?phone=%2B79161234567')).body.data).toEqual([]);
    expect((await get(fake, '/clients?client_phone=79001112233')).body.data).toHaveLength(1);

    const missing = await get(fake, '/clients/1');
    expect(missing.status).toBe(404);
    expect(missing.body.status).toBe('error');
    expect(JSON.stringify(missing.body.errors)).toContain('Client not found');
  });

  it('PUT /clients/{id}, /transport, /dialogs, /last_question', async () => {
    const client = await createClient();
    const upd = await put(fake, `/clients/${client.id}`, { nickname: 'New', comment: 'c', external_id: 'b24-1', custom_fields: { 6: 'x' } });
    expect(upd.body.data).toMatchObject({ assigned_name: 'New', comment: 'c', external_id: 'b24-1', custom_fields: { 6: 'x' } });
    expect((await get(fake, `/clients/${client.id}/transport`)).body.data).toEqual([{ channel_id: 17404, transports: ['whatsapp'] }]);

    expect((await get(fake, `/clients/${client.id}/last_question`)).body.data).toBeNull();
    const { message } = fake.receiveMessage({ clientId: client.id, text: 'question?' });
    expect((await get(fake, `/clients/${client.id}/last_question`)).body.data.id).toBe(message.id);

    const dialogs = await get(fake, `/clients/${client.id}/dialogs`);
    expect(dialogs.body.meta.total).toBe(1);
    expect(keysOf(dialogs.body.data[0])).toEqual(sorted(KEYS.dialog));
  });
});

describe('messages', () => {
  it('POST /messages answers post-messages-response.json and opens a dialog', async () => {
    const client = await createClient();
    const r = await post(fake, '/messages', { client_id: client.id, text: 'Hello', operator_id: 617, external_id: 'b24-activity-123' });
    expect(r.status).toBe(200);
    expect(keysOf(r.body.data)).toEqual(sorted(KEYS.postMessage));
    expect(r.body.data).toMatchObject({ client_id: client.id, channel_id: 17404, transport: 'whatsapp', type: 'to_client', operator_id: 617 });
    expect(r.body.data.dialog_id).toEqual(expect.any(Number));
    expect(r.body.data.request_id).toEqual(expect.any(Number));
    const dialog = fake.account().dialogs[0]!;
    expect(dialog).toMatchObject({ id: r.body.data.dialog_id, state: 'open', operator_id: 617, client_id: client.id, messages: 1 });

    // Second message reuses the open dialog and request; defaults come from the last message.
    const again = await post(fake, '/messages', { client_id: client.id, text: 'Again' });
    expect(again.body.data).toMatchObject({ dialog_id: dialog.id, request_id: r.body.data.request_id, operator_id: 617, transport: 'whatsapp' });
  });

  it('an attachment is fetched from its link before the answer (§8), and named by attachment_filename', async () => {
    const files = createServer((req, res) => {
      res.writeHead(req.url === '/gone' ? 410 : 200, { 'content-type': 'image/png' });
      res.end(req.url === '/gone' ? '' : 'PNGDATA');
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
    try {
      const client = await createClient();
      const r = await post(fake, '/messages', { client_id: client.id, attachment: `${base}/a.png`, attachment_filename: 'счёт.png' });
      expect(r.status).toBe(200);
      expect(fake.fetchedAttachments).toEqual([expect.objectContaining({ url: `${base}/a.png`, status: 200, contentType: 'image/png', bytes: Buffer.from('PNGDATA') })]);
      expect(fake.account().messages.at(-1)).toMatchObject({ attachments: [{ name: 'счёт.png', link: `${base}/a.png` }] });
      expect(await fake.fetchAttachment(`${base}/gone`)).toMatchObject({ status: 410 });
    } finally {
      await new Promise((resolve) => files.close(resolve));
    }
  });

  it('wa_dialog (WhatsApp Business API) refuses free text unless the client wrote within 24 h (§9)', async () => {
    const client = await createClient();
    const refused = await post(fake, '/messages', { client_id: client.id, text: 'Hello', transport: 'wa_dialog', channel_id: 17404 });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ status: 'error', message: TEMPLATE_REQUIRED_MESSAGE });
    fake.receiveMessage({ clientId: client.id, text: 'Hi', transport: 'wa_dialog', channelId: 17404 });
    expect((await post(fake, '/messages', { client_id: client.id, text: 'Hello', transport: 'wa_dialog', channel_id: 17404 })).status).toBe(200);
  });

  it('open_dialog=false with no dialog still yields a (closed) dialog record', async () => {
    const client = await createClient();
    const r = await post(fake, '/messages', { client_id: client.id, text: 'Hi', open_dialog: false });
    expect(r.body.data.dialog_id).toEqual(expect.any(Number));
    expect(fake.account().dialogs).toEqual([expect.objectContaining({ id: r.body.data.dialog_id, state: 'closed' })]);
  });

  it('a closed dialog is followed by a new open dialog', async () => {
    const { client, dialog } = fake.seedClient({ phone: '79161234567', withDialog: 'closed' });
    const r = await post(fake, '/messages', { client_id: client.id, text: 'Hi' });
    expect(r.body.data.dialog_id).not.toBe(dialog!.id);
    expect(fake.account().dialogs.find((d) => d.id === r.body.data.dialog_id)!.state).toBe('open');
  });

  it('validates client_id, text, transport', async () => {
    const missingClient = await post(fake, '/messages', { client_id: 42, text: 'x' });
    expect(missingClient.status).toBe(400);
    expect(missingClient.body).toMatchObject({ status: 'error', message: 'Client not found' });
    const client = await createClient();
    expect((await post(fake, '/messages', { client_id: client.id })).body.status).toBe('error');
    expect((await post(fake, '/messages', { client_id: client.id, attachment: 'https://x/a.png' })).body.status).toBe('success');
    const badTransport = await post(fake, '/messages', { client_id: client.id, text: 'x', transport: 'telegram' });
    expect(badTransport.body.status).toBe('error');
  });

  it('GET /messages filters, order, start_id; message objects carry external_id', async () => {
    const a = await createClient('79161234567');
    const b = await createClient('79161234568');
    const m1 = (await post(fake, '/messages', { client_id: a.id, text: '1', external_id: 'ext-1' })).body.data.message_id;
    const m2 = (await post(fake, '/messages', { client_id: b.id, text: '2' })).body.data.message_id;
    const m3 = (await post(fake, '/messages', { client_id: a.id, text: '3', type: 'comment' })).body.data.message_id;

    const all = await get(fake, '/messages');
    expect(all.body.meta.total).toBe(3);
    expect(all.body.data.map((m: any) => m.id)).toEqual([m1, m2, m3]);
    expect(keysOf(all.body.data[0])).toEqual(sorted(KEYS.message));
    expect(all.body.data[0]).toMatchObject({ external_id: 'ext-1', extra_data: {}, attachments: [] });
    expect(all.body.data[0].created).toMatch(TIME_RE);

    expect((await get(fake, `/messages?client_id=${a.id}`)).body.data.map((m: any) => m.id)).toEqual([m1, m3]);
    expect((await get(fake, '/messages?type=comment')).body.data.map((m: any) => m.id)).toEqual([m3]);
    expect((await get(fake, '/messages?order=desc')).body.data.map((m: any) => m.id)).toEqual([m3, m2, m1]);
    expect((await get(fake, `/messages?start_id=${m2}`)).body.data.map((m: any) => m.id)).toEqual([m2, m3]);
    expect((await get(fake, '/messages?transport=widget')).body.data).toEqual([]);

    const one = await get(fake, `/messages/${m1}`);
    expect(one.body.data).toMatchObject({ id: m1, text: '1', type: 'to_client', external_id: 'ext-1', client_id: a.id });
    expect((await get(fake, '/messages/1')).status).toBe(404);
  });

  it('GET /requests/{id}/messages uses camelCase ids, unix created and in|out|system', async () => {
    const client = await createClient();
    const sent = (await post(fake, '/messages', { client_id: client.id, text: 'out' })).body.data;
    fake.receiveMessage({ clientId: client.id, text: 'in' });
    const r = await get(fake, `/requests/${sent.request_id}/messages`);
    expect(r.body.status).toBe('success');
    expect(r.body.data.map((m: any) => m.type)).toEqual(['out', 'in']);
    expect(keysOf(r.body.data[0])).toEqual(sorted(KEYS.requestMessage));
    expect(r.body.data[0]).toMatchObject({ clientID: client.id, dialogID: sent.dialog_id, channelID: 17404, operatorID: 0 });
    expect(r.body.data[0].created).toEqual(expect.any(Number));
    expect((await get(fake, '/requests/1/messages')).body).toMatchObject({ status: 'error', message: 'not_found' });
  });
});

describe('dialogs', () => {
  it('GET /dialogs has the example shape without client_id; filters; 404 not_found', async () => {
    const client = await createClient();
    await post(fake, '/messages', { client_id: client.id, text: 'Hi', operator_id: 311416 });
    fake.seedClient({ phone: '79160000001', withDialog: 'closed' });

    const r = await get(fake, '/dialogs');
    expect(r.body.meta.total).toBe(2);
    expect(keysOf(r.body.data[0])).toEqual(sorted(KEYS.dialog));
    expect(keysOf(r.body.data[0].last_message)).toEqual(sorted(KEYS.dialogLastMessage));
    expect(r.body.data[0]).toMatchObject({ state: 'open', end: null, operator_id: 311416, messages: 1 });
    expect(r.body.data[0].begin).toMatch(TIME_RE);
    expect(r.body.data[0].last_message.client_id).toBe(client.id);

    expect((await get(fake, '/dialogs?state=closed')).body.meta.total).toBe(1);
    expect((await get(fake, '/dialogs?operator_id=311416')).body.meta.total).toBe(1);
    expect((await get(fake, `/dialogs?client_id=${client.id}`)).body.meta.total).toBe(1);

    const missing = await get(fake, '/dialogs/1');
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ status: 'error', message: 'not_found' });
  });

  it('PUT /dialogs/{id} closes, transfers and errors with error-dialog-already-closed.json', async () => {
    const { dialog } = fake.seedClient({ phone: '79161234567', withDialog: 'open' });
    const id = dialog!.id;
    const transfer = await put(fake, `/dialogs/${id}`, { operator_id: 311416, force_assign: true });
    expect(transfer.body.data).toMatchObject({ id, operator_id: 311416, state: 'open' });
    expect((await put(fake, `/dialogs/${id}`, { operator_id: 313753 })).body.status).toBe('error'); // deleted operator
    expect((await put(fake, `/dialogs/${id}`, { operator_id: 1 })).body.status).toBe('error');

    const close = await put(fake, `/dialogs/${id}`, { operator_id: 617, state: 'closed', initiator_id: 617 });
    expect(close.body.data).toMatchObject({ state: 'closed', operator_id: 617 });
    expect(close.body.data.end).toMatch(TIME_RE);

    const again = await put(fake, `/dialogs/${id}`, { state: 'closed' });
    expect(again.status).toBe(400);
    expect(again.body).toEqual({
      status: 'error',
      message: 'Dialog already has state closed',
      errors: 'Dialog already has state closed',
    });
    const reopen = await put(fake, `/dialogs/${id}`, { state: 'open' });
    expect(reopen.body.data).toMatchObject({ state: 'open', end: null });
    expect((await put(fake, `/dialogs/${id}`, { state: 'open' })).body.message).toBe('Dialog already has state open');
  });
});

describe('closed dialogs by time (docs/protocols.md C4, our assumption)', () => {
  it('GET /dialogs?state=closed lists the most recently closed first in order=desc, whatever their ids', async () => {
    let now = Date.parse('2026-03-01T10:00:00Z');
    const clocked = await startFakeChat2Desk({ now: () => now });
    try {
      const older = clocked.seedClient({ phone: '79160000001', withDialog: 'open' }).dialog!.id as number;
      const newer = clocked.seedClient({ phone: '79160000002', withDialog: 'open' }).dialog!.id as number;
      now += 60_000;
      await put(clocked, `/dialogs/${newer}`, { state: 'closed' });
      now += 60_000;
      await put(clocked, `/dialogs/${older}`, { state: 'closed' });
      const ids = async (query: string) => ((await get(clocked, `/dialogs?state=closed&${query}`)).body.data as Array<{ id: number }>).map((dialog) => dialog.id);
      expect(await ids('order=desc')).toEqual([older, newer]);
      expect(await ids('order=asc')).toEqual([newer, older]);
    } finally {
      await clocked.close();
    }
  });
});

describe('closing and reopening (§4, §7)', () => {
  it('closeDialog closes the dialog and gives close_dialog / close_request bodies naming its request, as the examples', async () => {
    const { client, dialog } = fake.seedClient({ phone: '79161234567', withDialog: 'open' });
    const closed = fake.closeDialog(dialog!.id as number);
    const [closeDialog, closeRequest] = ['webhook-close-dialog.json', 'webhook-close-request.json'].map(
      (name) => JSON.parse(readFileSync(join(EXAMPLES_DIR, name), 'utf8')) as Record<string, unknown>,
    );
    const exampleKeys = (body: Record<string, unknown>) =>
      Object.keys(body)
        .filter((key) => !key.startsWith('_'))
        .sort();
    expect(Object.keys(closed.closeDialog).sort()).toEqual(exampleKeys(closeDialog!));
    expect(Object.keys(closed.closeRequest).sort()).toEqual(exampleKeys(closeRequest!));
    expect(closed.closeRequest).toMatchObject({ hook_type: 'close_request', request_id: closed.requestId, client_id: client.id, dialog_id: dialog!.id });
    expect(String(closed.closeRequest.event_time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
    expect((await get(fake, `/dialogs/${dialog!.id}`)).body.data).toMatchObject({ state: 'closed', last_request_id: closed.requestId });
    const reopened = fake.reopenDialog(dialog!.id as number);
    expect(reopened.requestId).not.toBe(closed.requestId);
    expect((await get(fake, `/dialogs/${dialog!.id}`)).body.data).toMatchObject({ state: 'open', end: null, last_request_id: reopened.requestId });
  });
});

describe('webhooks management', () => {
  const hook = (url: string) => ({ name: 'bitrix24-app', url, events: ['inbox', 'outbox', 'close_dialog'], channels: [], status: 'enable' });

  it('create, list, update, delete with get-webhooks-response.json shape', async () => {
    const created = await post(fake, '/webhooks', hook('https://example.org/c2d/1'));
    expect(created.body.status).toBe('success');
    expect(keysOf(created.body.data)).toEqual(sorted(KEYS.webhook));
    const id = created.body.data.id;
    const list = await get(fake, '/webhooks');
    expect(list.body.data).toEqual([
      { id, name: 'bitrix24-app', url: 'https://example.org/c2d/1', events: ['inbox', 'outbox', 'close_dialog'], status: 'enable', errors: [], source: 'client', channels: [] },
    ]);
    expect((await put(fake, `/webhooks/${id}`, { status: 'disable', events: ['inbox'] })).body.data).toMatchObject({ status: 'disable', events: ['inbox'] });
    expect((await post(fake, '/webhooks', { ...hook('https://example.org/x'), events: ['nope'] })).body.status).toBe('error');
    expect((await call(fake, 'DELETE', `/webhooks/${id}`)).body.status).toBe('success');
    expect((await get(fake, '/webhooks')).body.data).toEqual([]);
    expect((await call(fake, 'DELETE', `/webhooks/${id}`)).status).toBe(404);
  });

  it('duplicate url → error-webhook-url-already-used.json; max 5', async () => {
    await post(fake, '/webhooks', hook('https://example.org/c2d/0'));
    const dup = await post(fake, '/webhooks', hook('https://example.org/c2d/0'));
    expect(dup.status).toBe(400);
    expect(dup.body).toEqual({ status: 'error', message: 'Validation error', errors: { url: ['URL is already used'] } });
    for (let i = 1; i < 5; i++) expect((await post(fake, '/webhooks', hook(`https://example.org/c2d/${i}`))).body.status).toBe('success');
    const sixth = await post(fake, '/webhooks', hook('https://example.org/c2d/6'));
    expect(sixth.body.status).toBe('error');
    expect(fake.account().webhooks).toHaveLength(5);
  });
});

describe('rate limit and fault injection', () => {
  it('rate limit → 429 Number of API requests exceeded, per token and window', async () => {
    let t = 1_000_000;
    const limited = await startFakeChat2Desk({ rateLimit: { requests: 2, perMs: 1000 }, now: () => t });
    try {
      expect((await get(limited, '/channels')).status).toBe(200);
      expect((await get(limited, '/channels')).status).toBe(200);
      const over = await get(limited, '/channels');
      expect(over.status).toBe(429);
      expect(over.body).toEqual({ status: 'error', message: 'Number of API requests exceeded' });
      t += 1001;
      expect((await get(limited, '/channels')).status).toBe(200);
    } finally {
      await limited.close();
    }
  });

  it('failNext replies with a canned answer for `times` matching calls, without touching state', async () => {
    fake.failNext({ method: 'post', path: '/clients' }, { status: 500, body: { status: 'error', message: 'boom' } }, 2);
    for (let i = 0; i < 2; i++) {
      const r = await post(fake, '/clients', { phone: '79161234567', transport: 'whatsapp' });
      expect(r).toMatchObject({ status: 500, body: { status: 'error', message: 'boom' } });
    }
    expect(fake.account().clients).toHaveLength(0);
    expect((await get(fake, '/channels')).status).toBe(200); // other paths unaffected
    expect((await post(fake, '/clients', { phone: '79161234567', transport: 'whatsapp' })).status).toBe(200);

    // A success-looking HTTP code with an error body: the body's status is what counts (§1).
    fake.failNext({ path: /^\/messages/ }, { status: 200, body: { status: 'error', message: 'API calls exceeded API limit per month' } });
    expect((await post(fake, '/messages', { client_id: 1, text: 'x' })).body.status).toBe('error');
  });

  it("failNext 'network' destroys the socket", async () => {
    fake.failNext({ path: '/v1/channels' }, 'network');
    await expect(fetch(`${fake.url}/channels`, { headers: { authorization: fake.token } })).rejects.toThrow();
    expect(fake.calls.at(-1)).toMatchObject({ path: '/channels', status: 0 });
    expect((await get(fake, '/channels')).status).toBe(200);
  });

  it('setDown answers 503 with a non-JSON HTML body', async () => {
    fake.setDown(true);
    const r = await get(fake, '/channels');
    expect(r.status).toBe(503);
    expect(r.body).toBeUndefined();
    expect(r.text).toContain('<html>');
    fake.setDown(false);
    expect((await get(fake, '/channels')).status).toBe(200);
  });

  it('delayNext processes the request (state changes) before the late answer', async () => {
    const client = await createClient();
    fake.delayNext({ method: 'POST', path: '/messages' }, 400);
    const aborted = fetch(`${fake.url}/messages`, {
      method: 'POST',
      headers: { authorization: fake.token, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: client.id, text: 'sent before the crash', external_id: 'job-1' }),
      signal: AbortSignal.timeout(100),
    });
    await expect(aborted).rejects.toThrow();
    // Chat2Desk accepted the message although the caller never saw the answer.
    expect(fake.account().messages).toEqual([expect.objectContaining({ external_id: 'job-1' })]);
    const started = Date.now();
    expect((await post(fake, '/messages', { client_id: client.id, text: 'fast' })).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(300);
  });
});

describe('webhook delivery and signature', () => {
  it('signer reproduces the vendor vector (webhook-signature-vector.json)', () => {
    // Copied from the vector file: key is the literal placeholder "md5_api_token".
    const rawBody =
      '{"message_id":28780,"type":"from_client","text":"test7","transport":"widget","client_id":12568,"operator_id":null,"dialog_id":942,"channel_id":1,"photo":null,"coordinates":null,"audio":null,"pdf":null,"client":{"id":12568,"phone":"[chat] 1d0bb2e221762cfcc05c","client_phone":null,"name":"[chat] 1d0bb2e221762cfcc05c","assigned_name":null,"external_id":null},"hook_type":"inbox","request_id":5357,"attachments":[],"is_new_request":false,"is_new_client":false,"insta_comment":false,"extra_data":{},"is_new":true,"event_time":"2025-04-03T11:50:06.984494Z"}';
    expect(computeWebhookSignature('md5_api_token', rawBody, '1743681006')).toBe('88b574d8237e1b7740f88102018b734d3dd5bc6803c509a3694eff9721b0c595');
    expect(webhookSigningKey('c2d-test-token')).toMatch(/^[0-9a-f]{32}$/);
    expect(signWebhook('c2d-test-token', rawBody, '1')).toBe(computeWebhookSignature(webhookSigningKey('c2d-test-token'), rawBody, '1'));
  });

  let receiver: Server;
  let received: Array<{ url: string; headers: IncomingMessage['headers']; body: string }>;
  let answerStatus: number;
  let receiverUrl: string;
  beforeEach(async () => {
    received = [];
    answerStatus = 200;
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        received.push({ url: req.url ?? '', headers: req.headers, body });
        res.statusCode = answerStatus;
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    receiver.closeAllConnections();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  });

  it('delivers signed bodies to enabled webhooks subscribed to hook_type', async () => {
    await post(fake, '/webhooks', { name: 'in', url: `${receiverUrl}/in`, events: ['inbox'] });
    await post(fake, '/webhooks', { name: 'close', url: `${receiverUrl}/close`, events: ['close_dialog'] });
    await post(fake, '/webhooks', { name: 'site-only', url: `${receiverUrl}/site`, events: ['inbox'], channels: [126] });

    const { client } = fake.seedClient({ phone: '79161234567' });
    const { webhook } = fake.receiveMessage({ clientId: client.id as number, text: 'hello', externalId: 'x-1' });
    expect(keysOf(webhook)).toEqual(sorted(KEYS.inboxWebhook));
    expect(webhook).toMatchObject({ hook_type: 'inbox', type: 'from_client', channel_id: 17404, is_new_request: true, extra_data: { external_id: 'x-1' } });

    expect(await fake.deliverWebhook(webhook)).toEqual([200]);
    expect(received).toHaveLength(1);
    const got = received[0]!;
    expect(got.url).toBe('/in');
    expect(JSON.parse(got.body)).toEqual(webhook);
    const timestamp = String(got.headers[TIMESTAMP_HEADER.toLowerCase()]);
    expect(timestamp).toMatch(/^\d{10}$/);
    expect(got.headers[SIGNATURE_HEADER.toLowerCase()]).toBe(signWebhook(fake.token, got.body, timestamp));
  });

  it('failed deliveries append to errors; disabled webhooks receive nothing', async () => {
    const created = await post(fake, '/webhooks', { name: 'in', url: `${receiverUrl}/in`, events: ['outbox'] });
    const id = created.body.data.id;
    answerStatus = 500;
    const body = { hook_type: 'outbox', message_id: 1, event_time: '2026-09-18T08:10:00Z' };
    expect(await fake.deliverWebhook(body)).toEqual([500]);
    const errors = (await get(fake, '/webhooks')).body.data[0].errors;
    expect(errors).toEqual([{ text: 'HTTP 500', created_at: expect.any(Number) }]);

    await post(fake, '/webhooks', { name: 'dead', url: 'http://127.0.0.1:1/dead', events: ['outbox'] });
    expect(await fake.deliverWebhook(body)).toEqual([500, 0]);

    fake.disableWebhook(id);
    expect((await get(fake, '/webhooks')).body.data[0].status).toBe('disable');
    received.length = 0;
    expect(await fake.deliverWebhook(body)).toEqual([0]);
    expect(received).toHaveLength(0);
  });
});

describe('fidelity to the example files', () => {
  it('inlined key lists match the example bodies', () => {
    const load = (name: string) => JSON.parse(readFileSync(join(EXAMPLES_DIR, name), 'utf8'));
    const wire = (o: Record<string, unknown>) => sorted(Object.keys(o).filter((k) => !k.startsWith('_')));
    expect(readdirSync(EXAMPLES_DIR).length).toBeGreaterThan(0);
    expect(wire(load('get-client-response.json').data)).toEqual(sorted(KEYS.client));
    expect(wire(load('post-clients-response.json').data)).toEqual(sorted(KEYS.client));
    const dialog = load('get-dialogs-response.json').data[0];
    expect(wire(dialog)).toEqual(sorted(KEYS.dialog));
    expect(wire(dialog.last_message)).toEqual(sorted(KEYS.dialogLastMessage));
    expect(wire(load('post-messages-response.json').data)).toEqual(sorted(KEYS.postMessage));
    expect(wire(load('get-operators-response.json').data[0])).toEqual(sorted(KEYS.operator));
    expect(wire(load('get-tags-response.json').data[0])).toEqual(sorted(KEYS.tag));
    expect(wire(load('get-channels-response.json').data[0])).toEqual(sorted(KEYS.channel));
    expect(wire(load('get-webhooks-response.json').data[0])).toEqual(sorted(KEYS.webhook));
    expect(wire(load('get-api-info-response.json').data)).toEqual(sorted(KEYS.apiInfo));
    expect(wire(load('get-request-messages-response.json').data[0])).toEqual(sorted(KEYS.requestMessage));
    expect(wire(load('webhook-inbox.json'))).toEqual(sorted(KEYS.inboxWebhook));
    const unauthorized = load('error-unauthorized.json');
    expect({ status: unauthorized.status, message: unauthorized.message }).toEqual({ status: 'error', message: 'Token is not correct' });
  });
});

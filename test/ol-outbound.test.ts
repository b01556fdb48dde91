import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, setGlobalDispatcher } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CANNOT_CHANGE_SENT } from '../src/jobs/kinds/ol-outbound.js';
import { bbcodeToText, messengerText } from '../src/open-channels/bbcode.js';
import { DEFAULT_LINE_OPTIONS } from '../src/open-channels/lines.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { systemClock } from '../src/clock.js';
import { noRetryWait } from './support/clock.js';
import { eventually, installAndConfigure, postForm, putSettings, sentMessages, startStack, type Stack, writeStoredSetting } from './support/stack.js';

/** Chat2Desk operator 617 has Bitrix24 user 1's e-mail (admin@example.com): user 1 is its operator. */
const OPERATOR = 617;
const CHANNEL = 17404;
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082', 'hex');

interface Sent {
  client_id: number;
  text?: string;
  attachment?: string;
  attachment_filename?: string;
  channel_id?: number;
  transport?: string;
  operator_id?: number;
  external_id: string;
}

describe('Open Channels outbound: an operator writes in Bitrix24, the client gets it from Chat2Desk', () => {
  let stack: Stack;
  let clientId: number;
  let chatId: string;
  let inbound = 0;

  /** A REST call to the fake portal with the admin's token, as the app's connector set-up makes them. */
  const b24 = async (method: string, params: Record<string, unknown>) => {
    const response = await fetch(`${stack.b24.clientEndpoint}${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...params, auth: stack.b24.issueAuth(1).access_token }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status, JSON.stringify(body)).toBe(200);
    return body;
  };
  /** The client writes into the Open Channel (what inbound does): the chat exists from then on. */
  const clientWrites = (id: number, text: string) =>
    b24('imconnector.send.messages', {
      CONNECTOR: 'chat2desk',
      LINE: 1,
      MESSAGES: [{ user: { id: `c${id}`, name: 'Maria' }, message: { id: `in-${++inbound}`, date: Math.floor(Date.now() / 1000), text }, chat: { id: `c${id}` } }],
    });
  const sent = () => sentMessages(stack).map((call) => call.body as Sent);
  const ourMessages = (imMessageId: number) =>
    sent().filter((message) => message.external_id === `b24ol:${imMessageId}` || message.external_id.startsWith(`b24ol:${imMessageId}-`));
  const chat = () => stack.b24.openLineMessages(1, chatId);
  const notes = () => chat().filter((message) => message.from === 'client' && message.text.startsWith('[b]Chat2Desk:[/b]'));
  const operatorMessage = (imMessageId: number) => chat().find((message) => message.imMessageId === imMessageId)!;
  const jobsFinished = () => stack.server.idle();

  beforeEach(async () => {
    stack = await startStack({ retrySleep: noRetryWait });
    await installAndConfigure(stack);
    // The connector set-up OC1's registration does on switching to Open Channels (bitrix24.md §12.1–3, §11).
    await b24('imconnector.register', {
      ID: 'chat2desk',
      NAME: 'Chat2Desk',
      ICON: { DATA_IMAGE: 'data:image/svg+xml,%3Csvg%2F%3E' },
      PLACEMENT_HANDLER: `${stack.server.url}/connector`,
      NEED_SIGNATURE: false,
    });
    await b24('imconnector.activate', { CONNECTOR: 'chat2desk', LINE: 1, ACTIVE: 1 });
    // The portal in Open Channels mode with line 1 connected (what the mode switch and the connector page store).
    await writeStoredSetting(stack, 'integrationType', 'open_channels');
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, DEFAULT_LINE_OPTIONS);
    for (const event of ['OnImConnectorMessageAdd', 'OnImConnectorMessageUpdate', 'OnImConnectorMessageDelete']) {
      await b24('event.bind', { event, handler: `${stack.server.url}/bitrix24/events` });
    }
    const seeded = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: CHANNEL, withDialog: 'open' });
    clientId = seeded.client.id as number;
    chatId = `c${clientId}`;
    stack.c2d.receiveMessage({ clientId, text: 'Hello' });
    await clientWrites(clientId, 'Hello');
    stack.c2d.resetCalls();
  });
  afterEach(() => stack.close());

  /** The operator writes; resolves with the im message id once its job finished. */
  const operatorWrites = async (text: string, options: { userId?: number; files?: Array<{ name: string; content: Uint8Array; mime?: string }>; chat?: string } = {}) => {
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: options.chat ?? chatId, text, userId: options.userId, files: options.files });
    expect(written.replies.map((reply) => reply.status)).toEqual([200]);
    return written.imMessageId;
  };
  const delivered = (imMessageId: number) => eventually(() => operatorMessage(imMessageId).delivery === 'delivered', 15_000, `message ${imMessageId} delivered`);

  it("sends the operator's text to the client on the dialog's channel and messenger, as the mapped operator, BBCode made plain, signed", async () => {
    const id = await operatorWrites('Hi [b]there[/b], see [url=https://example.com/p]our page[/url][br]and [USER=5]Olga Petrova[/USER]');
    await delivered(id);
    const [message] = ourMessages(id);
    expect(ourMessages(id)).toHaveLength(1);
    expect(message).toMatchObject({
      client_id: clientId,
      channel_id: CHANNEL,
      transport: 'whatsapp',
      operator_id: OPERATOR,
      external_id: `b24ol:${id}`,
      // The fake signs with the operator's name (NEED_SIGNATURE default): kept as "Name: " (signature option on by default).
      text: 'Anna Admin: Hi there, see our page (https://example.com/p)\nand Olga Petrova',
    });
    // Delivery status: the Chat2Desk id as an ARRAY; the fake shows the message delivered only then.
    const report = stack.b24.connectorStatusReports.find((item) => item.messages.some((m) => m.imMessageId === id))!;
    expect(report.messages[0]).toMatchObject({ externalChatId: chatId, accepted: true });
    const c2dId = stack.c2d.calls.find((call) => call.path === '/messages' && call.method === 'POST');
    expect(c2dId).toBeDefined();
    expect(operatorMessage(id).externalIds).toHaveLength(1);
  });

  it('drops the signature when the line says so', async () => {
    // The line's options as OC1's settings page stores them, read by the server when it starts again.
    // Lines are stored only in Open Channels mode (OpenLineStore.save); this portal was set up by hand, without the switch.
    await writeStoredSetting(stack, 'integrationType', 'open_channels');
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, { ...DEFAULT_LINE_OPTIONS, signature: false });
    await stack.restart();
    // The fake portal's pooled connections went to the server that closed: it delivers on fresh ones.
    setGlobalDispatcher(new Agent());
    const id = await operatorWrites('Without a name');
    await delivered(id);
    expect(ourMessages(id)[0]!.text).toBe('Without a name');
  });

  it("re-hosts an operator's file: fetched from Bitrix24 with the app's token, our link sent, never Bitrix24's", async () => {
    const id = await operatorWrites('The invoice', { files: [{ name: 'photo.png', content: PNG, mime: 'image/png' }] });
    await delivered(id);
    const [message] = ourMessages(id);
    expect(message!.attachment).toMatch(new RegExp(`^${stack.server.url}/files/[A-Za-z0-9_-]{43}/photo\\.png$`));
    expect(message!.attachment).not.toContain(stack.b24.portalUrl);
    expect(message!.text).toBe('Anna Admin: The invoice');
    const fetched = stack.c2d.fetchedAttachments.find((item) => item.url === message!.attachment)!;
    expect(fetched.status).toBe(200);
    expect(Buffer.compare(fetched.bytes, PNG)).toBe(0);
    // The event's downloadLink carried the operator's token; the stored job must not keep it.
    const inputs = await stack.db.rows<{ input: string }>("SELECT input FROM jobs WHERE kind = 'ol_outbound'");
    expect(inputs).toHaveLength(1);
    expect(inputs[0]!.input).toContain('/rest/download.json?token=');
    expect(inputs[0]!.input).not.toContain('auth');
  });

  it("fetches a file only from the portal's own address, whatever host the event names", async () => {
    const elsewhere: string[] = [];
    const foreign = createServer((request, response) => {
      elsewhere.push(request.url ?? '');
      response.end('not a file');
    });
    await new Promise<void>((resolve) => foreign.listen(0, '127.0.0.1', resolve));
    const { port } = foreign.address() as AddressInfo;
    try {
      // A real message of the operator's, its event naming a file on another host.
      const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: '', deliver: false });
      const body = stack.b24.eventBody(
        'ONIMCONNECTORMESSAGEADD',
        {
          CONNECTOR: 'chat2desk',
          LINE: 1,
          MESSAGES: [
            {
              im: { chat_id: written.imChatId, message_id: written.imMessageId },
              message: { user_id: 1, text: '', files: [{ name: 'x.png', downloadLink: `http://127.0.0.1:${port}/rest/download.json?token=abc` }] },
              chat: { id: chatId },
            },
          ],
        },
        { userId: 1 },
      );
      expect((await postForm(`${stack.server.url}/bitrix24/events`, body)).status).toBe(200);
      // The portal does not know the token: the file cannot be had, the operator is told, nothing went elsewhere.
      const note = await eventually(() => notes()[0], 15_000, 'the note in the chat');
      expect(note.text).toContain('Bitrix24 did not give the file x.png');
      expect(elsewhere).toEqual([]);
      expect(sent()).toHaveLength(0);
    } finally {
      await new Promise((resolve) => foreign.close(resolve));
    }
  });

  it('sends a repeated event once', async () => {
    const id = await operatorWrites('Only once');
    await delivered(id);
    // Bitrix24 delivering the same event again (a retry of its queue, or a replay).
    const add = stack.b24.deliveries.find((delivery) => delivery.kind === 'event' && delivery.body.includes('ONIMCONNECTORMESSAGEADD'));
    expect(add).toBeDefined();
    const again = await postForm(`${stack.server.url}/bitrix24/events`, add!.body);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ queued: 0, duplicates: 1 });
    await jobsFinished();
    expect(ourMessages(id)).toHaveLength(1);
  });

  it('sends once when the answer of Chat2Desk is lost (the send is settled, not repeated)', async () => {
    const hold = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const id = await operatorWrites('Exactly once');
    await hold.arrived;
    // Chat2Desk took the message; the connection drops before its answer reaches us.
    hold.lose();
    await delivered(id);
    const taken = stack.c2d.account().messages.filter((message) => message.external_id === `b24ol:${id}`);
    expect(taken).toHaveLength(1);
    expect(operatorMessage(id).externalIds).toEqual([String(taken[0]!.id)]);
  });

  it('changes nothing for a forged event (wrong application token)', async () => {
    const body = stack.b24.eventBody(
      'ONIMCONNECTORMESSAGEADD',
      { CONNECTOR: 'chat2desk', LINE: 1, MESSAGES: [{ im: { chat_id: 1, message_id: 999001 }, message: { user_id: 1, text: 'forged' }, chat: { id: chatId } }] },
      { applicationToken: 'not-the-token' },
    );
    const response = await postForm(`${stack.server.url}/bitrix24/events`, body);
    expect(response.status).toBe(401);
    await jobsFinished();
    expect(sent()).toHaveLength(0);
  });

  it("tells the operator in the chat when Chat2Desk refuses (WhatsApp's 24-hour rule), and the message stays undelivered", async () => {
    const refused = stack.c2d.seedClient({ phone: '79167654321', transport: 'wa_dialog', channelId: CHANNEL, withDialog: 'open' });
    const refusedClient = refused.client.id as number;
    chatId = `c${refusedClient}`;
    await clientWrites(refusedClient, 'Hi');
    const id = await operatorWrites('Are you there?');
    const note = await eventually(() => notes()[0], 15_000, 'the note in the chat');
    expect(note.text).toContain('The message was not sent to the client');
    expect(note.text).toContain('template WhatsApp approved');
    expect(operatorMessage(id).delivery).toBe('undelivered');
    expect(ourMessages(id)).toHaveLength(0);
    // …and in the event log, with what to do next.
    const log = await eventually(async () => {
      const page = (await (await fetch(`${stack.server.url}/api/event-log`, { headers: adminAuth() })).json()) as {
        entries: Array<{ status: string; error: { message: string; nextStep: string } | null }>;
      };
      return page.entries.find((entry) => entry.status === 'failed');
    });
    expect(log.error!.message).toContain(`Open Channel message ${id} not sent`);
    expect(log.error!.nextStep).toContain('approved WhatsApp template');
  });

  it("keeps Chat2Desk's refusal out of the chat when the line says not to post delivery errors; the event log still has it", async () => {
    // Lines are stored only in Open Channels mode (OpenLineStore.save); this portal was set up by hand, without the switch.
    await writeStoredSetting(stack, 'integrationType', 'open_channels');
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, { ...DEFAULT_LINE_OPTIONS, postDeliveryErrors: false });
    await stack.restart();
    setGlobalDispatcher(new Agent());
    const refused = stack.c2d.seedClient({ phone: '79167654322', transport: 'wa_dialog', channelId: CHANNEL, withDialog: 'open' });
    chatId = `c${refused.client.id}`;
    await clientWrites(refused.client.id as number, 'Hi');
    const id = await operatorWrites('Are you there?');
    const log = await eventually(async () => {
      const page = (await (await fetch(`${stack.server.url}/api/event-log`, { headers: adminAuth() })).json()) as {
        entries: Array<{ status: string; error: { message: string } | null }>;
      };
      return page.entries.find((entry) => entry.status === 'failed');
    });
    expect(log.error!.message).toContain(`Open Channel message ${id} not sent`);
    await jobsFinished();
    expect(notes()).toEqual([]);
    expect(ourMessages(id)).toHaveLength(0);
  });

  it('tells the operator that an edit or a delete does not reach the client', async () => {
    const id = await operatorWrites('First words');
    await delivered(id);
    expect((await stack.b24.operatorEdits({ line: 1, externalChatId: chatId, imMessageId: id, text: 'Other words' })).map((reply) => reply.status)).toEqual([200]);
    await eventually(() => notes().length === 1, 15_000, 'the edit note');
    expect(notes()[0]!.text).toContain(CANNOT_CHANGE_SENT);
    expect((await stack.b24.operatorDeletes({ line: 1, externalChatId: chatId, imMessageId: id })).map((reply) => reply.status)).toEqual([200]);
    await eventually(() => notes().length === 2, 15_000, 'the delete note');
    expect(notes()[1]!.text).toContain('deleted');
    await jobsFinished();
    expect(sent()).toHaveLength(1);
  });

  it("sends an unmapped user's message as the dialog's operator, and the event log says who is unmapped", async () => {
    const userId = stack.b24.seedUser({ name: 'Ivan Novak', email: 'ivan@example.org' });
    const id = await operatorWrites('From Ivan', { userId });
    await delivered(id);
    const [message] = ourMessages(id);
    expect(message!.operator_id).toBeUndefined();
    const log = await fetch(`${stack.server.url}/api/event-log`, { headers: adminAuth() });
    expect(JSON.stringify(await log.json())).toContain(`Bitrix24 user ${userId} has no Chat2Desk operator`);
  });

  it('sends as the operator the operator map names', async () => {
    const userId = stack.b24.seedUser({ name: 'Ivan Novak', email: 'ivan@example.org' });
    expect((await putSettings(stack, { operatorMap: { 311416: userId } })).status).toBe(200);
    const id = await operatorWrites('Mapped', { userId });
    await delivered(id);
    expect(ourMessages(id)[0]!.operator_id).toBe(311416);
  });

  it("keeps one conversation's messages in order, even while the first one waits on Chat2Desk", async () => {
    // The first job's look-up of the client's dialogs (its channel and messenger) waits on Chat2Desk.
    const hold = stack.c2d.holdNext({ method: 'GET', path: /^\/clients\/\d+\/dialogs$/ });
    const ids = [await operatorWrites('message 1')];
    await hold.arrived;
    // Stored while the first is still being sent: none may overtake it.
    for (let n = 2; n <= 6; n++) ids.push(await operatorWrites(`message ${n}`));
    hold.release();
    await Promise.all(ids.map(delivered));
    // The order the client gets them in: the order Chat2Desk took them (its message ids), not the order the requests arrived.
    const taken = stack.c2d
      .account()
      .messages.filter((message) => message.type === 'to_client' && message.client_id === clientId)
      .sort((a, b) => (a.id as number) - (b.id as number));
    expect(taken.map((message) => message.text)).toEqual(ids.map((_, n) => `Anna Admin: message ${n + 1}`));
  });

  it("sends the operator's reply while the client's message waits for a Chat2Desk operator: each direction keeps its own order", async () => {
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, { ...DEFAULT_LINE_OPTIONS, holdUntilOperator: true });
    // A new request nobody in Chat2Desk has taken yet: inbound holds it (up to 30 days).
    const waiting = stack.c2d.receiveMessage({ clientId, text: 'A new question' });
    await stack.c2d.deliverWebhook({ ...waiting.webhook, operator_id: null, dialog_id: null });
    const inboundHeld = async () => (await stack.db.rows("select state, attempts from jobs where kind = 'ol_inbound'")) as Array<{ state: string; attempts: number }>;
    await eventually(async () => (await inboundHeld()).some((job) => job.state === 'queued' && job.attempts >= 1), 15_000, 'the client message held');
    const id = await operatorWrites('Answered from Bitrix24');
    await delivered(id);
    expect(ourMessages(id)[0]!.text).toBe('Anna Admin: Answered from Bitrix24');
    expect((await inboundHeld())[0]!.state).toBe('queued');
  });

  it('sends none of several files when Bitrix24 refuses one, so the retry does not repeat the others', async () => {
    const written = await stack.b24.operatorWrites({
      line: 1,
      externalChatId: chatId,
      text: 'Two photos',
      files: [
        { name: 'one.png', content: PNG, mime: 'image/png' },
        { name: 'two.png', content: PNG, mime: 'image/png' },
      ],
      deliver: false,
    });
    // The second file's link names a file the portal does not have (gone before we fetched it).
    const entry = (written.data.MESSAGES as Array<{ message: { files: Array<{ downloadLink: string }> } }>)[0]!;
    entry.message.files[1]!.downloadLink = '/rest/download.json?token=disk%7Cgone';
    const body = stack.b24.eventBody('ONIMCONNECTORMESSAGEADD', written.data, { userId: 1 });
    expect((await postForm(`${stack.server.url}/bitrix24/events`, body)).status).toBe(200);
    const note = await eventually(() => notes()[0], 15_000, 'the note in the chat');
    expect(note.text).toContain('Bitrix24 did not give the file two.png');
    await jobsFinished();
    expect(ourMessages(written.imMessageId)).toEqual([]);
  });

  it('sends the good messages of an event and names the one it cannot take', async () => {
    const tooLong = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'x'.repeat(100_001), deliver: false });
    const fits = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'Fits', deliver: false });
    const item = (written: { imChatId: number; imMessageId: number }, text: string) => ({
      im: { chat_id: written.imChatId, message_id: written.imMessageId },
      message: { user_id: 1, text },
      chat: { id: chatId },
    });
    const body = stack.b24.eventBody('ONIMCONNECTORMESSAGEADD', { CONNECTOR: 'chat2desk', LINE: 1, MESSAGES: [item(tooLong, 'x'.repeat(100_001)), item(fits, 'Fits')] });
    const response = await postForm(`${stack.server.url}/bitrix24/events`, body);
    expect(response.status).toBe(200);
    const answer = (await response.json()) as { queued: number; skipped: string[] };
    expect(answer.queued).toBe(1);
    expect(answer.skipped[0]).toContain(`message ${tooLong.imMessageId}`);
    await eventually(() => ourMessages(fits.imMessageId).length === 1, 15_000, 'the message that fits sent');
    expect(ourMessages(tooLong.imMessageId)).toHaveLength(0);
  });

  it('does not send Bitrix24 system messages (user_id 0)', async () => {
    const body = stack.b24.eventBody('ONIMCONNECTORMESSAGEADD', {
      CONNECTOR: 'chat2desk',
      LINE: 1,
      MESSAGES: [{ im: { chat_id: 1, message_id: 999002 }, message: { user_id: 0, text: 'Welcome!' }, chat: { id: chatId } }],
    });
    const response = await postForm(`${stack.server.url}/bitrix24/events`, body);
    expect(await response.json()).toMatchObject({ queued: 0 });
    await jobsFinished();
    expect(sent()).toHaveLength(0);
  });

  function adminAuth(): Record<string, string> {
    return { authorization: `Bearer ${stack.b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId };
  }
});

describe('BBCode to a messenger text', () => {
  it('converts formatting, links, quotes, code, images and mentions', () => {
    expect(bbcodeToText('[i]a[/i] [u]b[/u] [s]c[/s] [color=#f00]d[/color]')).toBe('a b c d');
    expect(bbcodeToText('[url]https://x.y[/url] [url=https://x.y]https://x.y[/url]')).toBe('https://x.y https://x.y');
    expect(bbcodeToText('[quote]said[br]this[/quote]ok')).toBe('> said\n> this\nok');
    expect(bbcodeToText('[code][b]raw[/b][/code]')).toBe('[b]raw[/b]');
    expect(bbcodeToText('[img width=10]https://x.y/a.png[/img]')).toBe('https://x.y/a.png');
    expect(bbcodeToText('[sic] stays')).toBe('[sic] stays');
  });

  it('keeps the signature as "Name: " when on, drops it when off', async () => {
    const nameOf = async () => 'Fallback Name';
    const signed = { signedByBitrix24: true, nameOf };
    expect(await messengerText('[b]Klaus Weber:[/b] [br]Guten Tag!', { signature: true, ...signed })).toBe('Klaus Weber: Guten Tag!');
    expect(await messengerText('[b]Klaus Weber:[/b][br] Guten Tag!', { signature: false, ...signed })).toBe('Guten Tag!');
    expect(await messengerText('Unsigned', { signature: true, ...signed })).toBe('Fallback Name: Unsigned');
  });

  it("keeps the operator's own bold heading when Bitrix24 does not sign (NEED_SIGNATURE false, as we register)", async () => {
    const nameOf = async () => 'Anna Admin';
    expect(await messengerText('[b]Important:[/b] [br]Pay today', { signature: false, signedByBitrix24: false, nameOf })).toBe('Important:\nPay today');
    expect(await messengerText('[b]Important:[/b] [br]Pay today', { signature: true, signedByBitrix24: false, nameOf })).toBe('Anna Admin: Important:\nPay today');
  });
});

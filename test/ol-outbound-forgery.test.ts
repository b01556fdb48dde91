import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { DEFAULT_LINE_OPTIONS, type LineOptions } from '../src/open-channels/lines.js';
import { noRetryWait } from './support/clock.js';
import { eventually, installAndConfigure, postForm, sentMessages, startStack, type Stack } from './support/stack.js';

const CHANNEL = 17404;

/**
 * The application token lets an OnImConnectorMessage* event in, but any employee can read it (B0):
 * these are events a forger can post, and what must (not) come of them (docs/protocols.md B27).
 */
describe('Open Channels outbound: forged events', () => {
  let stack: Stack;
  let clientId: number;
  let chatId: string;
  /** Another employee of the portal: not in the client's Open Channel chat. */
  let forgerId: number;

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
  /** The mode as the settings service stores it (through the portal store, which keeps what events read). */
  const setMode = async (mode: 'chat2desk' | 'open_channels') => {
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    await stack.server.portals.saveSettings(stack.b24.memberId, { ...portal.settings, integrationType: mode });
  };
  const connectLine = (line: number, options: Partial<LineOptions> = {}) =>
    new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, line, { ...DEFAULT_LINE_OPTIONS, ...options });
  const outboundJobs = async () =>
    (await stack.db.rows("select state, return_values as returnValues from jobs where kind = 'ol_outbound' order by id")) as Array<{
      state: string;
      returnValues: string | null;
    }>;
  /** Each outbound job's outcome once all have finished: `failed: <why>` or `done`. */
  const outcomes = () =>
    eventually(
      async () => {
        const jobs = await outboundJobs();
        if (jobs.some((job) => job.returnValues === null)) return false;
        return jobs.map((job) => {
          const values = JSON.parse(job.returnValues!) as { status: string; error?: string };
          return values.status === 'failed' ? `failed: ${values.error}` : values.status;
        });
      },
      15_000,
      'the outbound jobs finished',
    );
  const post = (event: string, data: unknown, userId: number) => postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody(event, data, { userId }));
  const chat = () => stack.b24.openLineMessages(1, chatId);
  const notes = () => stack.b24.openLineChats(1).flatMap((item) => item.messages.filter((m) => m.from === 'client' && m.text.startsWith('[b]Chat2Desk:[/b]')));
  const sentTo = (id: number) => sentMessages(stack).filter((call) => (call.body as { client_id: number }).client_id === id);

  beforeEach(async () => {
    stack = await startStack({ retrySleep: noRetryWait });
    await installAndConfigure(stack);
    await b24('imconnector.register', {
      ID: 'chat2desk',
      NAME: 'Chat2Desk',
      ICON: { DATA_IMAGE: 'data:image/svg+xml,%3Csvg%2F%3E' },
      PLACEMENT_HANDLER: `${stack.server.url}/connector`,
      NEED_SIGNATURE: false,
    });
    await b24('imconnector.activate', { CONNECTOR: 'chat2desk', LINE: 1, ACTIVE: 1 });
    for (const event of ['OnImConnectorMessageAdd', 'OnImConnectorMessageUpdate', 'OnImConnectorMessageDelete']) {
      await b24('event.bind', { event, handler: `${stack.server.url}/bitrix24/events` });
    }
    await setMode('open_channels');
    await connectLine(1);
    const seeded = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: CHANNEL, withDialog: 'open' });
    clientId = seeded.client.id as number;
    chatId = `c${clientId}`;
    await b24('imconnector.send.messages', {
      CONNECTOR: 'chat2desk',
      LINE: 1,
      MESSAGES: [{ user: { id: chatId, name: 'Maria' }, message: { id: 'in-1', date: Math.floor(Date.now() / 1000), text: 'Hello' }, chat: { id: chatId } }],
    });
    forgerId = stack.b24.seedUser({ name: 'Fred Forger', email: 'fred@example.org' });
    stack.c2d.resetCalls();
  });
  afterEach(() => stack.close());

  it('stores nothing unless the portal is in Open Channels mode, the line is connected and the event carries few messages', async () => {
    const imChatId = stack.b24.openLineChats(1)[0]!.chatId;
    const entry = (n: number, line = 1) => ({ im: { chat_id: imChatId, message_id: 5000 + n }, message: { user_id: 1, text: `forged ${n}` }, chat: { id: chatId }, line });
    const add = (line: number, count: number) =>
      post('ONIMCONNECTORMESSAGEADD', { CONNECTOR: 'chat2desk', LINE: line, MESSAGES: Array.from({ length: count }, (_, n) => entry(n)) }, forgerId);
    // A line never connected to Chat2Desk.
    expect(await (await add(42, 1)).json()).toMatchObject({ status: 'ignored' });
    // More messages than one event of Bitrix24's carries.
    expect((await add(1, 30)).status).toBe(400);
    // In Chat2Desk mode the connector's events are none of ours.
    await setMode('chat2desk');
    expect(await (await add(1, 1)).json()).toMatchObject({ status: 'ignored' });
    expect(await outboundJobs()).toEqual([]);
  });

  it("a flood that used up the callers' share of the portal's budget only delays the operator's real message", async () => {
    // Bogus bearer tokens with the portal's member id: each unverified one takes the callers' share (B0, issue 6).
    const bogus = await Promise.all(
      Array.from({ length: 40 }, (_, n) =>
        fetch(`${stack.server.url}/api/settings`, { headers: { authorization: `Bearer bogus-${n}`, 'x-bitrix24-member-id': stack.b24.memberId } }).then(
          (response) => response.status,
        ),
      ),
    );
    expect(bogus).toContain(429);
    await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'Still here' });
    await eventually(() => sentTo(clientId).length === 1, 30_000, 'the real message sent once the share allows');
    expect(sentTo(clientId).map((call) => (call.body as { text: string }).text)).toEqual(['Anna Admin: Still here']);
  }, 45_000);

  it("a forged event squatting the next message ids does not keep the operator's real message from the client", async () => {
    const next = chat().at(-1)!.imMessageId + 1;
    const imChatId = stack.b24.openLineChats(1)[0]!.chatId;
    // Empty words, the operator named, the next ids: as the real message will be, but unconfirmed.
    const MESSAGES = Array.from({ length: 20 }, (_, n) => ({ im: { chat_id: imChatId, message_id: next + n }, message: { user_id: 1, text: '' }, chat: { id: chatId } }));
    expect((await post('ONIMCONNECTORMESSAGEADD', { CONNECTOR: 'chat2desk', LINE: 1, MESSAGES }, forgerId)).status).toBe(200);
    await stack.server.idle();
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'The real answer' });
    expect(written.imMessageId).toBe(next);
    await eventually(() => chat().find((m) => m.imMessageId === next)?.delivery === 'delivered', 15_000, 'the real message delivered');
    expect(sentTo(clientId).map((call) => (call.body as { text: string }).text)).toEqual(['Anna Admin: The real answer']);
    // The forged ones failed, each saying why, and nothing was said in the chat about them.
    const failed = (await outcomes()).filter((outcome) => outcome.startsWith('failed'));
    expect(failed).toHaveLength(20);
    expect(failed[0]).toContain(`Bitrix24 did not show chat ${imChatId} to the user whose token the event carries (ACCESS_DENIED)`);
    expect(notes()).toEqual([]);
  });

  it("does not send a forged message to another client, whoever's token it carries; the event log says why", async () => {
    const other = stack.c2d.seedClient({ phone: '79160000001', transport: 'whatsapp', channelId: CHANNEL, withDialog: 'open' }).client.id as number;
    // A real message of the operator's in the client's chat, unsent so far.
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'Pay at https://evil.example', deliver: false });
    const forged = (chatOfEvent: string, line = 1) => ({
      CONNECTOR: 'chat2desk',
      LINE: line,
      MESSAGES: [{ im: { chat_id: written.imChatId, message_id: written.imMessageId }, message: { user_id: 1, text: 'Pay at https://evil.example' }, chat: { id: chatOfEvent } }],
    });
    // The forger's own token: the chat is not theirs to read.
    expect((await post('ONIMCONNECTORMESSAGEADD', forged(`c${other}`), forgerId)).status).toBe(200);
    // An operator's token (one who is in the chat): the chat is not the other client's conversation.
    expect((await post('ONIMCONNECTORMESSAGEADD', forged(`c${other}`), 1)).status).toBe(200);
    const errors = await outcomes();
    expect(sentTo(other)).toEqual([]);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toContain(`Bitrix24 did not show chat ${written.imChatId}`);
    expect(errors[1]).toContain(`is not the Chat2Desk conversation c${other}`);
    const page = (await (
      await fetch(`${stack.server.url}/api/event-log`, {
        headers: { authorization: `Bearer ${stack.b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId },
      })
    ).json()) as { entries: Array<{ status: string; error: { message: string } | null }> };
    expect(page.entries.filter((entry) => entry.status === 'failed').map((entry) => entry.error?.message)).toEqual(
      expect.arrayContaining([expect.stringContaining('Bitrix24 does not confirm message')]),
    );
    expect(notes()).toEqual([]);
  });

  it('confirms the messages of one event and chat with one read of the chat', async () => {
    const written = [];
    for (const text of ['one', 'two', 'three']) written.push(await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text, deliver: false }));
    const MESSAGES = written.flatMap((item) => item.data.MESSAGES as unknown[]);
    expect((await post('ONIMCONNECTORMESSAGEADD', { CONNECTOR: 'chat2desk', LINE: 1, MESSAGES }, 1)).status).toBe(200);
    expect(await outcomes()).toEqual(['done', 'done', 'done']);
    expect(sentTo(clientId).map((call) => (call.body as { text: string }).text)).toEqual(['Anna Admin: one', 'Anna Admin: two', 'Anna Admin: three']);
    expect(stack.b24.calls.filter((call) => call.method === 'imopenlines.session.history.get')).toHaveLength(1);
  });

  it('a forged edit or delete for a chat that is not ours posts no note and makes no Open Channel chat', async () => {
    const chatsBefore = stack.b24.openLineChats(1).length;
    for (const event of ['ONIMCONNECTORMESSAGEUPDATE', 'ONIMCONNECTORMESSAGEDELETE']) {
      const data = { CONNECTOR: 'chat2desk', LINE: 1, MESSAGES: [{ im: { chat_id: 9999, message_id: 777 }, message: { id: ['1'], text: 'spam' }, chat: { id: 'c424242' } }] };
      expect((await post(event, data, forgerId)).status).toBe(200);
    }
    expect(await outcomes()).toEqual([
      'failed: Open Channel message 777 not sent: Bitrix24 did not show chat 9999 to the user whose token the event carries (CHAT_ID)',
      'failed: Open Channel message 777 not sent: Bitrix24 did not show chat 9999 to the user whose token the event carries (CHAT_ID)',
    ]);
    expect(stack.b24.openLineChats(1)).toHaveLength(chatsBefore);
    expect(notes()).toEqual([]);
  });

  it('a forged event naming an already sent message is confirmed afresh: no file of it reaches another client', async () => {
    const other = stack.c2d.seedClient({ phone: '79160000001', transport: 'whatsapp', channelId: CHANNEL, withDialog: 'open' }).client.id as number;
    const genuine = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'genuine' });
    await eventually(() => sentTo(clientId).length === 1, 15_000, 'the genuine message sent');
    // A file of the portal's, as an operator's event links it.
    const PNG = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
    const withFile = await stack.b24.operatorWrites({
      line: 1,
      externalChatId: chatId,
      text: '',
      files: [{ name: 'secret.png', content: PNG, mime: 'image/png' }],
      deliver: false,
    });
    const file = (withFile.data.MESSAGES as Array<{ message: { files: unknown[] } }>)[0]!.message.files[0];
    // The sent message's ids, another client's chat, extra files: its first entry is already recorded as sent.
    const forged = {
      CONNECTOR: 'chat2desk',
      LINE: 1,
      MESSAGES: [{ im: { chat_id: genuine.imChatId, message_id: genuine.imMessageId }, message: { user_id: 1, text: 'x', files: [file, file] }, chat: { id: `c${other}` } }],
    };
    expect((await post('ONIMCONNECTORMESSAGEADD', forged, forgerId)).status).toBe(200);
    const [first, second] = await outcomes();
    expect(first).toBe('done');
    expect(second).toContain(`Bitrix24 did not show chat ${genuine.imChatId} to the user whose token the event carries`);
    expect(sentTo(other)).toEqual([]);
    expect(sentTo(clientId)).toHaveLength(1);
  });

  it('a message edited before its job confirmed it is sent as edited, and its edit tells the operator nothing false', async () => {
    // The edit event comes after the add event (Bitrix24's order); held back here so the add job sees the edited text.
    await b24('event.unbind', { event: 'OnImConnectorMessageUpdate', handler: `${stack.server.url}/bitrix24/events` });
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'helo', deliver: false });
    await stack.b24.operatorEdits({ line: 1, externalChatId: chatId, imMessageId: written.imMessageId, text: 'hello' });
    expect((await post('ONIMCONNECTORMESSAGEADD', written.data, 1)).status).toBe(200);
    expect(await outcomes()).toEqual(['done']);
    expect(sentTo(clientId).map((call) => (call.body as { text: string }).text)).toEqual(['Anna Admin: hello']);
    const edited = chat().find((m) => m.imMessageId === written.imMessageId)!;
    const update = {
      CONNECTOR: 'chat2desk',
      LINE: 1,
      MESSAGES: [{ im: { chat_id: written.imChatId, message_id: written.imMessageId }, message: { id: [], text: edited.text }, chat: { id: chatId } }],
    };
    expect((await post('ONIMCONNECTORMESSAGEUPDATE', update, 1)).status).toBe(200);
    expect(await outcomes()).toEqual(['done', 'done']);
    expect(notes()).toEqual([]);
    expect(sentTo(clientId)).toHaveLength(1);
  });
});

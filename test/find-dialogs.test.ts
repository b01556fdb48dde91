import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialogUrl } from '../src/chat2desk/links.js';
import { eventually, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

describe('Find dialogs by phone robot', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  async function find(properties: Record<string, string | string[]>) {
    const call = await stack.b24.callRobot({ code: 'c2d_find_dialogs', properties });
    expect(call.status).toBe(200);
    return eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
  }

  /** Changes the fake account through its own API, as an operator in Chat2Desk would. */
  async function chat2desk(method: string, path: string, body: unknown): Promise<void> {
    const response = await fetch(`${stack.c2d.url}${path}`, {
      method,
      headers: { authorization: stack.c2d.token, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(200);
  }

  /** A client with an open dialog, transferred to `operatorId`, two tags and one incoming message. */
  async function seedConversation(operatorId = 311416) {
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', name: 'Ivan Petrov', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    await chat2desk('PUT', `/dialogs/${dialog!.id}`, { operator_id: operatorId });
    await chat2desk('POST', '/tags/assign_to', { tag_ids: [996, 2960], assignee_type: 'client', assignee_id: client.id });
    const { message } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Where is my order?' });
    stack.c2d.resetCalls();
    return { client, dialogId: dialog!.id as number, message };
  }

  const webApp = () => stack.c2d.url.replace(/\/v1$/, '');

  it("returns the client's latest dialog with its operator, the operator's Bitrix24 user and a link", async () => {
    const { client, dialogId, message } = await seedConversation();
    const sent = await find({ phone: '+7 (916) 123-45-67' });

    const stored = stack.c2d.account().dialogs.find((dialog) => dialog.id === dialogId)!;
    expect(stored).toMatchObject({ state: 'open', operator_id: 311416 });
    expect(sent.returnValues).toEqual({
      status: 'ok',
      error: '',
      found: 'Y',
      dialogs_count: '1',
      client_id: String(client.id),
      client_name: 'Ivan Petrov',
      dialog_id: String(dialogId),
      dialog_state: 'open',
      operator_id: '311416',
      operator_name: 'John Doe',
      // operator 311416 is manager@example.com, as is Bitrix24 user 2
      responsible: 'user_2',
      channel_id: '17404',
      transport: 'whatsapp',
      tags: 'R, Т',
      last_message_text: 'Where is my order?',
      last_message_at: String(message.created).replace(' UTC', '+00:00'),
      dialog_url: `${webApp()}/chat/all?dialogID=${dialogId}`,
    });
    expect(sent.returnValues.last_message_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/);
    const userLookup = stack.b24.calls.find((call) => call.method === 'user.get');
    expect(userLookup?.params).toMatchObject({ FILTER: { EMAIL: 'manager@example.com' } });
    expect(stack.c2d.calls.every((call) => call.method === 'GET')).toBe(true);
  });

  it('filters by dialog state and counts the dialogs that match', async () => {
    const { client, dialog: first } = stack.c2d.seedClient({ phone: '79161234567', channelId: 17404, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'first visit' });
    await chat2desk('PUT', `/dialogs/${first!.id}`, { state: 'closed' });
    const { message } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'second visit' });
    const second = message.dialog_id as number;
    expect(second).not.toBe(first!.id);

    const any = await find({ phone: '79161234567' });
    expect(any.returnValues).toMatchObject({ status: 'ok', found: 'Y', dialogs_count: '2', dialog_id: String(second), dialog_state: 'open', last_message_text: 'second visit' });

    const closed = await find({ phone: '79161234567', state: 'closed' });
    expect(closed.returnValues).toMatchObject({
      status: 'ok',
      found: 'Y',
      dialogs_count: '1',
      dialog_id: String(first!.id),
      dialog_state: 'closed',
      last_message_text: 'first visit',
    });

    const open = await find({ phone: '79161234567', state: 'open' });
    expect(open.returnValues).toMatchObject({ status: 'ok', dialogs_count: '1', dialog_id: String(second), dialog_state: 'open' });
    // A dialog nobody took yet has no operator and so no responsible user.
    expect(open.returnValues).toMatchObject({ operator_id: '', operator_name: '', responsible: '' });
  });

  it('reads both document types of phone input: a phone field array and its printable text', async () => {
    const { dialogId } = await seedConversation();
    const fromArray = await find({ phone: ['8 916 123-45-67'] });
    const fromText = await find({ phone: '+7 916 123-45-67, +7 495 000-00-00' });
    for (const sent of [fromArray, fromText]) expect(sent.returnValues).toMatchObject({ status: 'ok', found: 'Y', dialog_id: String(dialogId) });
    const lookup = stack.c2d.calls.find((call) => call.method === 'GET' && call.path === '/clients');
    expect(lookup?.query.phone).toBe('79161234567');
  });

  it('answers not_found, not an error, when there is no client or no dialog in that state', async () => {
    const unknown = await find({ phone: '+7 916 000-00-01' });
    expect(unknown.returnValues).toMatchObject({ status: 'not_found', error: '', found: 'N', dialogs_count: '0', client_id: '', dialog_id: '', responsible: '', dialog_url: '' });
    expect(unknown.logMessage).toBe('No Chat2Desk client with phone +79160000001');

    stack.c2d.seedClient({ phone: '79161234567', channelId: 17404, withDialog: 'closed' });
    const noOpen = await find({ phone: '79161234567', state: 'open' });
    expect(noOpen.returnValues).toMatchObject({ status: 'not_found', error: '', found: 'N', dialogs_count: '0', client_id: '', dialog_id: '', dialog_state: '' });
    expect(noOpen.logMessage).toBe('The Chat2Desk client with phone +79161234567 has no open dialogs');
  });

  it('takes the responsible user from operatorMap before the e-mail', async () => {
    expect((await putSettings(stack, { operatorMap: { '311416': 7 } })).status).toBe(200);
    await seedConversation(311416);
    stack.b24.resetCalls();
    const sent = await find({ phone: '79161234567' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', operator_id: '311416', responsible: 'user_7' });
    expect(stack.b24.calls.some((call) => call.method === 'user.get')).toBe(false);
  });

  it('leaves responsible empty when no Bitrix24 user has the operator e-mail', async () => {
    const admin = stack.c2d.account().operators.find((operator) => operator.id === 617)!;
    admin.email = 'john@elsewhere.example';
    // Saving the settings cached the operator list; read it afresh.
    expect((await putSettings(stack, { cacheTtlSeconds: 0 })).status).toBe(200);
    await seedConversation(617);
    stack.b24.resetCalls();
    const sent = await find({ phone: '79161234567' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', error: '', found: 'Y', operator_id: '617', operator_name: 'John Doe', responsible: '' });
    const userLookup = stack.b24.calls.find((call) => call.method === 'user.get');
    expect(userLookup?.params).toMatchObject({ FILTER: { EMAIL: 'john@elsewhere.example' } });
  });

  it('answers a second lookup of the same phone from the cache, without calling Chat2Desk', async () => {
    const { dialogId } = await seedConversation();
    const first = await find({ phone: '79161234567' });
    expect(stack.c2d.calls.length).toBeGreaterThan(0);
    stack.c2d.resetCalls();
    const second = await find({ phone: '79161234567' });
    expect(stack.c2d.calls).toEqual([]);
    expect(second.returnValues).toEqual(first.returnValues);
    expect(second.returnValues.dialog_id).toBe(String(dialogId));
  });

  it('finishes with a readable error for a phone that is not a number, and for a missing one', async () => {
    const bad = await find({ phone: 'call me maybe' });
    expect(bad.returnValues).toMatchObject({ status: 'failed', found: 'N', dialog_id: '' });
    expect(bad.returnValues.error).toBe('"call me maybe" is not a valid phone number');
    const missing = await find({ phone: '' });
    expect(missing.returnValues).toMatchObject({ status: 'failed', error: 'Find dialogs by phone: phone is required' });
    const wrongState = await find({ phone: '79161234567', state: 'pending' });
    expect(wrongState.returnValues).toMatchObject({ status: 'failed', error: 'Find dialogs by phone: state must be any, open or closed' });
    expect(stack.c2d.calls.filter((call) => call.path === '/clients')).toHaveLength(0);
  });
});

describe('dialogUrl', () => {
  it("derives Chat2Desk's web app from the API address", () => {
    expect(dialogUrl('https://api.chat2desk.com/v1', 42)).toBe('https://web.chat2desk.com/chat/all?dialogID=42');
    expect(dialogUrl('https://api.chat2desk.com.mx/v1', 42)).toBe('https://web.chat2desk.com.mx/chat/all?dialogID=42');
    expect(dialogUrl('https://api.chat24.io/v1', 42)).toBe('https://web.chat24.io/chat/all?dialogID=42');
    expect(dialogUrl('https://api.example.org/v1/', 7)).toBe('https://web.example.org/chat/all?dialogID=7');
  });
});

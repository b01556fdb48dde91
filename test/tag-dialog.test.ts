import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { C2DTag } from './fakes/chat2desk.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

describe('Tag dialog robot', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    // The fake starts with tags R (996) and Т (2960); these two are ours.
    stack.c2d.account().tags.push(tagRecord(5001, 'VIP'), tagRecord(5002, 'Gold'));
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  function tagRecord(id: number, label: string): C2DTag {
    return { id, label, description: '', group_id: 7, group_name: 'Status' };
  }

  async function tagDialog(properties: Record<string, string | string[]>) {
    const call = await stack.b24.callRobot({ code: 'c2d_tag_dialog', properties });
    expect(call.status).toBe(200);
    return eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
  }

  /** A client who wrote in, so the dialog names its client; returns the ids the robot acts on. */
  function seedDialog(): { clientId: number; dialogId: number; requestId: number } {
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Hello' });
    stack.c2d.resetCalls();
    return { clientId: client.id as number, dialogId: dialog!.id as number, requestId: dialog!.last_request_id as number };
  }

  const fakeClient = (id: number) => stack.c2d.account().clients.find((client) => client.id === id) as { tags: C2DTag[] };
  const fakeRequest = (id: number) => stack.c2d.account().requests.find((request) => request.id === id)!;
  const labelsOf = (tags: C2DTag[]) => tags.map((tag) => tag.label);
  const assignCalls = () => stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/tags/assign_to');
  const deleteCalls = () => stack.c2d.calls.filter((call) => call.method === 'DELETE' && /^\/tags\/\d+\/delete_from$/.test(call.path));

  it("adds tags by label (any case, one comma-separated text) to the client of the phone's dialog", async () => {
    const { clientId } = seedDialog();
    const sent = await tagDialog({ phone: ['8 916 123-45-67'], tags: 'vip,  GOLD' });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', client_id: String(clientId), request_id: '', tags: 'VIP, Gold' });
    expect(assignCalls().map((call) => call.body)).toEqual([{ tag_ids: [5001, 5002], assignee_type: 'client', assignee_id: clientId }]);
    expect(labelsOf(fakeClient(clientId).tags)).toEqual(['VIP', 'Gold']);
    expect(sent.logMessage).toContain(`Chat2Desk tags VIP, Gold added to client ${clientId}`);
  });

  it('adds tags given as a multiple property, mixing ids and labels, by dialog id', async () => {
    const { clientId, dialogId } = seedDialog();
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: ['996', 'Gold'], action: 'add', target: 'client' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', client_id: String(clientId), tags: 'R, Gold' });
    expect(assignCalls().map((call) => call.body)).toEqual([{ tag_ids: [996, 5002], assignee_type: 'client', assignee_id: clientId }]);
  });

  it("removes a tag by id from the client and returns the client's tags read back after the change", async () => {
    const { clientId, dialogId } = seedDialog();
    await tagDialog({ dialog_id: String(dialogId), tags: ['VIP', 'R'] });
    stack.c2d.resetCalls();
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: ['5001'], action: 'remove' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', client_id: String(clientId), tags: 'R' });
    expect(deleteCalls().map((call) => [call.path, call.body])).toEqual([['/tags/5001/delete_from', { client_id: clientId }]]);
    expect(labelsOf(fakeClient(clientId).tags)).toEqual(['R']);
    // Read back from Chat2Desk, not the cached client from before the change.
    expect(stack.c2d.calls.some((call) => call.method === 'GET' && call.path === `/clients/${clientId}`)).toBe(true);
  });

  it("tags the dialog's current request, not the client, when the target is request", async () => {
    const { clientId, dialogId, requestId } = seedDialog();
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: 'VIP', target: 'request' });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', client_id: String(clientId), request_id: String(requestId), tags: '' });
    expect(assignCalls().map((call) => call.body)).toEqual([{ tag_ids: [5001], assignee_type: 'request', assignee_id: requestId }]);
    expect(labelsOf(fakeRequest(requestId).tags)).toEqual(['VIP']);
    expect(fakeClient(clientId).tags).toEqual([]);
  });

  it('removes a tag from the request by label', async () => {
    const { dialogId, requestId } = seedDialog();
    await tagDialog({ dialog_id: String(dialogId), tags: 'VIP, Gold', target: 'request' });
    stack.c2d.resetCalls();
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: 'Gold', action: 'remove', target: 'request' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', request_id: String(requestId) });
    expect(deleteCalls().map((call) => [call.path, call.body])).toEqual([['/tags/5002/delete_from', { request_id: requestId }]]);
    expect(labelsOf(fakeRequest(requestId).tags)).toEqual(['VIP']);
  });

  it('fails naming every unknown tag, and changes nothing', async () => {
    const { dialogId } = seedDialog();
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: ['VIP', 'Platinum', '424242', 'Diamond'] });
    expect(sent.returnValues).toMatchObject({ status: 'failed', error: 'unknown Chat2Desk tags: Platinum, 424242, Diamond' });
    expect(assignCalls()).toHaveLength(0);
  });

  it('finds a tag created after the tag list was cached', async () => {
    const { clientId, dialogId } = seedDialog();
    await tagDialog({ dialog_id: String(dialogId), tags: 'VIP' });
    stack.c2d.account().tags.push(tagRecord(5003, 'Brand new'));
    const sent = await tagDialog({ dialog_id: String(dialogId), tags: 'brand new' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', tags: 'VIP, Brand new' });
    expect(labelsOf(fakeClient(clientId).tags)).toEqual(['VIP', 'Brand new']);
  });

  it('answers not_found for an unknown dialog id and for a phone without a client', async () => {
    const byId = await tagDialog({ dialog_id: '999999', tags: 'VIP' });
    expect(byId.returnValues).toMatchObject({ status: 'not_found', error: 'Chat2Desk dialog 999999 not found' });
    const byPhone = await tagDialog({ phone: '+7 916 000-00-00', tags: 'VIP' });
    expect(byPhone.returnValues).toMatchObject({ status: 'not_found', error: 'the client has no Chat2Desk dialog' });
    expect(assignCalls()).toHaveLength(0);
  });

  it('fails readably without tags, or with an action it does not know', async () => {
    const { dialogId } = seedDialog();
    const noTags = await tagDialog({ dialog_id: String(dialogId), tags: ' , ' });
    expect(noTags.returnValues).toMatchObject({ status: 'failed', error: 'Tag dialog: tags are required' });
    const badAction = await tagDialog({ dialog_id: String(dialogId), tags: 'VIP', action: 'toggle' });
    expect(badAction.returnValues).toMatchObject({ status: 'failed', error: 'Tag dialog: action must be add or remove' });
    expect(stack.c2d.calls).toHaveLength(0);
  });

  it('is registered with its business-process twin, and the twin runs too', async () => {
    expect(stack.b24.robots.has('c2d_tag_dialog')).toBe(true);
    expect(stack.b24.activities.has('c2d_tag_dialog_bp')).toBe(true);
    const { clientId, dialogId } = seedDialog();
    const call = await stack.b24.callRobot({ code: 'c2d_tag_dialog_bp', properties: { dialog_id: String(dialogId), tags: 'Gold' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    expect(sent.returnValues).toMatchObject({ status: 'ok', client_id: String(clientId), tags: 'Gold' });
  });
});

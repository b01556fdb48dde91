import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

describe('Assign operator robot', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  async function runRobot(code: string, properties: Record<string, string | string[]>) {
    const call = await stack.b24.callRobot({ code, properties });
    expect(call.status).toBe(200);
    return eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
  }
  const assign = (properties: Record<string, string | string[]>) => runRobot('c2d_assign_operator', properties);

  /** A client who wrote in: an open dialog nobody has taken yet. */
  function seedDialog(): number {
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Hello?' });
    stack.c2d.resetCalls();
    return dialog!.id as number;
  }

  const transfers = () => stack.c2d.calls.filter((call) => call.method === 'PUT' && call.path.startsWith('/dialogs/'));
  const operatorOf = (dialogId: number) => stack.c2d.account().dialogs.find((dialog) => dialog.id === dialogId)?.operator_id;

  it('assigns the Chat2Desk operator that has the Bitrix24 user e-mail, found by phone', async () => {
    const dialogId = seedDialog();
    const sent = await assign({ phone: ['8 916 123-45-67'], operator: 'user_2' });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', dialog_id: String(dialogId), operator_id: '311416' });
    expect(sent.logMessage).toBe(`Chat2Desk dialog ${dialogId} assigned to operator 311416`);
    const [transfer] = transfers();
    expect(transfer?.path).toBe(`/dialogs/${dialogId}`);
    expect(transfer?.body).toEqual({ operator_id: 311416 });
    expect(operatorOf(dialogId)).toBe(311416);
    const userLookup = stack.b24.calls.find((call) => call.method === 'user.get');
    expect(userLookup?.params).toMatchObject({ FILTER: { ID: 2 } });
  });

  it('assigns by Chat2Desk operator id and dialog id, with force_assign when force is set', async () => {
    const dialogId = seedDialog();
    const sent = await assign({ dialog_id: String(dialogId), operator_id: '617', force: 'Y' });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', dialog_id: String(dialogId), operator_id: '617' });
    expect(transfers().map((call) => call.body)).toEqual([{ operator_id: 617, force_assign: true }]);
    expect(operatorOf(dialogId)).toBe(617);
    expect(stack.b24.calls.some((call) => call.method === 'user.get')).toBe(false);
  });

  it('maps the Bitrix24 user through operatorMap in the settings', async () => {
    expect((await putSettings(stack, { operatorMap: { '311416': 7 } })).status).toBe(200);
    const dialogId = seedDialog();
    const sent = await assign({ dialog_id: String(dialogId), operator: 'user_7' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', operator_id: '311416' });
    expect(operatorOf(dialogId)).toBe(311416);
  });

  it('fails readably when the Bitrix24 user has no Chat2Desk operator, and transfers nothing', async () => {
    // Bitrix24 user 1 is admin@example.com; the Chat2Desk admin now signs in with another address.
    stack.c2d.account().operators.find((operator) => operator.id === 617)!.email = 'john@elsewhere.example';
    // Saving the settings cached the operator list; read it afresh.
    expect((await putSettings(stack, { cacheTtlSeconds: 0 })).status).toBe(200);
    const dialogId = seedDialog();
    const sent = await assign({ dialog_id: String(dialogId), operator: 'user_1' });
    expect(sent.returnValues).toEqual({
      status: 'failed',
      error: 'Bitrix24 user 1 has no Chat2Desk operator: map it in the app settings (operatorMap) or give the operator the same e-mail in both systems',
      dialog_id: '',
      operator_id: '',
    });
    expect(transfers()).toHaveLength(0);
    expect(operatorOf(dialogId)).toBeNull();
  });

  it('refuses a call that names no operator before touching Chat2Desk', async () => {
    seedDialog();
    const sent = await assign({ phone: '79161234567' });
    expect(sent.returnValues).toMatchObject({ status: 'failed', error: 'Assign operator: give operator (a Bitrix24 user) or operator_id (a Chat2Desk operator id)' });
    const noTarget = await assign({ operator_id: '617' });
    expect(noTarget.returnValues).toMatchObject({ status: 'failed', error: 'Assign operator: give dialog_id or phone' });
    expect(stack.c2d.calls).toHaveLength(0);
  });

  it('answers not_found for a dialog or a phone Chat2Desk does not know', async () => {
    seedDialog();
    const byId = await assign({ dialog_id: '999', operator_id: '617' });
    expect(byId.returnValues).toMatchObject({ status: 'not_found', error: '', dialog_id: '' });
    const byPhone = await assign({ phone: '+7 916 000-00-01', operator_id: '617' });
    expect(byPhone.returnValues).toMatchObject({ status: 'not_found', error: '', dialog_id: '' });
    expect(transfers()).toHaveLength(0);
  });

  it("fails with Chat2Desk's reason when Chat2Desk refuses the operator", async () => {
    const dialogId = seedDialog();
    const sent = await assign({ dialog_id: String(dialogId), operator_id: '424242' });
    expect(sent.returnValues).toEqual({
      status: 'failed',
      error: `Chat2Desk refused to assign operator 424242 to dialog ${dialogId}: operator 424242 not found`,
      dialog_id: '',
      operator_id: '',
    });
    expect(operatorOf(dialogId)).toBeNull();
  });

  it('is seen by a later Find dialogs: the cached dialog is dropped when it is assigned', async () => {
    const dialogId = seedDialog();
    const before = await runRobot('c2d_find_dialogs', { phone: '79161234567' });
    expect(before.returnValues).toMatchObject({ status: 'ok', dialog_id: String(dialogId), operator_id: '', responsible: '' });

    const assigned = await assign({ phone: '79161234567', operator: 'user_2' });
    expect(assigned.returnValues).toMatchObject({ status: 'ok', operator_id: '311416' });

    stack.c2d.resetCalls();
    const after = await runRobot('c2d_find_dialogs', { phone: '79161234567' });
    expect(after.returnValues).toMatchObject({ status: 'ok', dialog_id: String(dialogId), operator_id: '311416', operator_name: 'John Doe', responsible: 'user_2' });
    expect(stack.c2d.calls.map((call) => `${call.method} ${call.path}`)).toContain(`GET /clients/${stack.c2d.account().clients[0]!.id}/dialogs`);
  });
});

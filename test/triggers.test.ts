import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { FIRE_TRIGGER_KIND } from '../src/jobs/kinds/fire-trigger.js';
import { SYNC_RESPONSIBLE_KIND } from '../src/jobs/kinds/sync-responsible.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { install, installAndConfigure, postForm, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

interface JobView {
  state: string;
  returnValues: Record<string, unknown>;
  lastError: string | null;
}

/** CRM automation triggers fired by Chat2Desk events, and the responsible following a transfer (src/triggers/). */
describe('triggers', () => {
  let stack: Stack;
  let clock: TestClock;
  afterEach(() => stack?.close());

  async function setUp(settings: Record<string, unknown> = {}, options: StackOptions = {}) {
    clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait, ...options });
    await installAndConfigure(stack, { defaultCountry: 'RU', ...settings });
  }

  async function jobsOf(kind: string): Promise<JobView[]> {
    const rows = (await stack.db.rows('select state, return_values as returnValues, last_error as lastError from jobs where kind = ? order by id', kind)) as Array<
      Omit<JobView, 'returnValues'> & { returnValues: string | null }
    >;
    return rows.map((row) => ({ ...row, returnValues: row.returnValues ? (JSON.parse(row.returnValues) as Record<string, unknown>) : {} }));
  }

  /** Every job of the kind once `count` of them finished (retries passed by the clock). */
  function finished(kind: string, count: number): Promise<JobView[]> {
    return eventuallyOnClock(
      () => stack.server,
      clock,
      async () => {
        const jobs = await jobsOf(kind);
        return jobs.filter((job) => job.state === 'done').length >= count ? jobs : undefined;
      },
      20_000,
      `${count} ${kind} jobs finished`,
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}: ${JSON.stringify(await jobsOf(kind))}`);
    });
  }

  const triggerAdds = () => stack.b24.calls.filter((call) => call.method === 'crm.automation.trigger.add' && call.status === 200);

  /** A client with an open dialog, and the CRM's contact with a deal in progress for the same phone. */
  function clientWithDeal(phone = '79161234567') {
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: [`+${phone}`] });
    const dealId = stack.b24.seedDeal({ contactId });
    const { client, dialog } = stack.c2d.seedClient({ phone, name: 'Anna', withDialog: 'open' });
    return { contactId, dealId, clientId: client.id as number, dialogId: dialog!.id as number, dialog: dialog! };
  }

  it('registers the three triggers once, in the portal language; installing again and an app update add none twice', async () => {
    clock = new TestClock();
    stack = await startStack({ clock, b24: { languageId: 'la' } });
    await install(stack);
    expect(Object.fromEntries(stack.b24.triggers)).toEqual({
      c2d_client_wrote: 'El cliente escribió en Chat2Desk',
      c2d_dialog_closed: 'Diálogo de Chat2Desk cerrado',
      c2d_not_delivered: 'Mensaje de Chat2Desk no entregado',
    });
    expect(triggerAdds()).toHaveLength(3);

    await install(stack);
    const update = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONAPPUPDATE', { VERSION: '2', PREVIOUS_VERSION: '1' }));
    expect(update.status).toBe(200);
    await stack.server.idle();
    expect(stack.b24.calls.filter((call) => call.method === 'crm.automation.trigger.list' && call.status === 200)).toHaveLength(3);
    expect(triggerAdds()).toHaveLength(3);
    expect(stack.b24.triggers.size).toBe(3);

    // A trigger the portal lost (deleted by hand) comes back with the next registration.
    stack.b24.triggers.delete('c2d_not_delivered');
    await install(stack);
    expect(triggerAdds()).toHaveLength(4);
    expect(stack.b24.triggers.get('c2d_not_delivered')).toBe('Mensaje de Chat2Desk no entregado');
  });

  it('a Chat2Desk webhook registered before outbox_status was subscribed gets it with the next settings save', async () => {
    await setUp();
    const [webhook] = stack.c2d.account().webhooks as Array<{ events: string[] }>;
    webhook!.events = webhook!.events.filter((event) => event !== 'outbox_status');
    expect((await putSettings(stack, { defaultCountry: 'RU' })).status).toBe(200);
    expect((stack.c2d.account().webhooks as Array<{ events: string[] }>)[0]!.events).toContain('outbox_status');
  });

  it('a client writing fires "client wrote" once on the matched deal, even when Chat2Desk retries the delivery', async () => {
    await setUp();
    const { dealId, clientId } = clientWithDeal();
    const first = stack.c2d.receiveMessage({ clientId, text: 'Hi' });
    expect(await stack.c2d.deliverWebhook(first.webhook)).toEqual([200]);
    expect(await stack.c2d.deliverWebhook(first.webhook)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    expect(job!.returnValues).toMatchObject({ status: 'done', code: 'c2d_client_wrote', entityType: 'deal', entityId: dealId });
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_client_wrote', ownerTypeId: 2, ownerId: dealId }]);

    // Another message is another event.
    const second = stack.c2d.receiveMessage({ clientId, text: 'Are you there?' });
    expect(await stack.c2d.deliverWebhook(second.webhook)).toEqual([200]);
    await finished(FIRE_TRIGGER_KIND, 2);
    expect(await jobsOf(FIRE_TRIGGER_KIND)).toHaveLength(2);
    expect(stack.b24.triggerExecutions).toHaveLength(2);
  });

  it('fires nothing for a client with no CRM record: done, "no CRM record for this client"', async () => {
    await setUp();
    const { client } = stack.c2d.seedClient({ phone: '79990000000', withDialog: 'open' });
    const message = stack.c2d.receiveMessage({ clientId: client.id as number });
    expect(await stack.c2d.deliverWebhook(message.webhook)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    expect(job!.returnValues).toMatchObject({ status: 'skipped', summary: 'no CRM record for this client' });
    expect(job!.lastError).toBeNull();
    expect(stack.b24.triggerExecutions).toEqual([]);
  });

  it('a closed episode fires "dialog closed" once on the record it made, whichever close events arrive and however often', async () => {
    await setUp({ episodesEnabled: true });
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161112233', name: 'Boris', withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number });
    const closed = stack.c2d.closeDialog(dialog!.id as number);
    for (const body of [closed.closeDialog, closed.closeRequest, closed.closeDialog]) expect(await stack.c2d.deliverWebhook(body)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    const leadId = job!.returnValues.entityId as number;
    expect(job!.returnValues).toMatchObject({ status: 'done', code: 'c2d_dialog_closed', entityType: 'lead' });
    expect(stack.b24.crm.leads.get(leadId)).toMatchObject({ ORIGIN_ID: String(closed.requestId) });
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_dialog_closed', ownerTypeId: 1, ownerId: leadId }]);
    expect(await jobsOf(FIRE_TRIGGER_KIND)).toHaveLength(1);
  });

  it('a closed episode of a known client fires on the deal its comment went to; one the tag filter skipped fires on the matched record', async () => {
    await setUp({ episodesEnabled: true });
    const { dealId, dialogId } = clientWithDeal();
    const closed = stack.c2d.closeDialog(dialogId);
    expect(await stack.c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    await finished(FIRE_TRIGGER_KIND, 1);
    expect(stack.b24.timelineComments.filter((item) => item.entityType === 'deal' && item.entityId === dealId)).toHaveLength(1);
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_dialog_closed', ownerTypeId: 2, ownerId: dealId }]);

    // Only episodes of clients tagged 999999 are handled: this one is skipped, the dialog still closed.
    expect((await putSettings(stack, { tagFilterMode: 'only', tagFilterTags: [999999] })).status).toBe(200);
    stack.c2d.reopenDialog(dialogId);
    const again = stack.c2d.closeDialog(dialogId);
    expect(await stack.c2d.deliverWebhook(again.closeRequest)).toEqual([200]);
    const jobs = await finished(FIRE_TRIGGER_KIND, 2);
    expect(jobs[1]!.returnValues).toMatchObject({ status: 'done', entityType: 'deal', entityId: dealId });
    expect(stack.b24.triggerExecutions).toHaveLength(2);
    expect(stack.b24.timelineComments).toHaveLength(1);
  });

  it('with closed episodes off, close_dialog and close_request fire "dialog closed" once on the matched record', async () => {
    await setUp();
    const { dealId, dialogId } = clientWithDeal();
    const closed = stack.c2d.closeDialog(dialogId);
    for (const body of [closed.closeDialog, closed.closeRequest]) expect(await stack.c2d.deliverWebhook(body)).toEqual([200]);
    await finished(FIRE_TRIGGER_KIND, 1);
    expect(await jobsOf(FIRE_TRIGGER_KIND)).toHaveLength(1);
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_dialog_closed', ownerTypeId: 2, ownerId: dealId }]);
  });

  it('with closed episodes on, a close the episode handling does not take (closed before it was turned on) still fires "dialog closed" once', async () => {
    await setUp({ episodesEnabled: true });
    const { dealId, dialogId } = clientWithDeal();
    const closed = stack.c2d.closeDialog(dialogId);
    const before = new Date(clock.now() - 3_600_000).toISOString();
    for (const body of [closed.closeDialog, closed.closeRequest]) expect(await stack.c2d.deliverWebhook({ ...body, event_time: before })).toEqual([200]);
    await finished(FIRE_TRIGGER_KIND, 1);
    expect(await jobsOf(CLOSE_EPISODE_KIND)).toHaveLength(0);
    expect(await jobsOf(FIRE_TRIGGER_KIND)).toHaveLength(1);
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_dialog_closed', ownerTypeId: 2, ownerId: dealId }]);
  });

  it('outbox_status fires "message not delivered"; one that reports a delivered message fires nothing', async () => {
    await setUp();
    const { dealId, clientId, dialogId } = clientWithDeal();
    const base = { hook_type: 'outbox_status', client_id: clientId, dialog_id: dialogId, event_time: new Date().toISOString() };
    expect(await stack.c2d.deliverWebhook({ ...base, message_id: 9001, status: 'delivered' })).toEqual([200]);
    expect(await stack.c2d.deliverWebhook({ ...base, message_id: 9002, status: 'error', error: 'WhatsApp: recipient unreachable' })).toEqual([200]);
    await finished(FIRE_TRIGGER_KIND, 1);
    expect(await jobsOf(FIRE_TRIGGER_KIND)).toHaveLength(1);
    expect(stack.b24.triggerExecutions).toEqual([{ code: 'c2d_not_delivered', ownerTypeId: 2, ownerId: dealId }]);
  });

  it('a trigger whose answer was lost is not fired again: the job fails saying it may have fired', async () => {
    await setUp();
    const { clientId } = clientWithDeal();
    stack.b24.failNext('crm.automation.trigger.execute', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'lost', afterRunning: true });
    const message = stack.c2d.receiveMessage({ clientId });
    expect(await stack.c2d.deliverWebhook(message.webhook)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    expect(job!.returnValues).toMatchObject({ status: 'failed' });
    expect(String(job!.returnValues.error)).toContain('may already have received the trigger c2d_client_wrote');
    expect(stack.b24.triggerExecutions).toHaveLength(1);
  });

  it('a trigger call that never reached the portal (connection refused) is not in doubt: it fires once when the portal answers again', async () => {
    let refusals = 2;
    // What fetch throws when nothing listens at the portal's address (the cause carries the system error code).
    const refusingFetch: typeof fetch = (input, init) => {
      // Sent alone or inside a batch: either way the method is named in the URL or the body.
      const call = `${input instanceof Request ? input.url : String(input)} ${typeof init?.body === 'string' ? init.body : ''}`;
      if (call.includes('crm.automation.trigger.execute') && refusals-- > 0) {
        return Promise.reject(new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) }));
      }
      return fetch(input, init);
    };
    await setUp({}, { fetch: refusingFetch });
    const { clientId } = clientWithDeal();
    const message = stack.c2d.receiveMessage({ clientId });
    expect(await stack.c2d.deliverWebhook(message.webhook)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    expect(job!.returnValues).toMatchObject({ status: 'done' });
    expect(refusals).toBeLessThan(0);
    expect(stack.b24.triggerExecutions).toHaveLength(1);
  });

  it('a trigger the portal does not know fails at once, saying how to register it again', async () => {
    await setUp();
    const { clientId } = clientWithDeal();
    stack.b24.triggers.delete('c2d_client_wrote');
    const message = stack.c2d.receiveMessage({ clientId });
    expect(await stack.c2d.deliverWebhook(message.webhook)).toEqual([200]);
    const [job] = await finished(FIRE_TRIGGER_KIND, 1);
    expect(String(job!.returnValues.error)).toMatch(/does not know the trigger c2d_client_wrote.*register the robots and triggers again/);
  });

  it('responsible sync: a transfer makes the new operator’s Bitrix24 user responsible for the matched deal, once per delivery', async () => {
    await setUp({ responsibleSync: true });
    const { dealId, clientId, dialogId, dialog } = clientWithDeal();
    // Operator 311416 is manager@example.com in Chat2Desk; Bitrix24 user 2 has the same e-mail.
    dialog.operator_id = 311416;
    const transfer = { hook_type: 'dialog_transferred', dialog_id: dialogId, client_id: clientId, operator_id: 311416, event_time: new Date().toISOString() };
    expect(await stack.c2d.deliverWebhook(transfer)).toEqual([200]);
    expect(await stack.c2d.deliverWebhook(transfer)).toEqual([200]);
    const [job] = await finished(SYNC_RESPONSIBLE_KIND, 1);
    expect(job!.returnValues).toMatchObject({ status: 'done', entityType: 'deal', entityId: dealId, userId: 2 });
    expect(stack.b24.crm.deals.get(dealId)!.ASSIGNED_BY_ID).toBe('2');
    expect(await jobsOf(SYNC_RESPONSIBLE_KIND)).toHaveLength(1);
    expect(stack.b24.calls.filter((call) => call.method === 'crm.deal.update')).toHaveLength(1);

    // An operator with no Bitrix24 user changes nothing, and says so.
    dialog.operator_id = 313753;
    const unmapped = { ...transfer, operator_id: 313753, event_time: new Date(Date.now() + 1000).toISOString() };
    expect(await stack.c2d.deliverWebhook(unmapped)).toEqual([200]);
    const jobs = await finished(SYNC_RESPONSIBLE_KIND, 2);
    expect(jobs[1]!.returnValues.summary).toMatch(/responsible not changed: Chat2Desk operator 313753 is not mapped/);
    expect(stack.b24.crm.deals.get(dealId)!.ASSIGNED_BY_ID).toBe('2');

    // A late delivery of an earlier transfer (a Chat2Desk retry, or a job that waited out a failure)
    // never takes the record back: the dialog's operator now is what counts.
    dialog.operator_id = 311416;
    const current = { ...transfer, event_time: new Date(Date.now() + 2000).toISOString() };
    expect(await stack.c2d.deliverWebhook(current)).toEqual([200]);
    await finished(SYNC_RESPONSIBLE_KIND, 3);
    const late = { ...transfer, operator_id: 313753, event_time: new Date(Date.now() + 1500).toISOString() };
    expect(await stack.c2d.deliverWebhook(late)).toEqual([200]);
    const all = await finished(SYNC_RESPONSIBLE_KIND, 4);
    expect(all[3]!.returnValues).toMatchObject({ operatorId: 311416, userId: 2 });
    expect(stack.b24.crm.deals.get(dealId)!.ASSIGNED_BY_ID).toBe('2');
  });

  it('responsible sync off (the default): a transfer starts nothing', async () => {
    await setUp();
    const { clientId, dialogId } = clientWithDeal();
    const transfer = { hook_type: 'dialog_transferred', dialog_id: dialogId, client_id: clientId, operator_id: 311416, event_time: new Date().toISOString() };
    expect(await stack.c2d.deliverWebhook(transfer)).toEqual([200]);
    // A delivery's jobs are stored before it is acknowledged (src/chat2desk/delivery-handlers.ts): none means none.
    expect(await jobsOf(SYNC_RESPONSIBLE_KIND)).toEqual([]);
  });
});

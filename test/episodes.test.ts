import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import type { C2DTag } from './fakes/chat2desk.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { installAndConfigure, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

/** Closed Chat2Desk episodes become CRM records with one comment each (src/episodes/), end to end against the fakes. */
describe('closed episodes → CRM records', () => {
  let stack: Stack;
  let clock: TestClock;
  afterEach(() => stack?.close());

  async function setUp(settings: Record<string, unknown> = {}, options: Pick<StackOptions, 'b24'> = {}) {
    clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait, ...options });
    await installAndConfigure(stack, { defaultCountry: 'RU', episodesEnabled: true, ...settings });
  }

  interface JobView {
    state: string;
    returnValues: Record<string, unknown>;
    logMessage: string | null;
    lastError: string | null;
    attempts: number;
  }

  /** The episode's job as stored (its dedup key is the request id). */
  async function episodeJob(requestId: number): Promise<JobView | undefined> {
    const row = (await stack.db.row(
      'select state, return_values as returnValues, log_message as logMessage, last_error as lastError, attempts from jobs where kind = ? and dedup_key = ?',
      CLOSE_EPISODE_KIND,
      `episode:${requestId}`,
    )) as (Omit<JobView, 'returnValues'> & { returnValues: string | null }) | undefined;
    return row ? { ...row, returnValues: row.returnValues ? (JSON.parse(row.returnValues) as Record<string, unknown>) : {} } : undefined;
  }

  async function episodeJobs(): Promise<number> {
    return ((await stack.db.row('select count(*) as n from jobs where kind = ?', CLOSE_EPISODE_KIND)) as { n: number }).n;
  }

  /** The episode's job once it finished (done, whatever its status), retries passed by the clock. */
  function finished(requestId: number): Promise<JobView> {
    return eventuallyOnClock(
      () => stack.server,
      clock,
      async () => ((await episodeJob(requestId))?.state === 'done' ? await episodeJob(requestId) : undefined),
      20_000,
      `episode ${requestId} finished`,
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}: ${JSON.stringify(await episodeJob(requestId))}`);
    });
  }

  /** A client with an open dialog who wrote once: the episode waiting to be closed. */
  function openEpisode(options: { phone?: string; name?: string; transport?: string; text?: string; clientPhone?: string | null } = {}) {
    const { client, dialog } = stack.c2d.seedClient({
      phone: options.phone ?? '79161234567',
      name: options.name ?? 'Anna',
      transport: options.transport ?? 'whatsapp',
      withDialog: 'open',
    });
    const clientId = client.id as number;
    if (options.clientPhone !== undefined) (stack.c2d.account().clients.find((item) => item.id === clientId) as Record<string, unknown>).client_phone = options.clientPhone;
    stack.c2d.receiveMessage({ clientId, text: options.text ?? 'Where is my order?' });
    return { clientId, dialogId: dialog!.id as number };
  }

  async function close(dialogId: number, which: 'both' | 'dialog' | 'request' = 'both') {
    const closed = stack.c2d.closeDialog(dialogId);
    if (which !== 'request') expect(await stack.c2d.deliverWebhook(closed.closeDialog)).toEqual([200]);
    if (which !== 'dialog') expect(await stack.c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    return closed;
  }

  /** The result a robot call reported to Bitrix24, retries passed by the clock. */
  const robotResult = (eventToken: string) =>
    eventuallyOnClock(
      () => stack.server,
      clock,
      () => stack.b24.sentEvents.find((event) => event.eventToken === eventToken),
      20_000,
      'robot result',
    );
  const comments = (entityType: string, entityId: number) => stack.b24.timelineComments.filter((item) => item.entityType === entityType && item.entityId === entityId);
  const adds = (entity: string) => stack.b24.calls.filter((call) => call.method === `crm.${entity}.add` && call.status === 200);

  it('a closed dialog of an unknown client becomes a lead with its phone, source, responsible and origin, and one comment', async () => {
    await setUp({ sourceId: 'OTHER', fallbackResponsibleId: 7 });
    const { dialogId } = openEpisode({ text: 'Hello [url=https://evil.example]x[/url]' });
    const { requestId } = await close(dialogId);
    const job = await finished(requestId);
    expect(job.returnValues).toMatchObject({ status: 'done', entityType: 'lead', created: true, phone: '+79161234567' });
    const leadId = job.returnValues.entityId as number;
    const lead = stack.b24.crm.leads.get(leadId)!;
    expect(lead).toMatchObject({ NAME: 'Anna', SOURCE_ID: 'OTHER', ASSIGNED_BY_ID: '7', ORIGINATOR_ID: 'chat2desk', ORIGIN_ID: String(requestId) });
    expect(lead.PHONE).toEqual([expect.objectContaining({ VALUE: '+79161234567', VALUE_TYPE: 'MOBILE' })]);
    const [comment] = comments('lead', leadId);
    expect(comments('lead', leadId)).toHaveLength(1);
    expect(job.returnValues.commentId).toBe(comment!.id);
    expect(comment!.comment.split('\n')[0]).toBe(`[b]Chat2Desk[/b] request #${requestId} · dialog ${dialogId}`);
    // Client text cannot open BBCode tags.
    expect(comment!.comment).toContain('Hello ［url=https://evil.example］x［/url］');
    expect(comment!.comment).not.toContain('[url=https://evil.example]');
  });

  it('contact mode creates a contact; contact+deal mode a contact and a deal in the chosen pipeline and stage', async () => {
    await setUp({ episodeEntity: 'contact' });
    const first = openEpisode({ phone: '79160000001' });
    const one = await finished((await close(first.dialogId)).requestId);
    expect(one.returnValues).toMatchObject({ entityType: 'contact', created: true });
    expect(stack.b24.crm.contacts.get(one.returnValues.entityId as number)).toMatchObject({ NAME: 'Anna', ORIGIN_ID: expect.any(String) });

    expect((await putSettings(stack, { episodeEntity: 'contact_deal', dealCategoryId: 3, dealStageId: 'C3:NEW' })).status).toBe(200);
    const second = openEpisode({ phone: '79160000002', name: 'Boris' });
    const two = await finished((await close(second.dialogId)).requestId);
    expect(two.returnValues).toMatchObject({ entityType: 'deal', created: true });
    const deal = stack.b24.crm.deals.get(two.returnValues.entityId as number)!;
    expect(deal).toMatchObject({ CATEGORY_ID: '3', STAGE_ID: 'C3:NEW', ORIGINATOR_ID: 'chat2desk' });
    expect(stack.b24.crm.contacts.get(Number(deal.CONTACT_ID))).toMatchObject({ NAME: 'Boris' });
    expect(comments('deal', Number(deal.ID))).toHaveLength(1);
  });

  it('contact+deal mode: a matched contact with no deal in progress gets a new deal; one with a deal in progress gets the comment on it', async () => {
    await setUp({ episodeEntity: 'contact_deal' });
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: ['+7 916 123-45-67'] });
    stack.b24.seedDeal({ contactId, fields: { STAGE_ID: 'WON' } });
    const first = openEpisode();
    const one = await finished((await close(first.dialogId)).requestId);
    expect(one.returnValues).toMatchObject({ entityType: 'deal', created: true });
    expect(stack.b24.crm.deals.get(one.returnValues.entityId as number)).toMatchObject({ CONTACT_ID: String(contactId) });
    expect(adds('contact')).toHaveLength(0);

    stack.c2d.reopenDialog(first.dialogId);
    const two = await finished((await close(first.dialogId)).requestId);
    expect(two.returnValues).toMatchObject({ entityType: 'deal', entityId: one.returnValues.entityId, created: false });
    expect(adds('deal')).toHaveLength(1);
  });

  it('matching: default order prefers the deal in progress, then contact, company, lead; the most recently modified wins a tie; matchOrder changes it', async () => {
    await setUp();
    const phone = '+79161234567';
    const leadId = stack.b24.seedLead({ phones: [phone] });
    const companyId = stack.b24.seedCompany({ phones: [phone] });
    const older = stack.b24.seedContact({ phones: [phone], fields: { DATE_MODIFY: '2026-01-01T10:00:00+03:00' } });
    const newer = stack.b24.seedContact({ phones: [phone], fields: { DATE_MODIFY: '2026-03-01T10:00:00+03:00' } });
    const closedDeal = stack.b24.seedDeal({ contactId: older, fields: { STAGE_ID: 'LOSE', DATE_MODIFY: '2026-06-01T10:00:00+03:00' } });
    const oldDeal = stack.b24.seedDeal({ contactId: older, fields: { DATE_MODIFY: '2026-02-01T10:00:00+03:00' } });
    const newDeal = stack.b24.seedDeal({ contactId: newer, fields: { DATE_MODIFY: '2026-04-01T10:00:00+03:00' } });

    const pick = async (order?: string[]) => {
      if (order) expect((await putSettings(stack, { matchOrder: order })).status).toBe(200);
      // A new client each time: the remembered record would otherwise win.
      const { dialogId } = openEpisode({ phone: '79161234567' });
      const job = await finished((await close(dialogId)).requestId);
      expect(job.returnValues.created).toBe(false);
      return `${job.returnValues.entityType} ${job.returnValues.entityId}`;
    };
    expect(await pick()).toBe(`deal ${newDeal}`);
    expect(await pick(['contact', 'deal', 'company', 'lead'])).toBe(`contact ${newer}`);
    expect(await pick(['company', 'contact', 'deal', 'lead'])).toBe(`company ${companyId}`);
    expect(await pick(['lead', 'company', 'contact', 'deal'])).toBe(`lead ${leadId}`);
    // Leads count only in progress: a converted lead is passed over.
    stack.b24.crm.leads.get(leadId)!.STATUS_ID = 'CONVERTED';
    expect(await pick()).toBe(`company ${companyId}`);
    expect([closedDeal, oldDeal]).not.toContain(newDeal);
    expect(adds('lead')).toHaveLength(0);
  });

  it('a retry pins the comment to the record the first attempt chose, even when another deal became the newest meanwhile', async () => {
    await setUp();
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: ['79161234567'] });
    const first = stack.b24.seedDeal({ contactId, fields: { DATE_MODIFY: '2026-04-01T10:00:00+03:00' } });
    const second = stack.b24.seedDeal({ contactId, fields: { DATE_MODIFY: '2026-02-01T10:00:00+03:00' } });
    stack.b24.failNext('crm.timeline.comment.add', { status: 503, error: 'INTERNAL_SERVER_ERROR', error_description: 'down for a moment' });
    const { dialogId } = openEpisode();
    const { requestId } = await close(dialogId);
    await eventuallyOnClock(
      () => stack.server,
      clock,
      async () => ((await episodeJob(requestId))?.lastError ? true : undefined),
      20_000,
      'the first attempt failed',
    );
    // A manager edits the other deal before the retry: it is now the most recently modified.
    stack.b24.crm.deals.get(second)!.DATE_MODIFY = '2026-06-01T10:00:00+03:00';
    const job = await finished(requestId);
    expect(job.returnValues).toMatchObject({ entityType: 'deal', entityId: first, created: false });
    expect(comments('deal', first)).toHaveLength(1);
    expect(comments('deal', second)).toHaveLength(0);
  });

  it('an existing record gets only the comment', async () => {
    await setUp();
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: ['79161234567'] });
    const { dialogId } = openEpisode();
    const job = await finished((await close(dialogId)).requestId);
    expect(job.returnValues).toMatchObject({ entityType: 'contact', entityId: contactId, created: false });
    expect(['lead', 'contact', 'deal'].flatMap(adds)).toHaveLength(0);
    expect(comments('contact', contactId)).toHaveLength(1);
  });

  it('tag filter: all, only the chosen tags, all but them (skipped episodes finish done, not failed)', async () => {
    await setUp();
    const vip: C2DTag = { id: 5001, label: 'VIP', description: '', group_id: 7, group_name: 'Status' };
    const tagged = () => {
      const episode = openEpisode({ phone: `7916${Math.floor(1_000_000 + Math.random() * 8_999_999)}` });
      (stack.c2d.account().clients.find((item) => item.id === episode.clientId) as { tags: C2DTag[] }).tags.push(vip);
      return episode;
    };
    const outcome = async (episode: { dialogId: number }) => (await finished((await close(episode.dialogId)).requestId)).returnValues;

    expect(await outcome(tagged())).toMatchObject({ status: 'done', created: true });
    await putSettings(stack, { tagFilterMode: 'only', tagFilterTags: [5001] });
    expect(await outcome(tagged())).toMatchObject({ status: 'done', created: true });
    expect(await outcome(openEpisode({ phone: '79160000011' }))).toMatchObject({ status: 'skipped', reason: 'tag filter' });
    await putSettings(stack, { tagFilterMode: 'except', tagFilterTags: [5001] });
    expect(await outcome(tagged())).toMatchObject({ status: 'skipped', reason: 'tag filter' });
    expect(await outcome(openEpisode({ phone: '79160000012' }))).toMatchObject({ status: 'done', created: true });
    expect(adds('lead')).toHaveLength(3);
  });

  it('a Telegram client without a phone: the second episode reuses the record we created', async () => {
    await setUp();
    const { dialogId } = openEpisode({ phone: '[tg] 807892', name: 'tg_anna', transport: 'telegram' });
    const one = await finished((await close(dialogId)).requestId);
    expect(one.returnValues).toMatchObject({ entityType: 'lead', created: true, phone: null });
    expect(stack.b24.crm.leads.get(one.returnValues.entityId as number)!.PHONE).toBeUndefined();
    expect(stack.b24.calls.some((call) => call.method === 'crm.duplicate.findbycomm')).toBe(false);

    stack.c2d.reopenDialog(dialogId);
    const two = await finished((await close(dialogId)).requestId);
    expect(two.returnValues).toMatchObject({ entityType: 'lead', entityId: one.returnValues.entityId, created: false });
    expect(adds('lead')).toHaveLength(1);
    expect(comments('lead', one.returnValues.entityId as number)).toHaveLength(2);
  });

  it('reopened and closed again: a second comment on the same record, no second record', async () => {
    await setUp();
    const { dialogId } = openEpisode();
    const one = await finished((await close(dialogId)).requestId);
    stack.c2d.reopenDialog(dialogId);
    const { requestId } = await close(dialogId);
    const two = await finished(requestId);
    expect(two.returnValues).toMatchObject({ entityId: one.returnValues.entityId, created: false });
    const leadComments = comments('lead', one.returnValues.entityId as number);
    expect(leadComments).toHaveLength(2);
    expect(leadComments[1]!.comment).toContain(`#${requestId}`);
    expect(adds('lead')).toHaveLength(1);
  });

  it('duplicate webhooks (close_dialog and close_request, and retries of each) start one job', async () => {
    await setUp();
    const { dialogId } = openEpisode();
    const closed = await close(dialogId);
    expect(await stack.c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    expect(await stack.c2d.deliverWebhook(closed.closeDialog)).toEqual([200]);
    const job = await finished(closed.requestId);
    expect(await episodeJobs()).toBe(1);
    expect(comments('lead', job.returnValues.entityId as number)).toHaveLength(1);
  });

  it('the robot and the automatic handling on the same episode and record write one comment', async () => {
    await setUp();
    const { dialogId } = openEpisode();
    const job = await finished((await close(dialogId)).requestId);
    const leadId = job.returnValues.entityId as number;
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: ['crm', 'CCrmDocumentLead', `LEAD_${leadId}`] });
    const sent = await robotResult(call.eventToken);
    expect(sent.returnValues).toMatchObject({ status: 'ok', comment_id: String(job.returnValues.commentId) });
    expect(sent.logMessage).toContain('was already logged');
    expect(comments('lead', leadId)).toHaveLength(1);
  });

  it("writes the comment in the portal's language, for the closed dialog and for the Log closed dialog robot", async () => {
    await setUp({}, { b24: { languageId: 'ru' } });
    const { dialogId } = openEpisode();
    const { requestId } = await close(dialogId);
    const job = await finished(requestId);
    const [comment] = comments('lead', job.returnValues.entityId as number);
    expect(comment!.comment.split('\n')[0]).toBe(`[b]Chat2Desk[/b] обращение #${requestId} · диалог ${dialogId}`);
    expect(comment!.comment).toContain('Открыть диалог в Chat2Desk');

    const dealId = stack.b24.seedDeal({});
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: ['crm', 'CCrmDocumentDeal', `DEAL_${dealId}`] });
    const sent = await robotResult(call.eventToken);
    expect(sent.returnValues).toMatchObject({ status: 'ok' });
    const [robotComment] = comments('deal', dealId);
    expect(robotComment!.comment.split('\n')[0]).toBe(`[b]Chat2Desk[/b] обращение #${requestId} · диалог ${dialogId}`);
    // The portal's language was asked once for both.
    expect(stack.b24.calls.filter((item) => item.method === 'app.info')).toHaveLength(1);
  });

  it('episodes of one portal closing together share batch requests', async () => {
    await setUp();
    const closes = [];
    for (let i = 0; i < 10; i++) {
      const phone = `7916555${String(1000 + i)}`;
      if (i % 2 === 0) stack.b24.seedContact({ phones: [`+${phone}`] });
      closes.push(stack.c2d.closeDialog(openEpisode({ phone, name: `Client ${i}` }).dialogId));
    }
    stack.b24.resetCalls();
    await Promise.all(closes.map((closed) => stack.c2d.deliverWebhook(closed.closeRequest)));
    for (const closed of closes) expect((await finished(closed.requestId)).returnValues.status).toBe('done');
    expect(stack.b24.timelineComments).toHaveLength(10);
    // Unshared, each episode makes at least 3 requests (look-up, creation or list, comment); shared, a handful for all ten.
    expect(stack.b24.calls.filter((call) => call.method === 'batch').length).toBeLessThanOrEqual(12);
    // Besides those, the portal's language, once for all ten comments.
    expect(stack.b24.calls.filter((call) => call.method !== 'batch' && !call.method.startsWith('crm.')).map((call) => call.method)).toEqual(['app.info']);
  });

  it('nothing happens while episodes are off or for episodes closed before they were turned on', async () => {
    await setUp({ episodesEnabled: false });
    const before = openEpisode();
    await close(before.dialogId);
    expect(await episodeJobs()).toBe(0);
    const closedEarlier = openEpisode({ phone: '79160000021' });
    const early = stack.c2d.closeDialog(closedEarlier.dialogId);
    clock.advance(60_000);
    expect((await putSettings(stack, { episodesEnabled: true })).status).toBe(200);
    // Delivered (a retry) after the switch, but closed before it.
    expect(await stack.c2d.deliverWebhook(early.closeRequest)).toEqual([200]);
    expect(await episodeJobs()).toBe(0);
  });

  it('a lost answer to the creation is found by its origin, not repeated', async () => {
    await setUp();
    stack.b24.failNext('crm.lead.add', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'lost', afterRunning: true });
    const { dialogId } = openEpisode();
    const job = await finished((await close(dialogId)).requestId);
    expect(job.returnValues).toMatchObject({ entityType: 'lead', created: true });
    expect(stack.b24.crm.leads.size).toBe(1);
    expect(stack.b24.calls.filter((call) => call.method === 'crm.lead.add')).toHaveLength(1);
    expect(stack.b24.calls.some((call) => call.method === 'crm.lead.list' && JSON.stringify(call.params).includes('ORIGIN_ID'))).toBe(true);
    expect(comments('lead', job.returnValues.entityId as number)).toHaveLength(1);
  });

  it('a refused creation fails at once naming the required field', async () => {
    await setUp();
    stack.b24.requireFields('lead', ['UF_CRM_REGION']);
    const { dialogId } = openEpisode();
    const { requestId } = await close(dialogId);
    const job = await finished(requestId);
    expect(job.returnValues.status).toBe('failed');
    expect(String(job.returnValues.error)).toBe(
      'Bitrix24 refused to create the lead: the portal requires a field the app does not fill (Required field "UF_CRM_REGION" is not filled.); map it in extraFields or make it optional',
    );
    expect(job.attempts).toBe(1);
    expect(stack.b24.crm.leads.size).toBe(0);
  });

  it('a creation refused for access fails at once saying so, and creates nothing', async () => {
    await setUp();
    stack.b24.failNext('crm.lead.add', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied.' });
    const { dialogId } = openEpisode();
    const job = await finished((await close(dialogId)).requestId);
    expect(job.returnValues).toEqual({ status: 'failed', error: "Bitrix24 refused to create the lead: the app's user may not add leads (access denied)" });
    expect(job.attempts).toBe(1);
    expect(stack.b24.crm.leads.size).toBe(0);
  });

  it('extra fields copy Chat2Desk client fields into the new record', async () => {
    await setUp({
      extraFields: [
        { source: 'client.comment', field: 'COMMENTS' },
        { source: 'client.custom.12', field: 'UF_CRM_REGION' },
      ],
    });
    const { clientId, dialogId } = openEpisode();
    Object.assign(stack.c2d.account().clients.find((item) => item.id === clientId)!, { comment: 'prefers mornings', custom_fields: { 12: 'North' } });
    const job = await finished((await close(dialogId)).requestId);
    expect(stack.b24.crm.leads.get(job.returnValues.entityId as number)).toMatchObject({ COMMENTS: 'prefers mornings', UF_CRM_REGION: 'North' });
  });

  it('settings: bad episode settings are refused with a clear error and change nothing; turning on stamps the time', async () => {
    clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    const bad = await putSettings(stack, { matchOrder: ['deal', 'deal', 'contact', 'lead'], extraFields: [{ source: 'client.name', field: 'lower' }] });
    expect(bad.status).toBe(400);
    expect((await bad.json()) as { error: string }).toEqual({ error: expect.stringContaining('matchOrder must name each of deal, contact, company, lead once') });
    const on = (await (await putSettings(stack, { episodesEnabled: true })).json()) as Record<string, unknown>;
    expect(on).toMatchObject({
      episodesEnabled: true,
      episodeEntity: 'lead',
      matchOrder: ['deal', 'contact', 'company', 'lead'],
      transcript: true,
      tagFilterMode: 'all',
      gapLookbackDays: 7,
    });
    expect(Date.parse(on.episodesEnabledAt as string)).toBeGreaterThan(clock.now() - 60_000);
    const again = (await (await putSettings(stack, { episodesEnabled: true, episodesEnabledAt: '2000-01-01T00:00:00Z' })).json()) as Record<string, unknown>;
    expect(again.error).toContain('episodesEnabledAt');
  });
});

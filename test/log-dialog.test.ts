import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { C2DTag } from './fakes/chat2desk.js';
import { eventuallyOnClock, TestClock } from './support/clock.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

describe('Log closed dialog to timeline robot', () => {
  let stack: Stack;
  let clock: TestClock;
  beforeEach(async () => {
    clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  type Document = [string, string, string];
  const dealDocument = (id = stack.b24.seedDeal()): Document => ['crm', 'CCrmDocumentDeal', `DEAL_${id}`];

  async function logDialog(properties: Record<string, string | string[]>, documentId: Document = dealDocument()) {
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties, documentId });
    expect(call.status).toBe(200);
    return resultOf(call.eventToken);
  }

  /** The run's result; a retry after a lost answer or a busy comment runs when its backoff has passed by the clock. */
  function resultOf(eventToken: string, what = 'result') {
    return eventuallyOnClock(
      () => stack.server,
      clock,
      () => stack.b24.sentEvents.find((event) => event.eventToken === eventToken),
      20_000,
      what,
    );
  }

  const vip: C2DTag = { id: 5001, label: 'VIP', description: '', group_id: 7, group_name: 'Status' };

  /**
   * A closed dialog with a known story: client Anna wrote with an attachment, operator John Doe
   * (617) answered with an old-style photo, then the dialog closed 1 h 5 min 19 s after it began.
   */
  function seedClosedDialog(options: { clientText?: string; name?: string; state?: 'open' | 'closed' } = {}) {
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', name: options.name ?? 'Anna', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const clientId = client.id as number;
    const dialogId = dialog!.id as number;
    const account = stack.c2d.account();
    (account.clients.find((item) => item.id === clientId) as { tags: C2DTag[] }).tags.push(vip);
    const fromClient = stack.c2d.receiveMessage({
      clientId,
      text: options.clientText ?? 'Where is my order?',
      attachments: [{ name: 'receipt.pdf', link: 'https://files.example/receipt.pdf' }],
    }).message;
    fromClient.created = '2026-01-29T06:14:41 UTC';
    const stored = account.dialogs.find((item) => item.id === dialogId)!;
    stored.operator_id = 617;
    account.messages.push({
      ...fromClient,
      id: (fromClient.id as number) + 1,
      type: 'to_client',
      text: 'It ships today',
      operator_id: 617,
      attachments: [],
      photo: 'https://files.example/parcel.jpg',
      created: '2026-01-29T06:20:00 UTC',
    });
    stored.begin = '2026-01-29T06:14:41 UTC';
    if (options.state !== 'open') {
      stored.state = 'closed';
      stored.end = '2026-01-29T07:20:00 UTC';
    }
    stack.c2d.resetCalls();
    return { clientId, dialogId, requestId: stored.last_request_id as number };
  }

  const commentCalls = () => stack.b24.calls.filter((call) => call.method === 'crm.timeline.comment.add');

  it('writes one comment with the link, channel, operator, times, duration and tags to the deal', async () => {
    const { dialogId, requestId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    const sent = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));

    const [comment] = stack.b24.timelineComments;
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(comment).toMatchObject({ entityType: 'deal', entityId: dealId });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', comment_id: String(comment!.id), dialog_id: String(dialogId) });
    expect(sent.logMessage).toBe(`Chat2Desk dialog ${dialogId} (request ${requestId}) logged to the timeline of deal ${dealId} as comment ${comment!.id}`);
    const webApp = stack.c2d.url.replace(/\/v1$/, '');
    expect(comment!.comment.split('\n')).toEqual([
      `[b]Chat2Desk[/b] request #${requestId} · dialog ${dialogId}`,
      `[url=${webApp}/chat/all?dialogID=${dialogId}]Open the dialog in Chat2Desk[/url]`,
      'Client: Anna (+79161234567)',
      'Channel: Sales WhatsApp (whatsapp)',
      'Operator: John Doe',
      'Started: 2026-01-29 06:14:41 UTC',
      'Ended: 2026-01-29 07:20:00 UTC',
      'Duration: 1 h 5 min',
      'Tags: VIP',
    ]);
    expect(comment!.comment).not.toContain('Transcript');
    // Sent with lowercase `fields` (docs/protocols.md B10).
    expect(commentCalls().map((call) => call.params)).toEqual([{ fields: { ENTITY_ID: dealId, ENTITY_TYPE: 'deal', COMMENT: comment!.comment } }]);
  });

  it('adds the transcript when asked: every message with time, direction, text and attachment links', async () => {
    const { dialogId } = seedClosedDialog();
    const sent = await logDialog({ phone: '+7 916 123-45-67', transcript: 'Y' });
    expect(sent.returnValues).toMatchObject({ status: 'ok', dialog_id: String(dialogId) });
    const text = stack.b24.timelineComments[0]!.comment;
    expect(text.slice(text.indexOf('[b]Transcript[/b]')).split('\n')).toEqual([
      '[b]Transcript[/b] (times in UTC)',
      '2026-01-29 06:14:41 [b]Client:[/b] Where is my order?',
      '    [url=https://files.example/receipt.pdf]receipt.pdf[/url]',
      '2026-01-29 06:20:00 [b]Operator:[/b] It ships today',
      '    [url=https://files.example/parcel.jpg]photo[/url]',
    ]);
    expect(stack.c2d.calls.some((call) => call.path === '/messages' && call.query.dialog_id === String(dialogId))).toBe(true);
  });

  it('neutralises BBCode in client text, names and file links, so only our own links are live', async () => {
    const { clientId, dialogId } = seedClosedDialog({ clientText: '[url=http://evil.example]click[/url] [b]now[/b]', name: '[color=red]Boss[/color]' });
    const account = stack.c2d.account();
    (account.clients.find((item) => item.id === clientId) as { tags: C2DTag[] }).tags.push({ ...vip, id: 5002, label: '[i]x[/i]' });
    const message = account.messages.find((item) => item.type === 'from_client')!;
    message.attachments = [{ name: '[/url][url=http://evil.example]', link: 'https://files.example/a]b[c.pdf' }];
    await logDialog({ dialog_id: String(dialogId), transcript: 'Y' });

    const text = stack.b24.timelineComments[0]!.comment;
    expect(text).not.toContain('[url=http://evil.example]');
    expect(text).toContain('［url=http://evil.example］click［/url］ ［b］now［/b］');
    expect(text).toContain('Client: ［color=red］Boss［/color］ (+79161234567)');
    expect(text).toContain('Tags: VIP, ［i］x［/i］');
    expect(text).toContain('[url=https://files.example/a%5Db%5Bc.pdf]［/url］［url=http://evil.example］[/url]');
    // Every live tag is one we wrote: the dialog link and the two files.
    expect(text.match(/\[url=[^\]]*\]/g)).toEqual([
      expect.stringMatching(/^\[url=http:\/\/127\.0\.0\.1:\d+\/chat\/all\?dialogID=\d+\]$/),
      '[url=https://files.example/a%5Db%5Bc.pdf]',
      '[url=https://files.example/parcel.jpg]',
    ]);
    // Not HTML-escaped: Bitrix24 escapes HTML itself.
    expect(text).not.toContain('&');
  });

  it('writes no second comment when run again for the same dialog and document, and returns the first comment id', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    const first = await logDialog({ dialog_id: String(dialogId) }, document);
    const second = await logDialog({ phone: '79161234567' }, document);
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(commentCalls()).toHaveLength(1);
    expect(second.returnValues).toEqual({ status: 'ok', error: '', comment_id: first.returnValues.comment_id, dialog_id: String(dialogId) });
    expect(second.logMessage).toContain('was already logged');

    const otherDeal = await logDialog({ dialog_id: String(dialogId) });
    expect(stack.b24.timelineComments).toHaveLength(2);
    expect(otherDeal.returnValues.comment_id).not.toBe(first.returnValues.comment_id);
  });

  it('writes one comment when two runs for the same dialog and document arrive at once', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    const [a, b] = await Promise.all([logDialog({ dialog_id: String(dialogId) }, document), logDialog({ dialog_id: String(dialogId) }, document)]);
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect([a.returnValues.status, b.returnValues.status]).toEqual(['ok', 'ok']);
    expect(a.returnValues.comment_id).toBe(b.returnValues.comment_id);
  });

  it('an open dialog with no closed request yet writes nothing and says the dialog is still open', async () => {
    const { dialogId } = seedClosedDialog({ state: 'open' });
    const sent = await logDialog({ dialog_id: String(dialogId) });
    expect(sent.returnValues).toEqual({
      status: 'not_found',
      error: `Chat2Desk dialog ${dialogId}: the dialog is still open and has no closed request yet`,
      comment_id: '',
      dialog_id: String(dialogId),
    });
    expect(commentCalls()).toHaveLength(0);
  });

  it('logs the last closed request: a dialog that reopened gets its earlier request logged, and after it closes again a second comment', async () => {
    const { clientId, dialogId, requestId } = seedClosedDialog();
    const document = dealDocument();
    const first = await logDialog({ dialog_id: String(dialogId) }, document);
    // The client writes again: the dialog reopens with a new request, still running.
    const { requestId: second } = stack.c2d.reopenDialog(dialogId);
    // Chat2Desk says so: the inbox webhook makes the cached dialog stale, so the robot sees it open.
    expect(await stack.c2d.deliverWebhook(stack.c2d.receiveMessage({ clientId, text: 'One more thing' }).webhook)).toEqual([200]);
    const whileOpen = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(whileOpen.returnValues).toEqual(first.returnValues);
    expect(whileOpen.logMessage).toContain(`(request ${requestId}) was already logged`);
    expect(stack.c2d.calls.some((call) => call.path === '/messages' && call.query.dialog_id === String(dialogId))).toBe(true);
    expect(stack.b24.timelineComments).toHaveLength(1);

    // Chat2Desk says so (the webhook makes the cached dialog stale); closed episodes are off here, so only the robot writes.
    expect(await stack.c2d.deliverWebhook(stack.c2d.closeDialog(dialogId).closeRequest)).toEqual([200]);
    const afterClose = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(stack.b24.timelineComments).toHaveLength(2);
    expect(afterClose.returnValues.comment_id).toBe(String(stack.b24.timelineComments[1]!.id));
    expect(stack.b24.timelineComments[1]!.comment.split('\n')[0]).toBe(`[b]Chat2Desk[/b] request #${second} · dialog ${dialogId}`);
    expect(stack.b24.timelineComments[1]!.comment).not.toContain('Where is my order?');
  });

  it('after an upgrade, a comment written before episodes stands for the next episode only; a later episode gets its own', async () => {
    const { clientId, dialogId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    // What migration 0007 left for a comment the robot wrote before episodes existed.
    const now = Date.now();
    await stack.db.run(
      "insert into effects (member_id, effect_key, state, owner, lease_until, attempt_at, intent, result, created_at, updated_at) values (?, ?, 'done', null, 0, ?, '{}', ?, ?, ?)",
      stack.b24.memberId,
      `comment:${dialogId}:deal:${dealId}`,
      now,
      JSON.stringify({ commentId: 4242 }),
      now,
      now,
    );
    const first = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));
    expect(first.returnValues).toMatchObject({ status: 'ok', comment_id: '4242' });
    expect(commentCalls()).toHaveLength(0);

    stack.c2d.reopenDialog(dialogId);
    stack.c2d.receiveMessage({ clientId, text: 'Back again' });
    expect(await stack.c2d.deliverWebhook(stack.c2d.closeDialog(dialogId).closeRequest)).toEqual([200]);
    const second = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));
    expect(commentCalls()).toHaveLength(1);
    expect(second.returnValues.comment_id).toBe(String(stack.b24.timelineComments[0]!.id));
  });

  it('writes to the timeline of a lead, a contact and a company named by the document id', async () => {
    const { dialogId } = seedClosedDialog();
    const leadId = stack.b24.seedLead();
    const contactId = stack.b24.seedContact();
    const companyId = stack.b24.seedCompany();
    await logDialog({ dialog_id: String(dialogId) }, ['crm', 'CCrmDocumentLead', `LEAD_${leadId}`]);
    await logDialog({ dialog_id: String(dialogId) }, ['crm', 'CCrmDocumentContact', `CONTACT_${contactId}`]);
    await logDialog({ dialog_id: String(dialogId) }, ['crm', 'CCrmDocumentCompany', `COMPANY_${companyId}`]);
    expect(stack.b24.timelineComments.map((comment) => [comment.entityType, comment.entityId])).toEqual([
      ['lead', leadId],
      ['contact', contactId],
      ['company', companyId],
    ]);
  });

  it("sends a smart-process item's comment to dynamic_<type>, and gives Bitrix24's refusal back readably", async () => {
    const { dialogId } = seedClosedDialog();
    // The fake portal has no smart processes, so it answers OWNER_NOT_FOUND, as a portal would for a deleted item.
    const sent = await logDialog({ dialog_id: String(dialogId) }, ['crm', 'Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic', 'DYNAMIC_147_1']);
    expect(commentCalls().map((call) => call.params.fields)).toEqual([expect.objectContaining({ ENTITY_ID: 1, ENTITY_TYPE: 'dynamic_147' })]);
    expect(sent.returnValues).toMatchObject({ status: 'failed', error: 'Bitrix24 refused the timeline comment: OWNER_NOT_FOUND (Owner not found.)' });
    // A refusal leaves nothing claimed: running it again tries again (at least once: a full
    // PostgreSQL run on a loaded machine once saw a third call, its cause not found; each is refused alike).
    await logDialog({ dialog_id: String(dialogId) }, ['crm', 'Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic', 'DYNAMIC_147_1']);
    expect(commentCalls().length).toBeGreaterThanOrEqual(2);
  });

  it('fails clearly on a document that has no CRM timeline, and writes nothing', async () => {
    const { dialogId } = seedClosedDialog();
    const sent = await logDialog({ dialog_id: String(dialogId) }, ['lists', 'BizprocDocument', '42']);
    expect(sent.returnValues).toMatchObject({
      status: 'failed',
      error: 'the timeline comment can go only to a CRM lead, deal, contact, company or smart-process item; this workflow runs on lists / BizprocDocument / 42',
    });
    expect(commentCalls()).toHaveLength(0);
  });

  const listCalls = () => stack.b24.calls.filter((call) => call.method === 'crm.timeline.comment.list');
  const lostAnswer = { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal error' };

  it('settles a write whose answer was lost by finding the comment on the timeline, and writes no second one', async () => {
    const { dialogId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    // Bitrix24 writes the comment, then the answer is lost.
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    const sent = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));
    expect(stack.b24.timelineComments).toHaveLength(1);
    const [comment] = stack.b24.timelineComments;
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', comment_id: String(comment!.id), dialog_id: String(dialogId) });
    expect(commentCalls()).toHaveLength(1);
    // Looked for on the deal's own timeline (docs/protocols.md B10).
    expect(listCalls().map((call) => call.params.filter)).toEqual([{ ENTITY_ID: dealId, ENTITY_TYPE: 'deal' }]);
    // Recorded: running it again neither looks nor writes.
    const again = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));
    expect(again.returnValues.comment_id).toBe(String(comment!.id));
    expect(commentCalls()).toHaveLength(1);
    expect(listCalls()).toHaveLength(1);
  });

  it('writes the comment once when a write whose answer was lost is not on the timeline', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    // The write fails without reaching the timeline: only looking tells.
    stack.b24.failNext('crm.timeline.comment.add', lostAnswer);
    const sent = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(sent.returnValues.status).toBe('ok');
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(sent.returnValues.comment_id).toBe(String(stack.b24.timelineComments[0]!.id));
    // add (lost), list (not there), add.
    const order = stack.b24.calls.filter((call) => call.method.startsWith('crm.timeline.comment.')).map((call) => call.method);
    expect(order).toEqual(['crm.timeline.comment.add', 'crm.timeline.comment.list', 'crm.timeline.comment.add']);
  });

  it('fails saying the comment may be on the timeline when the timeline cannot be read, and writes no second one', async () => {
    const { dialogId, requestId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    stack.b24.failNext('crm.timeline.comment.list', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied.' });
    const sent = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));
    expect(sent.returnValues).toMatchObject({ status: 'failed', error: `the timeline comment for Chat2Desk request ${requestId} may already be on the deal ${dealId}` });
    expect(commentCalls()).toHaveLength(1);
    expect(stack.b24.timelineComments).toHaveLength(1);
  });

  it('reports a comment whose answer was lost as logged when the run is given up at its deadline, having found it', async () => {
    const { dialogId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    const writing = stack.b24.hold({ rest: 'crm.timeline.comment.add' });
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: dealDocument(dealId) });
    await writing.arrived;
    // Out of time while the write is under way: the lost answer is given up at once, settling first.
    await stack.db.run('update jobs set deadline_at = ? where event_token = ?', clock.now() - 1, call.eventToken);
    writing.release();
    const sent = await resultOf(call.eventToken);
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', comment_id: String(stack.b24.timelineComments[0]!.id), dialog_id: String(dialogId) });
    expect(commentCalls()).toHaveLength(1);
    expect(listCalls()).toHaveLength(1);
  });

  it('settles a comment write whose answer was lost when the retry then fails on a Chat2Desk refusal, and reports it logged', async () => {
    const { dialogId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    const writing = stack.b24.hold({ rest: 'crm.timeline.comment.add' });
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    const properties = { dialog_id: String(dialogId), transcript: 'Y' };
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties, documentId: dealDocument(dealId) });
    await writing.arrived;
    // The retry's transcript read is refused, not for load: the run fails, but its write is in doubt.
    stack.c2d.failNext({ method: 'GET', path: '/messages' }, { status: 400, body: { status: 'error', message: 'dialog is archived' } });
    writing.release();
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 20_000, 'result');
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', comment_id: String(stack.b24.timelineComments[0]!.id), dialog_id: String(dialogId) });
    expect(commentCalls()).toHaveLength(1);
  });

  it('pages back through a long timeline to find the lost comment among others', async () => {
    const { dialogId, requestId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    // While the run waits to retry, people write 120 comments on the deal, one naming a request whose id starts the same.
    const hold = stack.b24.hold({ rest: 'crm.timeline.comment.list' });
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: dealDocument(dealId) });
    await hold.arrived;
    const auth = stack.b24.issueAuth(1);
    // In batches of 40: the portal's rate limit counts a batch once (docs/protocols.md B3).
    for (let from = 0; from < 120; from += 40) {
      const cmd = Object.fromEntries(
        Array.from({ length: 40 }, (_, j) => {
          const i = from + j;
          const comment = i === 0 ? `[b]Chat2Desk[/b] request #${requestId}0 · dialog ${dialogId}` : `note ${i}`;
          return [`c${i}`, `crm.timeline.comment.add?${new URLSearchParams({ 'fields[ENTITY_ID]': String(dealId), 'fields[ENTITY_TYPE]': 'deal', 'fields[COMMENT]': comment })}`];
        }),
      );
      const response = await fetch(`${stack.b24.clientEndpoint}batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ auth: auth.access_token, halt: 1, cmd }),
      });
      expect(response.status).toBe(200);
    }
    expect(stack.b24.timelineComments).toHaveLength(121);
    hold.release();
    const sent = await resultOf(call.eventToken);
    const ours = stack.b24.timelineComments.filter((comment) => comment.comment.startsWith(`[b]Chat2Desk[/b] request #${requestId} `));
    expect(ours).toHaveLength(1);
    expect(sent.returnValues).toMatchObject({ status: 'ok', comment_id: String(ours[0]!.id) });
    expect(listCalls().map((item) => item.params.start)).toEqual([0, 50, 100]);
  });

  it('writes one comment when two runs arrive at once and the first write loses its answer', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    stack.b24.failNext('crm.timeline.comment.add', { ...lostAnswer, afterRunning: true });
    const [a, b] = await Promise.all([logDialog({ dialog_id: String(dialogId) }, document), logDialog({ dialog_id: String(dialogId) }, document)]);
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(commentCalls()).toHaveLength(1);
    const id = String(stack.b24.timelineComments[0]!.id);
    expect([a.returnValues, b.returnValues]).toEqual([
      { status: 'ok', error: '', comment_id: id, dialog_id: String(dialogId) },
      { status: 'ok', error: '', comment_id: id, dialog_id: String(dialogId) },
    ]);
  });

  it('a run finding another live run writing the same comment retries later instead of writing, then returns that comment', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    const writing = stack.b24.hold({ rest: 'crm.timeline.comment.add' });
    const first = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: document });
    await writing.arrived;
    const second = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: document });
    const lastError = (eventToken: string) => stack.db.row<{ last_error: string | null }>('select last_error from jobs where event_token = ?', eventToken);
    // Observed, not slept for: the second run's attempt ended saying why, and it is queued again.
    await eventually(async () => String((await lastError(second.eventToken))!.last_error).includes('another run is writing the timeline comment'), 10_000, 'busy');
    writing.release();
    const [a, b] = await Promise.all([first, second].map((call) => resultOf(call.eventToken, 'results')));
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(commentCalls()).toHaveLength(1);
    expect(a!.returnValues.comment_id).toBe(String(stack.b24.timelineComments[0]!.id));
    expect(b!.returnValues).toMatchObject({ status: 'ok', comment_id: a!.returnValues.comment_id });
    expect(b!.logMessage).toContain('was already logged');
  });

  it('finds the dialog by a phone field given as an array', async () => {
    const { dialogId } = seedClosedDialog();
    const sent = await logDialog({ phone: ['not a phone', '8 (916) 123-45-67'] });
    expect(sent.returnValues).toMatchObject({ status: 'ok', dialog_id: String(dialogId) });
    expect(stack.b24.timelineComments).toHaveLength(1);
  });

  it('answers not_found for an unknown dialog or a phone without a client, and writes nothing', async () => {
    const byId = await logDialog({ dialog_id: '999999' });
    expect(byId.returnValues).toEqual({ status: 'not_found', error: 'Chat2Desk dialog 999999 not found', comment_id: '', dialog_id: '' });
    const byPhone = await logDialog({ phone: '+7 916 000-00-00' });
    expect(byPhone.returnValues).toMatchObject({ status: 'not_found', error: 'the client has no Chat2Desk dialog' });
    expect(commentCalls()).toHaveLength(0);
  });
});

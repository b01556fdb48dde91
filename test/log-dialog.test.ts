import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatC2DTime, type C2DTag } from './fakes/chat2desk.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

describe('Log closed dialog to timeline robot', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  type Document = [string, string, string];
  const dealDocument = (id = stack.b24.seedDeal()): Document => ['crm', 'CCrmDocumentDeal', `DEAL_${id}`];

  async function logDialog(properties: Record<string, string | string[]>, documentId: Document = dealDocument()) {
    const call = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties, documentId });
    expect(call.status).toBe(200);
    return eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
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
    return { clientId, dialogId };
  }

  const commentCalls = () => stack.b24.calls.filter((call) => call.method === 'crm.timeline.comment.add');

  it('writes one comment with the link, channel, operator, times, duration and tags to the deal', async () => {
    const { dialogId } = seedClosedDialog();
    const dealId = stack.b24.seedDeal();
    const sent = await logDialog({ dialog_id: String(dialogId) }, dealDocument(dealId));

    const [comment] = stack.b24.timelineComments;
    expect(stack.b24.timelineComments).toHaveLength(1);
    expect(comment).toMatchObject({ entityType: 'deal', entityId: dealId });
    expect(sent.returnValues).toEqual({ status: 'ok', error: '', comment_id: String(comment!.id), dialog_id: String(dialogId) });
    expect(sent.logMessage).toBe(`Chat2Desk dialog ${dialogId} logged to the timeline of deal ${dealId} as comment ${comment!.id}`);
    const webApp = stack.c2d.url.replace(/\/v1$/, '');
    expect(comment!.comment.split('\n')).toEqual([
      `[b]Chat2Desk dialog ${dialogId}[/b] (closed)`,
      `[url=${webApp}/chat/all?dialogID=${dialogId}]Open the dialog in Chat2Desk[/url]`,
      'Client: Anna (79161234567)',
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
    expect(text).toContain('Client: ［color=red］Boss［/color］ (79161234567)');
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

  it('logs an open dialog too, and says it was still open', async () => {
    const { dialogId } = seedClosedDialog({ state: 'open' });
    stack.c2d.account().dialogs.find((item) => item.id === dialogId)!.begin = formatC2DTime(Date.now() - 90 * 60_000);
    const sent = await logDialog({ dialog_id: String(dialogId) });
    expect(sent.returnValues.status).toBe('ok');
    const lines = stack.b24.timelineComments[0]!.comment.split('\n');
    expect(lines[0]).toBe(`[b]Chat2Desk dialog ${dialogId}[/b] (open: still in progress when logged)`);
    expect(lines).toContain('Ended: —');
    expect(lines.find((line) => line.startsWith('Duration: '))).toMatch(/^Duration: 1 h (30|31) min so far$/);
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
    // A refusal leaves nothing claimed: running it again tries again.
    await logDialog({ dialog_id: String(dialogId) }, ['crm', 'Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic', 'DYNAMIC_147_1']);
    expect(commentCalls()).toHaveLength(2);
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

  it('does not repeat the comment blindly when Bitrix24 gives no usable answer, and a later run writes it', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    stack.b24.failNext('crm.timeline.comment.add', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal error' });
    const lost = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(lost.returnValues.status).toBe('failed');
    expect(String(lost.returnValues.error)).toContain('the comment may already be on the timeline and is not written a second time');
    expect(commentCalls()).toHaveLength(1);

    const again = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(again.returnValues.status).toBe('ok');
    expect(stack.b24.timelineComments).toHaveLength(1);
  });

  it('never writes a second comment while the first write has no known outcome, even for a run already waiting', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    stack.b24.failNext('crm.timeline.comment.add', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal error' });
    const [first, second] = await Promise.all([logDialog({ dialog_id: String(dialogId) }, document), logDialog({ dialog_id: String(dialogId) }, document)]);
    expect([first.returnValues.status, second.returnValues.status]).toEqual(['failed', 'failed']);
    expect(commentCalls()).toHaveLength(1);
    expect(stack.b24.timelineComments).toHaveLength(0);
  });

  it('a call accepted before a write became unknown does not write on its retry', async () => {
    const { dialogId } = seedClosedDialog();
    const document = dealDocument();
    // B (with transcript) is accepted first; its first attempt fails transiently before it claims
    // (all five of the Chat2Desk client's tries), and only after A's write got no usable answer.
    stack.c2d.failNext({ method: 'GET', path: '/messages' }, { status: 500, body: { status: 'error', message: 'Internal error' } }, 5);
    const bFirstTry = stack.c2d.holdNext({ method: 'GET', path: '/messages' });
    stack.b24.failNext('crm.timeline.comment.add', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal error' });
    const bCall = await stack.b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId), transcript: 'Y' }, documentId: document });
    expect(bCall.status).toBe(200);
    await bFirstTry.arrived;
    const a = await logDialog({ dialog_id: String(dialogId) }, document);
    expect(a.returnValues.status).toBe('failed');
    expect(String(a.returnValues.error)).toContain('the comment may already be on the timeline');
    bFirstTry.release();
    const b = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === bCall.eventToken), 30_000, "B's result");
    const bJob = stack.server.database.sqlite.prepare('select attempts from jobs where event_token = ?').get(bCall.eventToken) as { attempts: number };
    expect(bJob.attempts).toBe(2); // the answer came on B's retry
    expect(b.returnValues.status).toBe('failed');
    expect(commentCalls()).toHaveLength(1);
  }, 60_000);

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

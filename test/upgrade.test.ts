import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';
import { TEST_DATABASE } from './support/databases.js';
import { databaseBefore0006, insertSendInDoubt } from './support/upgrade.js';

// SQLite files written by an older version; PostgreSQL's migrations (src/db/migrations-pg) begin at today's schema.
describe.skipIf(TEST_DATABASE !== 'sqlite')('upgrading a live database in place', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  it('carries a send in doubt and the Log robot claims over: nothing is sent or written twice', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const { b24, c2d } = stack;
    const { client, dialog } = c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'closed' });
    const clientId = client.id as number;
    const dialogId = dialog!.id as number;
    // Today's schema, with the installed portal; the server stops for the deploy.
    const old = await databaseBefore0006(stack);
    expect(old.prepare("select count(*) as n from sqlite_master where name = 'timeline_logs'").get()).toEqual({ n: 1 });

    // 1. A send whose POST /messages Chat2Desk stored, the answer lost in the crash before the deploy.
    const now = Date.now();
    const text = 'sent before the upgrade';
    const { eventToken, publicId } = insertSendInDoubt(old, stack, { clientId, text, now });
    const stored = await fetch(`${c2d.url}/messages`, {
      method: 'POST',
      headers: { authorization: c2d.token, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: clientId, text, external_id: `b24-${publicId}` }),
    });
    const messageId = ((await stored.json()) as { data: { message_id: number } }).data.message_id;

    // 2. The Log robot: a comment written (its id known) on one deal, a write of unknown outcome on
    // another whose comment did reach the timeline.
    const [writtenDeal, unknownDeal] = [b24.seedDeal(), b24.seedDeal()];
    const auth = b24.issueAuth(1);
    const addComment = async (dealId: number) => {
      const response = await fetch(`${b24.clientEndpoint}crm.timeline.comment.add`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          auth: auth.access_token,
          fields: { ENTITY_ID: dealId, ENTITY_TYPE: 'deal', COMMENT: `[b]Chat2Desk dialog ${dialogId}[/b] (closed)\nwritten before the upgrade` },
        }),
      });
      return ((await response.json()) as { result: number }).result;
    };
    const [writtenComment, unknownComment] = [await addComment(writtenDeal), await addComment(unknownDeal)];
    const timelineLog = old.prepare('insert into timeline_logs (member_id, dialog_id, document_key, comment_id, created_at, unknown_since) values (?, ?, ?, ?, ?, ?)');
    timelineLog.run(b24.memberId, dialogId, `deal:${writtenDeal}`, writtenComment, now - 60_000, null);
    timelineLog.run(b24.memberId, dialogId, `deal:${unknownDeal}`, null, now - 60_000, now - 59_000);
    old.close();
    b24.resetCalls();
    c2d.resetCalls();

    // The new version starts on that file: every migration, then the jobs in doubt first.
    stack.server = await startServer(stack.config, createLogger('warn'), { hostname: '127.0.0.1', reportLingerMs: 50 });
    const event = await eventually(() => b24.sentEvents.find((item) => item.eventToken === eventToken), 20_000, 'result of the send in doubt');
    expect(event.returnValues).toMatchObject({ status: 'sent', message_id: String(messageId), client_id: String(clientId) });
    expect(c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages')).toHaveLength(0);
    expect(c2d.account().messages.filter((message) => message.text === text)).toHaveLength(1);

    // The Log robot run again on both deals writes no second comment.
    for (const [dealId, commentId] of [
      [writtenDeal, writtenComment],
      [unknownDeal, unknownComment],
    ] as const) {
      const call = await b24.callRobot({ code: 'c2d_log_dialog', properties: { dialog_id: String(dialogId) }, documentId: ['crm', 'CCrmDocumentDeal', `DEAL_${dealId}`] });
      const logged = await eventually(() => b24.sentEvents.find((item) => item.eventToken === call.eventToken), 20_000, 'log result');
      expect(logged.returnValues).toMatchObject({ status: 'ok', comment_id: String(commentId) });
    }
    expect(b24.calls.filter((call) => call.method === 'crm.timeline.comment.add')).toHaveLength(0);
    expect(b24.timelineComments).toHaveLength(2);

    // Where the old rows went (migration 0007).
    expect(await stack.db.row("select count(*) as n from sqlite_master where name = 'timeline_logs'")).toEqual({ n: 0 });
    expect(await stack.db.rows('select effect_key as key, state, result from effects order by effect_key')).toEqual([
      { key: `comment:${dialogId}:deal:${writtenDeal}`, state: 'done', result: JSON.stringify({ commentId: writtenComment }) },
      { key: `comment:${dialogId}:deal:${writtenDeal}:episode`, state: 'done', result: expect.stringMatching(/^\{"requestId":\d+\}$/) },
      { key: `comment:${dialogId}:deal:${unknownDeal}`, state: 'done', result: JSON.stringify({ commentId: unknownComment }) },
      // The old comment stands for the episode the robot logged first after the upgrade (src/activities/log-dialog.ts).
      { key: `comment:${dialogId}:deal:${unknownDeal}:episode`, state: 'done', result: expect.stringMatching(/^\{"requestId":\d+\}$/) },
      { key: `run:${publicId}:client`, state: 'done', result: JSON.stringify({ clientId, writeFirst: false, route: null }) },
      { key: `run:${publicId}:message`, state: 'done', result: expect.stringContaining(`"message_id":${messageId}`) },
    ]);
  });

  it('does not take an operator message for the lost send: the message is sent once and its own id reported', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const { b24, c2d } = stack;
    const { client } = c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const clientId = client.id as number;
    // An operator's reply to the client, before the robot call: no external_id of ours on it.
    const operatorReply = await fetch(`${c2d.url}/messages`, {
      method: 'POST',
      headers: { authorization: c2d.token, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: clientId, text: 'an operator reply' }),
    });
    const operatorMessageId = ((await operatorReply.json()) as { data: { message_id: number } }).data.message_id;

    // Today's schema, and a send marked attempted whose POST /messages never reached Chat2Desk (the crash came first).
    const old = await databaseBefore0006(stack);
    const text = 'lost in the crash before the upgrade';
    const { eventToken } = insertSendInDoubt(old, stack, { clientId, text, now: Date.now() });
    old.close();
    c2d.resetCalls();

    stack.server = await startServer(stack.config, createLogger('warn'), { hostname: '127.0.0.1', reportLingerMs: 50 });
    const event = await eventually(() => b24.sentEvents.find((item) => item.eventToken === eventToken), 20_000, 'result of the send in doubt');
    const sent = c2d.account().messages.filter((message) => message.text === text);
    expect(sent).toHaveLength(1);
    expect(event.returnValues).toMatchObject({ status: 'sent', message_id: String(sent[0]?.id), client_id: String(clientId) });
    expect(event.returnValues).not.toMatchObject({ message_id: String(operatorMessageId) });
  });
});

import { createHash, randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

const migrations = fileURLToPath(new URL('../src/db/migrations', import.meta.url));

/** A migrations folder holding only 0000–0005: the schema servers run today. */
function todaysMigrations(dir: string): string {
  const folder = join(dir, 'migrations-0005');
  mkdirSync(join(folder, 'meta'), { recursive: true });
  const journal = JSON.parse(readFileSync(join(migrations, 'meta', '_journal.json'), 'utf8')) as { entries: Array<{ tag: string }> };
  journal.entries = journal.entries.filter((entry) => entry.tag.slice(0, 4) <= '0005');
  expect(journal.entries.map((entry) => entry.tag.slice(0, 4))).toEqual(['0000', '0001', '0002', '0003', '0004', '0005']);
  writeFileSync(join(folder, 'meta', '_journal.json'), JSON.stringify(journal));
  for (const file of readdirSync(migrations).filter((name) => name.endsWith('.sql') && name.slice(0, 4) <= '0005')) copyFileSync(join(migrations, file), join(folder, file));
  return folder;
}

describe('upgrading a live database in place', () => {
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
    // The installed portal as today's server stored it; the server stops for the deploy.
    await stack.server.close();
    const file = join(stack.dir, 'app.db');
    const current = join(stack.dir, 'installed.db');
    for (const suffix of ['', '-wal', '-shm']) rmSync(current + suffix, { force: true });
    const installed = new Database(file);
    installed.prepare('vacuum into ?').run(current);
    installed.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });

    // Today's schema, with today's in-flight work.
    const old = new Database(file);
    migrate(drizzle(old), { migrationsFolder: todaysMigrations(stack.dir) });
    expect(old.prepare("select count(*) as n from sqlite_master where name = 'timeline_logs'").get()).toEqual({ n: 1 });
    old.prepare('attach ? as installed').run(current);
    for (const table of ['portals', 'c2d_webhooks', 'c2d_accounts']) old.prepare(`insert into main.${table} select * from installed.${table}`).run();
    old.prepare('detach installed').run();

    // 1. A send whose POST /messages Chat2Desk stored, the answer lost in the crash before the deploy.
    const now = Date.now();
    const publicId = randomUUID();
    const text = 'sent before the upgrade';
    const { eventToken } = b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text } });
    const checkpoint = { clientId, writeFirst: false, sendAttempted: true, attemptAt: now - 5_000, textDigest: createHash('sha256').update(text).digest('hex') };
    old
      .prepare(
        `insert into jobs (public_id, member_id, event_token, robot_code, document_id, properties, state, attempts, run_at, lease_until, deadline_at, confirmed_at, checkpoint, created_at, updated_at)
         values (?, ?, ?, 'c2d_send_message', ?, ?, 'running', 1, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        publicId,
        b24.memberId,
        eventToken,
        JSON.stringify(['crm', 'CCrmDocumentDeal', 'DEAL_1']),
        JSON.stringify({ phone: '79161234567', text }),
        now - 6_000,
        now + 600_000,
        now + 3_600_000,
        now - 6_000,
        JSON.stringify(checkpoint),
        now - 6_000,
        now - 5_000,
      );
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
    const database = stack.server.database.sqlite;
    expect(database.prepare("select count(*) as n from sqlite_master where name = 'timeline_logs'").get()).toEqual({ n: 0 });
    expect(database.prepare('select effect_key as key, state, result from effects order by effect_key').all()).toEqual([
      { key: `comment:${dialogId}:deal:${writtenDeal}`, state: 'done', result: JSON.stringify({ commentId: writtenComment }) },
      { key: `comment:${dialogId}:deal:${unknownDeal}`, state: 'done', result: JSON.stringify({ commentId: unknownComment }) },
      { key: `run:${publicId}:client`, state: 'done', result: JSON.stringify({ clientId, writeFirst: false, route: null }) },
      { key: `run:${publicId}:message`, state: 'done', result: expect.stringContaining(`"message_id":${messageId}`) },
    ]);
  });
});

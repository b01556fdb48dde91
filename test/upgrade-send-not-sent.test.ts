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

/** A migrations folder holding only 0000–0005: the schema servers ran before issue 7. */
function migrationsBefore0006(dir: string): string {
  const folder = join(dir, 'migrations-0005');
  mkdirSync(join(folder, 'meta'), { recursive: true });
  const journal = JSON.parse(readFileSync(join(migrations, 'meta', '_journal.json'), 'utf8')) as { entries: Array<{ tag: string }> };
  journal.entries = journal.entries.filter((entry) => entry.tag.slice(0, 4) <= '0005');
  writeFileSync(join(folder, 'meta', '_journal.json'), JSON.stringify(journal));
  for (const file of readdirSync(migrations).filter((name) => name.endsWith('.sql') && name.slice(0, 4) <= '0005')) copyFileSync(join(migrations, file), join(folder, file));
  return folder;
}

describe('upgrading a live database with a send in doubt that never reached Chat2Desk', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
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

    // Today's schema with the installed portal, as in test/upgrade.test.ts.
    await stack.server.close();
    const file = join(stack.dir, 'app.db');
    const installedCopy = join(stack.dir, 'installed.db');
    const installed = new Database(file);
    installed.prepare('vacuum into ?').run(installedCopy);
    installed.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
    const old = new Database(file);
    migrate(drizzle(old), { migrationsFolder: migrationsBefore0006(stack.dir) });
    old.prepare('attach ? as installed').run(installedCopy);
    for (const table of ['portals', 'c2d_webhooks', 'c2d_accounts']) old.prepare(`insert into main.${table} select * from installed.${table}`).run();
    old.prepare('detach installed').run();

    // A send marked attempted whose POST /messages never reached Chat2Desk (the crash came first).
    const now = Date.now();
    const publicId = randomUUID();
    const text = 'lost in the crash before the upgrade';
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

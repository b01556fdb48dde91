import { createHash, randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import type { Stack } from './stack.js';

const migrations = fileURLToPath(new URL('../../src/db/migrations', import.meta.url));

/** A migrations folder holding only 0000–0005: the schema servers ran before issue 7. */
export function migrationsBefore0006(dir: string): string {
  const folder = join(dir, 'migrations-0005');
  mkdirSync(join(folder, 'meta'), { recursive: true });
  const journal = JSON.parse(readFileSync(join(migrations, 'meta', '_journal.json'), 'utf8')) as { entries: Array<{ tag: string }> };
  journal.entries = journal.entries.filter((entry) => entry.tag.slice(0, 4) <= '0005');
  if (journal.entries.map((entry) => entry.tag.slice(0, 4)).join() !== '0000,0001,0002,0003,0004,0005') throw new Error('migrations 0000-0005 are not all there');
  writeFileSync(join(folder, 'meta', '_journal.json'), JSON.stringify(journal));
  for (const file of readdirSync(migrations).filter((name) => name.endsWith('.sql') && name.slice(0, 4) <= '0005')) copyFileSync(join(migrations, file), join(folder, file));
  return folder;
}

/**
 * Stops the stack's server and rebuilds its database file with the schema of migrations 0000–0005,
 * keeping the installed portal (and its Chat2Desk connection): a server about to be updated in
 * place. The caller adds the old rows in flight, closes the handle and starts the new server.
 */
export async function databaseBefore0006(stack: Stack): Promise<Database.Database> {
  await stack.server.close();
  const file = join(stack.dir, 'app.db');
  const installedCopy = join(stack.dir, 'installed.db');
  for (const suffix of ['', '-wal', '-shm']) rmSync(installedCopy + suffix, { force: true });
  const installed = new Database(file);
  installed.prepare('vacuum into ?').run(installedCopy);
  installed.close();
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  const old = new Database(file);
  migrate(drizzle(old), { migrationsFolder: migrationsBefore0006(stack.dir) });
  old.prepare('attach ? as installed').run(installedCopy);
  // The old schema's columns only: later migrations add columns to these tables.
  for (const table of ['portals', 'c2d_webhooks', 'c2d_accounts']) {
    const columns = (old.prepare(`pragma main.table_info(${table})`).all() as Array<{ name: string }>).map((column) => `"${column.name}"`).join(', ');
    old.prepare(`insert into main.${table} (${columns}) select ${columns} from installed.${table}`).run();
  }
  old.prepare('detach installed').run();
  return old;
}

/**
 * A running Send message job as the code before issue 7 left it after its POST /messages was tried
 * (checkpoint `sendAttempted`), five seconds ago. Returns its event token and public id (the
 * external_id it sent was `b24-<public id>`).
 */
export function insertSendInDoubt(old: Database.Database, stack: Stack, send: { clientId: number; text: string; now: number }): { eventToken: string; publicId: string } {
  const { now, text, clientId } = send;
  const publicId = randomUUID();
  const { eventToken } = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text } });
  const checkpoint = { clientId, writeFirst: false, sendAttempted: true, attemptAt: now - 5_000, textDigest: createHash('sha256').update(text).digest('hex') };
  old
    .prepare(
      `insert into jobs (public_id, member_id, event_token, robot_code, document_id, properties, state, attempts, run_at, lease_until, deadline_at, confirmed_at, checkpoint, created_at, updated_at)
       values (?, ?, ?, 'c2d_send_message', ?, ?, 'running', 1, ?, ?, ?, ?, ?, ?, ?)`,
    )
    .run(
      publicId,
      stack.b24.memberId,
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
  return { eventToken, publicId };
}

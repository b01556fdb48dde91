import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { openDatabase } from '../src/db/database.js';
import { JobStore } from '../src/db/jobs.js';
import { TEST_DATABASE } from './support/databases.js';

const migrations = fileURLToPath(new URL('../src/db/migrations', import.meta.url));

/** A database file as the server before job kinds (migration 0005) left it. */
function databaseBeforeKinds(file: string, dir: string): Database.Database {
  const folder = join(dir, 'migrations');
  cpSync(migrations, folder, { recursive: true });
  const journalFile = join(folder, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: Array<{ tag: string }> };
  journal.entries = journal.entries.slice(
    0,
    journal.entries.findIndex((entry) => entry.tag === '0006_job_kinds'),
  );
  writeFileSync(journalFile, JSON.stringify(journal));
  const sqlite = new Database(file);
  migrate(drizzle(sqlite), { migrationsFolder: folder });
  return sqlite;
}

// SQLite files written by an older version; PostgreSQL's migrations (src/db/migrations-pg) begin at today's schema.
describe.skipIf(TEST_DATABASE !== 'sqlite')('upgrading a live database to job kinds', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'c2d-b24-migrate-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('carries robot jobs in flight over: a repeated event token is still a duplicate (checkpoints move into the ledger: test/upgrade.test.ts)', async () => {
    const file = join(dir, 'app.db');
    const old = databaseBeforeKinds(file, dir);
    const insert = old.prepare(
      `insert into jobs (public_id, member_id, event_token, robot_code, document_id, properties, state, attempts, run_at, deadline_at, checkpoint, created_at, updated_at)
       values (?, 'portal', ?, 'c2d_send_message', '["crm","CCrmDocumentDeal","DEAL_1"]', '{"phone":"79161234567","text":"hi"}', ?, ?, 1000, 99999999999999, ?, 900, 1000)`,
    );
    insert.run('public-1', 'token-running', 'running', 1, '{"attemptAt":950}');
    insert.run('public-2', 'token-queued', 'queued', 0, '{}');
    old.close();

    const database = openDatabase(file);
    try {
      const rows = database.sqlite.prepare('select kind, dedup_key, event_token, input, state, started_at from jobs order by id').all();
      expect(rows).toEqual([
        {
          kind: 'robot',
          dedup_key: 'token-running',
          event_token: 'token-running',
          input: '{"phone":"79161234567","text":"hi"}',
          state: 'running',
          started_at: 1000,
        },
        {
          kind: 'robot',
          dedup_key: 'token-queued',
          event_token: 'token-queued',
          input: '{"phone":"79161234567","text":"hi"}',
          state: 'queued',
          started_at: null,
        },
      ]);
      const jobs = new JobStore(database, systemClock);
      const repeated = await jobs.enqueue({
        kind: 'robot',
        memberId: 'portal',
        input: {},
        dedupKey: 'token-running',
        robot: { eventToken: 'token-running', robotCode: 'c2d_send_message', documentId: [] },
        deadlineAt: Date.now() + 60_000,
        awaitsConfirmation: true,
      });
      expect(repeated).toEqual({ job: { id: 1 }, duplicate: true });
      expect(await jobs.requeueInterrupted()).toBe(1);
    } finally {
      database.close();
    }
  });
});

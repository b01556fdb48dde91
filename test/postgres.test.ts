import { readFileSync } from 'node:fs';
import { getTableConfig as pgTableConfig } from 'drizzle-orm/pg-core';
import { getTableConfig as sqliteTableConfig } from 'drizzle-orm/sqlite-core';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { openPostgres, type PostgresHandle } from '../src/db/database.js';
import { JobStore, UnconfirmedLimitReached } from '../src/db/jobs.js';
import * as sqliteSchema from '../src/db/schema.js';
import * as pgSchema from '../src/db/schema-pg.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { systemClock } from '../src/clock.js';
import { emptyDatabase, TEST_DATABASE } from './support/databases.js';
import { robotJob } from './support/jobs.js';
import { APP_SECRET } from './support/stack.js';

// The run's PostgreSQL is there in the postgres project only (vitest.config.ts).
describe.skipIf(TEST_DATABASE !== 'postgres')('PostgreSQL as the database', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('is selected by a postgres:// DATABASE_URL, and refused without APP_SECRET', () => {
    const url = 'postgres://app:secret@db.internal:5432/app';
    expect(() => loadConfig({ DATABASE_URL: url })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_URL: url })).toThrow('APP_SECRET: required when DATABASE_URL is a PostgreSQL URL');
    expect(loadConfig({ DATABASE_URL: url, APP_SECRET })).toMatchObject({ postgresUrl: url });
    expect(loadConfig({ DATABASE_URL: 'file:./data/app.db' })).toMatchObject({ postgresUrl: undefined, databaseFile: './data/app.db' });
    expect(() => loadConfig({ DATABASE_URL: 'mysql://app@db/app' })).toThrow('DATABASE_URL');
  });

  it('stores robot calls under their bound on a database whose default isolation is stricter than READ COMMITTED', async () => {
    // The bound counts what other processes committed before its lock (src/db/migrations-pg 0004),
    // which only READ COMMITTED shows; the server's connections set it whatever the database says.
    const database = await emptyDatabase();
    cleanups.push(database.drop);
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    await admin.query(`alter database ${new URL(database.url).pathname.slice(1)} set default_transaction_isolation = 'repeatable read'`);
    await admin.end();
    const handle = await openPostgres(database.url);
    cleanups.push(() => handle.close());
    expect((await handle.pool.query('show transaction_isolation')).rows[0].transaction_isolation).toBe('read committed');
    const jobs = new JobStore(handle, systemClock);
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    const answers = await Promise.allSettled(['a', 'b', 'c'].map((token) => jobs.enqueue(call(token), { maxConfirming: 2 })));
    expect(answers.map((answer) => answer.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect((answers[2] as PromiseRejectedResult).reason).toBeInstanceOf(UnconfirmedLimitReached);
  });

  it('has the same tables, columns and indexes as the SQLite schema (schema-pg.ts mirrors schema.ts)', () => {
    const shape = (config: { name: string; columns: Array<{ name: string; notNull: boolean; primary: boolean }>; indexes: Array<{ config: { name?: string } }> }) => ({
      name: config.name,
      columns: config.columns.map((column) => [column.name, column.notNull, column.primary]).sort(),
      indexes: config.indexes.map((index) => index.config.name).sort(),
    });
    const tables = <T>(schema: Record<string, unknown>, read: (table: never) => T) =>
      Object.values(schema)
        .filter((value) => typeof value === 'object' && value !== null && Symbol.for('drizzle:Name') in value)
        .map((table) => read(table as never));
    const sqliteTables = tables(sqliteSchema, (table) => shape(sqliteTableConfig(table) as never));
    const pgTables = tables(pgSchema, (table) => shape(pgTableConfig(table) as never));
    expect(pgTables.sort((a, b) => a.name.localeCompare(b.name))).toEqual(sqliteTables.sort((a, b) => a.name.localeCompare(b.name)));
  });

  it('is migrated once when several processes start together', async () => {
    const database = await emptyDatabase();
    cleanups.push(database.drop);
    const handles = await Promise.all([openPostgres(database.url), openPostgres(database.url), openPostgres(database.url)]);
    cleanups.push(() => Promise.all(handles.map((handle) => handle.close())));
    const applied = await handles[0]!.pool.query('select count(*)::int as n from drizzle.__drizzle_migrations');
    // Each migration once, however many processes raced to apply it.
    const journal = JSON.parse(readFileSync(new URL('../src/db/migrations-pg/meta/_journal.json', import.meta.url), 'utf8')) as { entries: unknown[] };
    expect(applied.rows[0].n).toBe(journal.entries.length);
    // Closing twice is harmless (a server stopped by a signal and then by its owner), as on SQLite.
    await handles[0]!.close();
    await handles[0]!.close();
  });

  it('serves several server processes on the same database', async () => {
    const database = await emptyDatabase();
    cleanups.push(database.drop);
    const env = { DATABASE_URL: database.url, APP_SECRET, PORT: '0', LOG_LEVEL: 'silent' };
    const server = await startServer(loadConfig(env), createLogger('silent'), { hostname: '127.0.0.1' });
    cleanups.push(() => server.close());
    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', database: true, databaseKind: 'postgres', queue: { queued: 0, running: 0, reporting: 0 } });
    expect((server.database as PostgresHandle).kind).toBe('postgres');

    const second = await startServer(loadConfig(env), createLogger('silent'), { hostname: '127.0.0.1' });
    cleanups.push(() => second.close());
    expect(await (await fetch(`${second.url}/healthz`)).json()).toMatchObject({ status: 'ok', database: true, databaseKind: 'postgres' });
  });
});

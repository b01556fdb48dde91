import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { type DatabaseHandle, openDatabase, openPostgres } from '../../src/db/database.js';

/** The databases store-level tests run on: each such suite runs once per kind (`describe.each(DATABASE_KINDS)`). */
export const DATABASE_KINDS = ['sqlite', 'postgres'] as const;
export type DatabaseKind = (typeof DATABASE_KINDS)[number];

/** A fresh, migrated database of one kind, with a way to read its rows by hand. */
export interface TestDatabase {
  handle: DatabaseHandle;
  /** A statement with `?` parameters, on either database: its rows. */
  rows<T = Record<string, unknown>>(query: string, ...params: unknown[]): Promise<T[]>;
  /** PostgreSQL: the database's URL (what a second process would be given, e.g. for its broadcast connection). */
  url?: string;
  /** Another connection to the same database: what a second server process would open. */
  openAnother(): Promise<DatabaseHandle>;
  close(): Promise<void>;
}

let created = 0;

/** A new, empty database on the test run's PostgreSQL (nothing migrated): its URL, and a way to drop it. */
export async function emptyDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const server = inject('postgresUrl');
  const name = `test_${process.pid}_${++created}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/**
 * A new SQLite file in a temporary directory, or a new database on the test run's PostgreSQL
 * (test/support/postgres.global.ts), dropped again by `close`.
 */
export async function openTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-db-'));
    const handle = openDatabase(join(dir, 'app.db'));
    return {
      handle,
      async rows<T>(query: string, ...params: unknown[]) {
        const statement = handle.sqlite.prepare(query);
        if (statement.reader) return statement.all(...params) as T[];
        statement.run(...params);
        return [];
      },
      openAnother: () => Promise.reject(new Error('a SQLite file is held by one process (locking_mode EXCLUSIVE)')),
      async close() {
        await handle.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const database = await emptyDatabase();
  const handles: DatabaseHandle[] = [];
  const open = async () => {
    const opened = await openPostgres(database.url, { maxConnections: 4 });
    handles.push(opened);
    return opened;
  };
  const handle = await open();
  return {
    handle,
    url: database.url,
    async rows<T>(query: string, ...params: unknown[]) {
      let n = 0;
      const { rows } = await (handle.kind === 'postgres' ? handle.pool : undefined)!.query(
        query.replace(/\?/g, () => `$${++n}`),
        params,
      );
      return rows as T[];
    },
    openAnother: open,
    async close() {
      await Promise.all(handles.map((opened) => opened.close()));
      await database.drop();
    },
  };
}

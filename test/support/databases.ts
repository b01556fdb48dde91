import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { type DatabaseHandle, openDatabase, openPostgres } from '../../src/db/database.js';

export type DatabaseKind = 'sqlite' | 'postgres';

// Counts and bigint columns read by hand come back as numbers, as the app's own reads do (src/db/database.ts).
pg.types.setTypeParser(pg.types.builtins.INT8, Number);

/**
 * The database this test run is on: vitest.config.ts runs the whole suite once per database, as the
 * projects `sqlite` and `postgres`, each setting TEST_DATABASE.
 */
export const TEST_DATABASE: DatabaseKind = process.env.TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';

/** The databases store-level suites run on in this run (`describe.each(DATABASE_KINDS)`): the project's one. */
export const DATABASE_KINDS: readonly DatabaseKind[] = [TEST_DATABASE];

/** Reads and writes by hand, on either database, for tests that look at (or tamper with) stored rows. */
export interface DatabaseReader {
  /** A statement with `?` parameters: its rows (none for a statement that returns none). */
  rows<T = Record<string, unknown>>(query: string, ...params: unknown[]): Promise<T[]>;
  /** The first row, or undefined. */
  row<T = Record<string, unknown>>(query: string, ...params: unknown[]): Promise<T | undefined>;
  /** A statement run for its effect. */
  run(query: string, ...params: unknown[]): Promise<void>;
}

/**
 * A statement written for SQLite, on PostgreSQL: `?` parameters become `$1, $2…`, and a camelCase
 * alias (`as lineId`) is quoted, as PostgreSQL would fold it to lower case.
 */
export async function postgresRows<T>(pool: pg.Pool, query: string, params: unknown[]): Promise<T[]> {
  let n = 0;
  const text = query.replace(/\?/g, () => `$${++n}`).replace(/\bas ([a-z]+[A-Z]\w*)/g, 'as "$1"');
  return ((await pool.query(text, params)).rows ?? []) as T[];
}

/** A reader on an open database: `?` parameters become `$1, $2…` on PostgreSQL. */
export function databaseReader(handle: DatabaseHandle): DatabaseReader {
  const rows = async <T>(query: string, ...params: unknown[]): Promise<T[]> => {
    if (handle.kind === 'sqlite') {
      const statement = handle.sqlite.prepare(query);
      if (statement.reader) return statement.all(...params) as T[];
      statement.run(...params);
      return [];
    }
    return postgresRows<T>(handle.pool, query, params);
  };
  return {
    rows,
    row: async <T>(query: string, ...params: unknown[]) => (await rows<T>(query, ...params))[0],
    run: async (query: string, ...params: unknown[]) => {
      await rows(query, ...params);
    },
  };
}

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
export async function emptyDatabase(options: { createWith?: string } = {}): Promise<{ url: string; drop(): Promise<void> }> {
  const server = inject('postgresUrl');
  const name = `test_${process.pid}_${++created}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  // `createWith`: CREATE DATABASE options, e.g. another collation than the server's.
  await admin.query(`create database ${name}${options.createWith ? ` ${options.createWith}` : ''}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      // Without force first: connections still closing (a pool's end, a killed child's socket) are
      // let go on their own; forced, they would be told "terminating connection" as an error.
      for (let attempt = 0; ; attempt++) {
        try {
          await admin.query(`drop database if exists ${name}${attempt < 40 ? '' : ' with (force)'}`);
          break;
        } catch (error) {
          // 55006: the database is still being accessed by other users.
          if ((error as { code?: string }).code !== '55006') throw error;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      await admin.end();
    },
  };
}

/**
 * A new SQLite file in a temporary directory, or a new database on the test run's PostgreSQL
 * (test/support/postgres.global.ts), dropped again by `close`.
 */
export async function openTestDatabase(kind: DatabaseKind, options: { createWith?: string } = {}): Promise<TestDatabase> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-db-'));
    const handle = openDatabase(join(dir, 'app.db'));
    return {
      handle,
      rows: databaseReader(handle).rows,
      openAnother: () => Promise.reject(new Error('a SQLite file is held by one process (locking_mode EXCLUSIVE)')),
      async close() {
        await handle.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const database = await emptyDatabase(options);
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
    rows: databaseReader(handle).rows,
    openAnother: open,
    async close() {
      await Promise.all(handles.map((opened) => opened.close()));
      await database.drop();
    },
  };
}

import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

/** `$client`: the better-sqlite3 handle drizzle() returns with it, for a statement drizzle cannot build (JobStore). */
export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

export interface DatabaseHandle {
  db: Db;
  sqlite: Database.Database;
  close(): void;
}

const migrationsFolder = fileURLToPath(new URL('./migrations', import.meta.url));

/** Opens the SQLite file in WAL mode and applies the committed migrations. */
export function openDatabase(file: string): DatabaseHandle {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const sqlite = new Database(file);
  // One server process per database file: a second one (an overlapping deploy) would take over jobs
  // the first is still running. The exclusive lock is held from the first access until close.
  sqlite.pragma('locking_mode = EXCLUSIVE');
  sqlite.pragma('busy_timeout = 2000');
  try {
    sqlite.pragma('journal_mode = WAL');
  } catch (error) {
    sqlite.close();
    if (error instanceof Error && /locked|busy/i.test(error.message)) {
      throw new Error(`The database ${file} is in use by another server process; run one server per database file`);
    }
    throw error;
  }
  // WAL + NORMAL loses nothing on a process crash (kill -9); only an OS crash can drop the last commits.
  sqlite.pragma('synchronous = NORMAL');
  // Every robot call commits its own job before the 200, touching a leaf of the table and of each of
  // its four indexes. Copying the WAL back every 1000 pages (the default) cost about as much system
  // time as the commits themselves in the acknowledgement benchmark; at 10000 pages (~40 MiB) a page
  // rewritten by many commits is copied back once. The file is cut back to 64 MiB after a checkpoint.
  sqlite.pragma('wal_autocheckpoint = 10000');
  sqlite.pragma(`journal_size_limit = ${64 * 2 ** 20}`);
  sqlite.pragma('foreign_keys = ON');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder });
  return { db, sqlite, close: () => sqlite.close() };
}

export function pingDatabase(handle: DatabaseHandle): boolean {
  try {
    return handle.sqlite.prepare('select 1 as ok').get() !== undefined;
  } catch {
    return false;
  }
}

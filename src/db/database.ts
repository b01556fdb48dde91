import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { type Dialect, postgresDialect, sqliteDialect } from './dialect.js';
import * as schema from './schema.js';

/**
 * What the stores query through. Typed as drizzle's SQLite database, with schema.ts's tables, on
 * both databases: on PostgreSQL it is drizzle's node-postgres database, whose query builders take
 * the same tables and calls for everything the stores use (select, insert … on conflict,
 * update, delete, returning, awaited). What differs goes through the handle's `dialect`
 * (src/db/dialect.ts); the synchronous better-sqlite3 calls (`.run()`, `.get()`, `.all()`) exist on
 * SQLite only, and the stores reach them through the dialect, never directly.
 * `$client`: the better-sqlite3 handle on SQLite, for a statement drizzle cannot build (JobStore).
 */
export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

interface HandleBase {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

export interface SqliteHandle extends HandleBase {
  kind: 'sqlite';
  sqlite: Database.Database;
}

export interface PostgresHandle extends HandleBase {
  kind: 'postgres';
  pool: pg.Pool;
}

export type DatabaseHandle = SqliteHandle | PostgresHandle;

/** What a store needs of the database: its queries and the dialect's differences. */
export type DatabaseAccess = Pick<DatabaseHandle, 'db' | 'dialect'>;

/** The database's kind as DATABASE_URL names it: `postgres://` or `postgresql://` is PostgreSQL, anything else a SQLite file. */
export function databaseKind(url: string): DatabaseHandle['kind'] {
  return /^postgres(ql)?:\/\//.test(url) ? 'postgres' : 'sqlite';
}

const migrationsFolder = fileURLToPath(new URL('./migrations', import.meta.url));
const postgresMigrationsFolder = fileURLToPath(new URL('./migrations-pg', import.meta.url));

/** Opens the SQLite file in WAL mode and applies the committed migrations. */
export function openDatabase(file: string): SqliteHandle {
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
  return {
    kind: 'sqlite',
    db,
    sqlite,
    dialect: sqliteDialect(db),
    close: async () => {
      sqlite.close();
    },
  };
}

/**
 * Any fixed 64-bit number shared by every process of this app: the session-level advisory lock
 * held while migrations run, so that processes starting together apply them once, one after another.
 */
const MIGRATION_LOCK = 0x63326462_3234n;

/**
 * Connects to PostgreSQL and applies its committed migrations (src/db/migrations-pg) under an
 * advisory lock. Many processes may share the database (docs/multi-process.md).
 */
export async function openPostgres(url: string, options: { maxConnections?: number; onConnectionError?: (error: Error) => void } = {}): Promise<PostgresHandle> {
  // bigint columns (ids, ms timestamps) and counts come back as numbers, as SQLite's integers do:
  // every value we store is below 2^53 (a ms timestamp is below 2^42). Set on node-postgres's
  // global parsers because drizzle's node-postgres session reads those, not a pool's own; nothing
  // else in the process reads rows from PostgreSQL (the broadcast's own connection only listens).
  pg.types.setTypeParser(pg.types.builtins.INT8, Number);
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 10,
    // Every statement of ours sees what committed before it (READ COMMITTED, PostgreSQL's default),
    // which the bounds and claims rely on (docs/multi-process.md): a database or role set to a
    // stricter default does not change ours. The pool hands the connection out only once this is
    // done, and a connection it failed on is not handed out at all. (A 'connect' listener ran it
    // beside the caller's first query, which node-postgres deprecates.)
    onConnect: async (client) => {
      await client.query("set default_transaction_isolation = 'read committed'");
    },
  });
  // An idle connection the server dropped (a restart, a failover) is discarded by the pool and
  // replaced on the next query; without a listener its error would stop the process.
  pool.on('error', (error) => options.onConnectionError?.(error));
  try {
    const client = await pool.connect();
    try {
      await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
      try {
        await migratePg(drizzlePg(client), { migrationsFolder: postgresMigrationsFolder });
      } finally {
        await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]);
      }
    } finally {
      client.release();
    }
  } catch (error) {
    await pool.end();
    throw error;
  }
  // The node-postgres database behind the SQLite type (see Db): one model, queried the same way.
  const pgDb = drizzlePg(pool, { schema });
  const db = pgDb as unknown as Db;
  return {
    kind: 'postgres',
    db,
    pool,
    dialect: postgresDialect(pgDb),
    // Closing twice is harmless, as better-sqlite3's close is.
    close: async () => {
      if (pool.ended) return;
      await pool.end();
    },
  };
}

/** Opens the database DATABASE_URL names (config.ts): a SQLite file by default, or PostgreSQL. */
export async function connectDatabase(url: string): Promise<DatabaseHandle> {
  return databaseKind(url) === 'postgres' ? openPostgres(url) : openDatabase(url === ':memory:' ? url : url.replace(/^file:/, ''));
}

export async function pingDatabase(handle: DatabaseHandle): Promise<boolean> {
  try {
    if (handle.kind === 'sqlite') return handle.sqlite.prepare('select 1 as ok').get() !== undefined;
    await handle.pool.query('select 1');
    return true;
  } catch {
    return false;
  }
}

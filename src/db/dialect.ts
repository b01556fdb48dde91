import { type SQL, sql, type SQLWrapper } from 'drizzle-orm';
import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { ExecuteResultSync } from 'drizzle-orm/sqlite-core';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import type { Db } from './database.js';

/**
 * What the two databases force to differ, and nothing else: how a transaction runs, how a
 * prepared statement is executed, and the few SQL functions they spell differently. The stores
 * write every query once, against schema.ts's tables (src/db/database.ts `Db`).
 */

/** A transaction of `Db`: what a transaction body builds its statements from. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

/** A drizzle query (builder or executed prepared statement) as a transaction body yields it. */
export type Statement = PromiseLike<unknown>;

/**
 * A transaction body: a generator that yields each statement (through `exec`) and gets its result
 * back. better-sqlite3 runs a transaction synchronously, with nothing else in between, while
 * node-postgres awaits each statement; a generator is the one way to write a body that runs
 * either way (an async body on SQLite would let other requests' statements slip into the
 * transaction between its awaits).
 */
export type TransactionBody<T> = (tx: Tx) => Generator<Statement, T, unknown>;

/** Runs one statement inside a transaction body: `const rows = yield* exec(tx.select()…)`. */
export function* exec<T>(statement: PromiseLike<T>): Generator<Statement, T, unknown> {
  return (yield statement) as T;
}

/** Rows a statement changed, from either driver's answer to an insert, update or delete without `returning`. */
export function changes(result: unknown): number {
  const answer = result as { changes?: number; rowCount?: number | null };
  return answer.changes ?? answer.rowCount ?? 0;
}

/** A prepared statement of either driver (SQLite's has `all`, PostgreSQL's only `execute`). */
interface Prepared {
  execute(params?: Record<string, unknown>): PromiseLike<unknown>;
}

export interface Dialect {
  kind: 'sqlite' | 'postgres';
  transaction<T>(body: TransactionBody<T>): Promise<T>;
  /** A prepared select's rows. SQLite runs it synchronously (the hot paths' prepared statements). */
  all<T>(statement: { all(params?: Record<string, unknown>): T[] }, params?: Record<string, unknown>): Promise<T[]>;
  /** A prepared select's first row. */
  get<T>(statement: { all(params?: Record<string, unknown>): T[] }, params?: Record<string, unknown>): Promise<T | undefined>;
  /** A prepared insert, update or delete without `returning`: the rows it changed. */
  run(statement: { run(params?: Record<string, unknown>): unknown }, params?: Record<string, unknown>): Promise<number>;
  /** A statement drizzle cannot build, run on the database or in a transaction body: its rows. */
  rows<T>(on: Db | Tx, query: SQL): PromiseLike<T[]>;
  /**
   * PostgreSQL only: a hand-written statement with `$n` parameters, kept prepared by name on each
   * connection (parsed and planned once), on the database or in a transaction body. The robot
   * call's insert (src/db/jobs.ts STORE_JOBS): building it through drizzle and having PostgreSQL
   * parse it per call was most of an acknowledgement's cost beyond SQLite's.
   */
  namedRows<T>(on: Db | Tx, name: string, text: string, values: unknown[]): PromiseLike<T[]>;
  /** `column in (…)` for a list passed as one JSON parameter, so one prepared statement fits any list. */
  inJsonList(column: SQLWrapper, list: SQLWrapper, type: 'integer' | 'text'): SQL;
  /** The smaller of two values (SQLite's two-argument `min`, PostgreSQL's `least`). */
  least(a: SQLWrapper | number, b: SQLWrapper | number): SQL;
  /** A top-level field of a JSON text column as text (a string without its quotes): null when absent. */
  jsonText(column: SQLWrapper, field: string): SQL;
  /** A top-level field of a JSON text column when it is an integer, else null. */
  jsonInteger(column: SQLWrapper, field: string): SQL;
  /** A boolean literal as the column stores it. */
  bool(value: boolean): SQL;
  /** Lower case in any alphabet (SQLite's lower() folds ASCII only: a function of ours does the rest). */
  fold(value: SQLWrapper | string): SQL;
  /**
   * Inside a transaction body: waits until no other transaction holds `key`, and holds it until
   * this one ends. SQLite has one writer, so its transactions already run one at a time: nothing
   * to do. On PostgreSQL a transaction-scoped advisory lock on the key's hash (a collision only
   * makes two keys wait for each other).
   */
  serializeOn(tx: Tx, key: string): Generator<Statement, void, unknown>;
}

export function sqliteDialect(db: BetterSQLite3Database<Record<string, unknown>> & { $client: import('better-sqlite3').Database }): Dialect {
  // SQLite's LIKE and lower() fold ASCII letters only; names are often Cyrillic ("анна" finds "Анна").
  db.$client.function('c2d_fold', { deterministic: true }, (value: unknown) => (typeof value === 'string' ? value.toLowerCase() : value));
  const runSync = (statement: Statement): unknown => {
    const query = statement as { sync?: () => unknown; prepare?: () => { execute(): { sync(): unknown } } };
    // An executed prepared statement (`prepared.execute(params)`) is run by `sync`; a builder is prepared first.
    if (typeof query.sync === 'function') return query.sync();
    if (typeof query.prepare === 'function') return query.prepare().execute().sync();
    throw new Error('A transaction body yielded something that is not a drizzle statement');
  };
  return {
    kind: 'sqlite',
    async transaction<T>(body: TransactionBody<T>): Promise<T> {
      return db.transaction((tx) => {
        const steps = body(tx as unknown as Tx);
        let step = steps.next();
        while (!step.done) {
          let result: unknown;
          try {
            result = runSync(step.value);
          } catch (error) {
            step = steps.throw(error);
            continue;
          }
          step = steps.next(result);
        }
        return step.value;
      });
    },
    async all(statement, params) {
      return statement.all(params);
    },
    async get(statement, params) {
      return statement.all(params)[0];
    },
    async run(statement, params) {
      return changes(statement.run(params));
    },
    namedRows() {
      throw new Error('named statements are PostgreSQL only');
    },
    rows<T>(on: Db | Tx, query: SQL) {
      // Run by the transaction runner (`sync`), or when awaited: drizzle's own deferred SQLite result.
      return new ExecuteResultSync(() => (on as Db).all(query) as T[]);
    },
    inJsonList: (column, list) => sql`${column} in (select value from json_each(${list}))`,
    least: (a, b) => sql`min(${a}, ${b})`,
    jsonText: (column, field) => sql`json_extract(${column}, ${`$.${field}`})`,
    jsonInteger: (column, field) => {
      const value = sql`json_extract(${column}, ${`$.${field}`})`;
      return sql`case when typeof(${value}) = 'integer' then ${value} end`;
    },
    bool: (value) => sql.raw(value ? '1' : '0'),
    fold: (value) => sql`c2d_fold(${value})`,
    *serializeOn() {},
  };
}

export function postgresDialect(db: NodePgDatabase<Record<string, unknown>>): Dialect {
  const execute = async (statement: unknown, params?: Record<string, unknown>): Promise<unknown> => (statement as Prepared).execute(params);
  return {
    kind: 'postgres',
    async transaction<T>(body: TransactionBody<T>): Promise<T> {
      return db.transaction(async (tx) => {
        const steps = body(tx as unknown as Tx);
        let step = steps.next();
        while (!step.done) {
          let result: unknown;
          try {
            result = await step.value;
          } catch (error) {
            step = steps.throw(error);
            continue;
          }
          step = steps.next(result);
        }
        return step.value;
      });
    },
    async all<T>(statement: unknown, params?: Record<string, unknown>) {
      return (await execute(statement, params)) as T[];
    },
    async get<T>(statement: unknown, params?: Record<string, unknown>) {
      return ((await execute(statement, params)) as T[])[0];
    },
    async run(statement, params) {
      return changes(await execute(statement, params));
    },
    rows<T>(on: Db | Tx, query: SQL) {
      return (on as unknown as NodePgDatabase).execute(query).then((result) => result.rows as T[]);
    },
    namedRows<T>(on: Db | Tx, name: string, text: string, values: unknown[]) {
      // drizzle's node-postgres session's client: the pool, or a transaction's one pooled connection.
      const client = (on as unknown as { session: { client: pg.PoolClient } }).session.client;
      return client.query({ name, text, values }).then((result) => result.rows as T[]);
    },
    inJsonList: (column, list, type) => sql`${column} in (select value::${sql.raw(type === 'integer' ? 'bigint' : 'text')} from jsonb_array_elements_text(${list}::jsonb))`,
    least: (a, b) => sql`least(${a}, ${b})`,
    jsonText: (column, field) => sql`(${column}::jsonb ->> ${field})`,
    jsonInteger: (column, field) => {
      const value = sql`(${column}::jsonb -> ${field})`;
      return sql`case when jsonb_typeof(${value}) = 'number' and (${value})::numeric = trunc((${value})::numeric) then (${value})::bigint end`;
    },
    bool: (value) => sql.raw(value ? 'true' : 'false'),
    // lower() folds every alphabet in a UTF-8 database.
    fold: (value) => sql`lower(${value})`,
    *serializeOn(tx, key) {
      yield* exec((tx as unknown as NodePgDatabase).execute(sql`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`));
    },
  };
}

import type pg from 'pg';
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterPostgres } from 'rate-limiter-flexible';

/** What a cap needs: its name (each cap its own), how many points and per how many seconds. */
export interface LimiterOptions {
  keyPrefix: string;
  points: number;
  duration: number;
}

/** Makes the caps on unverified checks, installs and renewals (rate-limiter-flexible, one API for both stores). */
export type Limiters = (options: LimiterOptions) => RateLimiterAbstract;

/** One process per SQLite file: the caps live in its memory. */
export function memoryLimiters(): Limiters {
  return (options) => new RateLimiterMemory(options);
}

/**
 * Several processes on PostgreSQL: the caps are counted in the `rate_limits` table (created by our
 * migrations, src/db/migrations-pg) through our pool, so a cap holds across every process. Expired
 * rows are pruned by the server's hourly maintenance (pruneExpiredLimits), not by a timer of the
 * library's per cap that would outlive a closed pool. While the database does not answer, each
 * process counts in its own memory (the library's insurance limiter) rather than failing the request.
 */
export function postgresLimiters(pool: pg.Pool): Limiters {
  return (options) =>
    new RateLimiterPostgres({
      ...options,
      storeClient: pool,
      storeType: 'pool',
      tableName: 'rate_limits',
      tableCreated: true,
      clearExpiredByTimeout: false,
      insuranceLimiter: new RateLimiterMemory(options),
    });
}

/** Removes the caps' rows whose window ended before `before` (ms): the rows a key left behind. */
export async function pruneExpiredLimits(pool: pg.Pool, before: number): Promise<number> {
  const { rowCount } = await pool.query('delete from rate_limits where expire < $1', [before]);
  return rowCount ?? 0;
}

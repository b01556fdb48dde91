import type pg from 'pg';
import type { Logger } from '../log.js';

/**
 * Job leases (src/db/jobs.ts) are set by the claiming process's clock and compared by every other
 * process's: clocks that differ by more than JOB_LEASE_SECONDS let a process take over a job still
 * running elsewhere. The machines' clocks must be kept in sync (NTP, docs/multi-process.md); a
 * process more than this far from the database's clock says so at start.
 */
export const CLOCK_SKEW_WARNING_MS = 5_000;

/**
 * How far this process's clock (`now`) runs ahead of PostgreSQL's (negative: behind), measured once
 * against the middle of the query's round trip.
 */
export async function clockSkewMs(pool: pg.Pool, now: () => number): Promise<number> {
  const before = now();
  const { rows } = await pool.query<{ now: number }>('select (extract(epoch from clock_timestamp()) * 1000)::double precision as now');
  const after = now();
  return (before + after) / 2 - rows[0]!.now;
}

/** At start on PostgreSQL: a warning when this process's clock is far from the database's. */
export async function warnOfClockSkew(pool: pg.Pool, now: () => number, log: Logger): Promise<void> {
  const skewMs = Math.round(await clockSkewMs(pool, now));
  if (Math.abs(skewMs) > CLOCK_SKEW_WARNING_MS) {
    log.warn({ skewMs }, "this process's clock differs from PostgreSQL's: keep every machine's clock in sync (NTP), well within JOB_LEASE_SECONDS");
  }
}

import { sql } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';

/**
 * The Bitrix24 REST budget of each portal, shared by every process on PostgreSQL
 * (docs/multi-process.md): the leaky bucket Bitrix24 keeps per portal (docs/protocols.md B4)
 * mirrored in one row, so several processes together stay within it. A slot costs one statement:
 * the row is locked, drained by the time since it was last drained, and charged only when the
 * call fits. Time is the database's clock, the one clock every process shares. SQLite has one
 * process, which keeps its bucket in memory (src/rate-limit.ts); this store is not used there.
 */
export class RestBudgetStore {
  /** Portals whose row this process has made sure exists: one insert per portal per process. */
  readonly #created = new Set<string>();

  constructor(private readonly database: DatabaseAccess) {}

  /**
   * Takes `cost` from the portal's bucket draining at `perSecond` up to `burst`: 0 when taken, else
   * how long (ms) until it would fit.
   */
  async take(memberId: string, perSecond: number, burst: number, cost = 1): Promise<number> {
    await this.#ensure(memberId);
    const [row] = await this.database.dialect.rows<{ taken: boolean; level: number }>(
      this.database.db,
      sql`with bucket as (
            select member_id, ${NOW} as now,
                   greatest(0, level - (${NOW} - drained_at) / 1000 * ${number(perSecond)}) as level
            from rest_budgets where member_id = ${memberId} for update)
          update rest_budgets set
            level = case when bucket.level + ${number(cost)} <= ${number(burst)} then bucket.level + ${number(cost)} else bucket.level end,
            drained_at = bucket.now
          from bucket where rest_budgets.member_id = bucket.member_id
          returning bucket.level + ${number(cost)} <= ${number(burst)} as taken, bucket.level as level`,
    );
    if (!row) return 0;
    return row.taken ? 0 : Math.max(1, Math.ceil(((row.level + cost - burst) / perSecond) * 1000));
  }

  /** Bitrix24 said the portal is over its limit: other apps share the bucket, so count it full. */
  async fill(memberId: string, burst: number): Promise<void> {
    await this.#ensure(memberId);
    await this.database.dialect.rows(
      this.database.db,
      sql`update rest_budgets set level = ${number(burst)}, drained_at = ${NOW} where member_id = ${memberId} returning member_id`,
    );
  }

  async #ensure(memberId: string): Promise<void> {
    if (this.#created.has(memberId)) return;
    await this.database.dialect.rows(
      this.database.db,
      sql`insert into rest_budgets (member_id, level, drained_at) values (${memberId}, 0, ${NOW}) on conflict (member_id) do nothing returning member_id`,
    );
    this.#created.add(memberId);
  }
}

/** Now in ms by the database's clock (not the transaction's start: a statement may wait for the row's lock). */
/** A number as a parameter PostgreSQL need not guess the type of. */
const number = (value: number) => sql`${value}::double precision`;

const NOW = sql.raw('(extract(epoch from clock_timestamp()) * 1000)::double precision');

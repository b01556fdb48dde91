import { sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { LearnedRate } from './chat2desk-rates.js';
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

/** The shared state of a Chat2Desk account's pace after a take (src/chat2desk/adaptive-rate.ts SharedPace). */
export interface PaceState {
  /** 0 when a slot was taken, else how long (ms) until one may be. */
  waitMs: number;
  perSecond: number;
  limitPerSecond: number | null;
  /** Answers accepted in the last second by every process, estimated from this and the previous second. */
  acceptedLastSecond: number;
}

/**
 * The learned pace of each Chat2Desk account shared by every process on PostgreSQL, in its
 * c2d_rates row (docs/multi-process.md): the bucket at the learned rate, the pause after a refusal,
 * and the answers every process saw accepted. A take is one statement, which also hands over what
 * this process learned since its last take (growth of the rate, accepted answers), so a request
 * costs one round trip; a refusal costs one more. Time is the database's clock.
 */
export class Chat2DeskPaceStore {
  readonly #created = new Set<string>();

  constructor(
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
  ) {}

  /** Makes the account's row exist, starting from `start` (what was learned before, else the configured rate). */
  async open(accountKey: string, start: LearnedRate): Promise<void> {
    if (this.#created.has(accountKey)) return;
    await this.database.dialect.rows(
      this.database.db,
      sql`insert into c2d_rates (account_key, per_minute, limit_per_minute, drained_at, updated_at)
          values (${accountKey}, ${number(start.perMinute)}, ${start.limitPerMinute === null ? null : number(start.limitPerMinute)}, ${NOW}, ${this.clock.now()})
          on conflict (account_key) do nothing returning account_key`,
    );
    this.#created.add(accountKey);
  }

  /**
   * One slot at the account's pace (a twentieth of a second of burst, src/chat2desk/adaptive-rate.ts),
   * after adding `growth` (requests/s) to the rate within [floor, ceiling] and counting `accepted` answers.
   */
  async take(accountKey: string, report: { growth: number; accepted: number; floor: number; ceiling: number }): Promise<PaceState | undefined> {
    const [row] = await this.database.dialect.rows<{
      taken: boolean;
      wait_ms: number;
      per_second: number;
      limit_per_minute: number | null;
      accepted_last_second: number;
    }>(
      this.database.db,
      sql`with cur as (
            select account_key, limit_per_minute, level, drained_at, paused_until, accepted_second, accepted_now, accepted_before, ${NOW} as now,
                   least(${number(report.ceiling)}, greatest(${number(report.floor)}, per_minute / 60 + ${number(report.growth)})) as rate
            from c2d_rates where account_key = ${accountKey} for update),
          pace as (
            select *, greatest(0, level - (now - drained_at) / 1000 * rate) as drained, greatest(1, round(rate / 20)) as burst,
                   floor(now / 1000)::bigint as second
            from cur),
          fit as (select *, now >= paused_until and drained + 1 <= burst as taken from pace)
          update c2d_rates set
            per_minute = fit.rate * 60,
            level = case when fit.taken then fit.drained + 1 else fit.drained end,
            drained_at = fit.now,
            accepted_before = case when fit.second = fit.accepted_second then fit.accepted_before
                                   when fit.second = fit.accepted_second + 1 then fit.accepted_now else 0 end,
            accepted_now = case when fit.second = fit.accepted_second then fit.accepted_now else 0 end + ${report.accepted}::bigint,
            accepted_second = fit.second,
            updated_at = ${this.clock.now()}
          from fit where c2d_rates.account_key = fit.account_key
          returning fit.taken,
            case when fit.taken then 0
                 when fit.now < fit.paused_until then fit.paused_until - fit.now
                 else (fit.drained + 1 - fit.burst) / fit.rate * 1000 end as wait_ms,
            fit.rate as per_second, fit.limit_per_minute,
            c2d_rates.accepted_now + c2d_rates.accepted_before * (1 - (fit.now - fit.second * 1000) / 1000) as accepted_last_second`,
    );
    if (!row) return undefined;
    return {
      waitMs: row.taken ? 0 : Math.max(1, Math.ceil(Number(row.wait_ms))),
      perSecond: Number(row.per_second),
      limitPerSecond: row.limit_per_minute === null ? null : Number(row.limit_per_minute) / 60,
      acceptedLastSecond: Number(row.accepted_last_second),
    };
  }

  /**
   * Chat2Desk refused for load: the account's bucket is full and nothing goes before `pauseMs`; the
   * rate is cut to `perSecond` with the limit it revealed, unless another process cut it within the
   * last second (the same overshoot).
   */
  async cut(accountKey: string, cut: { perSecond: number; limitPerSecond: number; pauseMs: number }): Promise<void> {
    const fresh = sql`(${NOW} - cut_at >= 1000)`;
    await this.database.dialect.rows(
      this.database.db,
      sql`update c2d_rates set
            per_minute = case when ${fresh} then ${number(cut.perSecond * 60)} else per_minute end,
            limit_per_minute = case when ${fresh} then ${number(cut.limitPerSecond * 60)} else limit_per_minute end,
            level = greatest(1, round(case when ${fresh} then ${number(cut.perSecond)} else per_minute / 60 end / 20)),
            drained_at = ${NOW},
            paused_until = greatest(paused_until, ${NOW} + ${number(cut.pauseMs)}),
            cut_at = case when ${fresh} then ${NOW} else cut_at end,
            updated_at = ${this.clock.now()}
          where account_key = ${accountKey} returning account_key`,
    );
  }
}

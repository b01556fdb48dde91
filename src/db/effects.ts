import { and, eq, gte, isNull, like, lte, or, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { DatabaseAccess } from './database.js';
import { changes } from './dialect.js';
import { effects } from './schema.js';

export interface EffectRow {
  state: 'claimed' | 'done';
  owner: string | null;
  leaseUntil: number;
  attemptAt: number;
  /** JSON written with the claim: what settling looks for. */
  intent: string;
  /** JSON, once done. */
  result: string | null;
}

const columns = {
  state: effects.state,
  owner: effects.owner,
  leaseUntil: effects.leaseUntil,
  attemptAt: effects.attemptAt,
  intent: effects.intent,
  result: effects.result,
};

/**
 * The owner an attempt of a job writes on its claims: the job's public id and the attempt, so a
 * later attempt may take over an earlier one's claim, never the reverse. Claims written before
 * attempts were named (migration 0007) carry the public id alone and count as earlier.
 */
export function attemptOwner(job: string, attempt: number): string {
  return `${job}#${attempt}`;
}

/** The claim's owner is an attempt of `job` earlier than `attempt`. */
function earlierAttemptOf(job: unknown, attempt: unknown) {
  // The case keeps PostgreSQL from casting another job's owner (no number after the job's id); the
  // casts of the parameter give PostgreSQL its type.
  const ofJob = sql`${effects.owner} like cast(${job} as text) || '#%'`;
  return sql`(${effects.owner} = ${job} or (case when ${ofJob} then cast(substr(${effects.owner}, length(cast(${job} as text)) + 2) as integer) end) < ${attempt})`;
}

/**
 * The ledger's rows (src/jobs/ledger.ts). Every change is one statement guarded by the key or by a
 * condition on the row (state, owner, lease), so two processes sharing a database cannot both
 * take an effect: correctness does not come from SQLite having one writer.
 */
export class EffectStore {
  /** Prepared once: every send claims, records and looks up its effects. */
  readonly #q;

  constructor(
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
  ) {
    const { db } = database;
    const p = (name: string) => sql.placeholder(name);
    const key = and(eq(effects.memberId, p('memberId')), eq(effects.effectKey, p('key')));
    const ownClaim = and(key, eq(effects.state, 'claimed'), eq(effects.owner, p('owner')));
    this.#q = {
      find: db.select(columns).from(effects).where(key).prepare(),
      claim: db
        .insert(effects)
        .values({
          memberId: p('memberId'),
          effectKey: p('key'),
          state: 'claimed',
          owner: p('owner'),
          leaseUntil: p('leaseUntil'),
          attemptAt: p('now'),
          intent: p('intent'),
          createdAt: p('now'),
          updatedAt: p('now'),
        })
        .onConflictDoNothing()
        .prepare(),
      takeOver: db
        .update(effects)
        .set({ owner: sql`${p('owner')}`, leaseUntil: sql`${p('leaseUntil')}`, updatedAt: sql`${p('now')}` })
        .where(
          and(
            key,
            eq(effects.state, 'claimed'),
            or(eq(effects.owner, p('owner')), isNull(effects.owner), lte(effects.leaseUntil, p('now')), sql`${earlierAttemptOf(p('job'), p('attempt'))}`),
          ),
        )
        .returning(columns)
        .prepare(),
      record: db
        .update(effects)
        .set({ state: 'done', result: sql`${p('result')}`, leaseUntil: 0, updatedAt: sql`${p('now')}` })
        .where(ownClaim)
        .prepare(),
      release: db.delete(effects).where(ownClaim).prepare(),
      dispatched: db
        .update(effects)
        .set({ intent: sql`${p('intent')}`, updatedAt: sql`${p('now')}` })
        .where(ownClaim)
        .prepare(),
      markInDoubt: db
        .update(effects)
        .set({ leaseUntil: 0, updatedAt: sql`${p('now')}` })
        .where(ownClaim)
        .prepare(),
    };
  }

  async find(memberId: string, key: string): Promise<EffectRow | undefined> {
    return (await this.database.dialect.get(this.#q.find, { memberId, key })) as EffectRow | undefined;
  }

  /** A new claim for `owner`, acting until `leaseMs` from now; false when the key already has a row. */
  async claim(memberId: string, key: string, owner: string, leaseMs: number, intent: string): Promise<boolean> {
    const now = this.clock.now();
    return (await this.database.dialect.run(this.#q.claim, { memberId, key, owner, leaseUntil: now + leaseMs, now, intent })) === 1;
  }

  /**
   * Takes a claim in doubt for `owner`: its own, one of an earlier attempt of the same job (`job`,
   * `attempt`: see `attemptOwner`), one nobody holds, or one whose holder's lease ran out. Undefined
   * while another holder's lease runs (a later attempt of the same job included: only a later attempt
   * settles an earlier one's), or when the row is done or gone meanwhile. The first attempt's time
   * and intent stay.
   */
  async takeOver(memberId: string, key: string, owner: string, leaseMs: number, job: { id: string; attempt: number }): Promise<EffectRow | undefined> {
    const now = this.clock.now();
    return (await this.database.dialect.get(this.#q.takeOver, { memberId, key, owner, leaseUntil: now + leaseMs, now, job: job.id, attempt: job.attempt })) as
      | EffectRow
      | undefined;
  }

  /** The owner's act happened: its result is recorded. False if the claim was taken from it meanwhile. */
  async record(memberId: string, key: string, owner: string, result: string): Promise<boolean> {
    return (await this.database.dialect.run(this.#q.record, { memberId, key, owner, result, now: this.clock.now() })) === 1;
  }

  /**
   * A deferred act is about to reach the outside world: its intent is stored without the undispatched
   * mark (src/jobs/ledger.ts). False when the claim is no longer the owner's (another attempt took it
   * over, seeing it undispatched, and acts itself): this act must not go.
   */
  async dispatched(memberId: string, key: string, owner: string, intent: string): Promise<boolean> {
    return (await this.database.dialect.run(this.#q.dispatched, { memberId, key, owner, intent, now: this.clock.now() })) === 1;
  }

  /** The act surely did not happen (refused before acting): the claim is given back. */
  async release(memberId: string, key: string, owner: string): Promise<void> {
    await this.database.dialect.run(this.#q.release, { memberId, key, owner });
  }

  /** The act's outcome is unknown: the claim stays, its lease ends now, so the next run settles it at once. */
  async markInDoubt(memberId: string, key: string, owner: string): Promise<void> {
    await this.database.dialect.run(this.#q.markInDoubt, { memberId, key, owner, now: this.clock.now() });
  }

  /** Keys of the claims the job (its public id) holds in any attempt and has not recorded: its effects in doubt. */
  async heldBy(memberId: string, job: string): Promise<string[]> {
    const rows = await this.database.db
      .select({ key: effects.effectKey })
      .from(effects)
      .where(and(eq(effects.memberId, memberId), or(eq(effects.owner, job), like(effects.owner, `${job}#%`)), eq(effects.state, 'claimed')));
    return rows.map((row) => row.key);
  }

  /**
   * What the effects under `prefix` (one ledger key per Chat2Desk send, result a Chat2Desk message
   * `{message_id}`, intent `{clientId}`) know of Chat2Desk message `messageId`: `sent` when one
   * recorded it; else `in_flight` when one to `clientId` is claimed but not recorded (its answer may
   * not be back yet); else `none`. Only effects touched since `since` are read: an echo comes soon.
   */
  async chat2deskSend(memberId: string, prefix: string, messageId: number, clientId: number, since: number): Promise<'sent' | 'in_flight' | 'none'> {
    const { db, dialect } = this.database;
    const rows = await db
      .select({ state: effects.state })
      .from(effects)
      .where(
        and(
          eq(effects.memberId, memberId),
          // The key's first characters equal to the prefix: a range up to `${prefix}\uffff` would depend on
          // the database's collation (PostgreSQL's may ignore punctuation or place U+FFFF elsewhere).
          sql`substr(${effects.effectKey}, 1, ${[...prefix].length}) = ${prefix}`,
          gte(effects.updatedAt, since),
          or(
            sql`${dialect.jsonInteger(effects.result, 'message_id')} = ${messageId}`,
            and(eq(effects.state, 'claimed'), sql`${dialect.jsonInteger(effects.intent, 'clientId')} = ${clientId}`),
          ),
        ),
      );
    if (rows.some((row) => row.state === 'done')) return 'sent';
    return rows.length > 0 ? 'in_flight' : 'none';
  }

  /**
   * Effects keyed to one run (`run:<job public id>:…`) matter only while that run may still be
   * retried or asked about; once its job is pruned they go too. Effects keyed to what they did
   * (a dialog's comment on a document) stay: they keep it from happening twice whichever run asks.
   */
  async pruneRunEffects(olderThan: number): Promise<number> {
    return changes(await this.database.db.delete(effects).where(and(like(effects.effectKey, 'run:%'), lte(effects.updatedAt, olderThan))));
  }
}

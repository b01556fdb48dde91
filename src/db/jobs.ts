import { and, asc, count, eq, gt, inArray, isNotNull, isNull, like, lt, lte, max, min, notExists, or, type SQL, type SQLWrapper, sql } from 'drizzle-orm';
import { alias } from 'drizzle-orm/sqlite-core';
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { DatabaseAccess } from './database.js';
import { changes, type Dialect, exec, type Statement, type Tx } from './dialect.js';
import { effects, jobs, portals, type JobRow } from './schema.js';

export type JobState = 'confirming' | 'queued' | 'running' | 'reporting' | 'done' | 'cancelled';
export type { JobRow };

export interface NewJob {
  /** The job kind's name (src/jobs/kinds.ts). */
  kind: string;
  memberId: string;
  /** The kind's input; stored as JSON. */
  input: unknown;
  /** Unique per portal while set: a second job with the same key is not stored (a duplicate). */
  dedupKey?: string;
  /** Jobs of one portal with the same key run one at a time, in the order they were stored. */
  orderingKey?: string;
  /** Not before this time (a throttle); now when absent. */
  runAt?: number;
  deadlineAt: number;
  /**
   * The call must be confirmed by its portal before it runs (src/jobs/confirmations.ts). Every
   * robot call is; a job built without a portal behind it (a store-level test) may skip it.
   */
  awaitsConfirmation: boolean;
  /** Robot runs: what the workflow called us with. */
  robot?: { eventToken: string; robotCode: string; documentId: string[] };
  /** A call whose input is already known to be wrong goes straight to reporting with this result. */
  immediateResult?: { returnValues: Record<string, unknown>; logMessage: string };
  /** The client's phone as international digits, when known at enqueue: the event log filters by it (src/event-log.ts `searchablePhone`). */
  phone?: string;
}

/** A robot call was not stored: its portal already has `limit` calls waiting for Bitrix24 to confirm them. */
export class UnconfirmedLimitReached extends Error {
  override name = 'UnconfirmedLimitReached';
  constructor(
    readonly memberId: string,
    readonly limit: number,
  ) {
    super(`portal ${memberId} has ${limit} jobs waiting for confirmation`);
  }
}

/** What confirming a robot call needs of its job; its input (up to ~256 KB) is left in the table. */
export type ConfirmationRow = Pick<JobRow, 'id' | 'memberId' | 'eventToken' | 'robotCode' | 'runAt' | 'deadlineAt' | 'confirmAttempts' | 'lastError'>;

/** One attempt at a job, as `claim` returned it: only that attempt may renew, retry or finish the job. */
export type ClaimedAttempt = Pick<JobRow, 'id' | 'attempts'>;

/** A job whose turn has come, as the dispatcher needs it: the run itself reads the full row when it claims it. */
export type RunnableJob = Pick<JobRow, 'id' | 'memberId' | 'eventToken' | 'kind'>;

/** What reporting a result needs of its job: not the call's input (up to ~256 KB). */
export type ReportRow = Pick<JobRow, 'id' | 'memberId' | 'eventToken' | 'returnValues' | 'logMessage' | 'runAt' | 'reportAttempts' | 'finishedAt' | 'createdAt'>;

/** A portal's results ready to report: how many, and when the oldest of them fell due. */
export interface ReadyReports {
  memberId: string;
  count: number;
  oldestRunAt: number;
}

/** Where a finished job goes: its result waits to be reported (robots), or it is done. */
export interface FinishPlan {
  next: 'report' | 'done';
  /** Jobs to enqueue in the same transaction as the finish (an outbox). */
  followUps?: NewJob[];
  /** The client's phone (international digits) when the run knows it; else a result's `phone`. */
  phone?: string;
}

const reportColumns = {
  id: jobs.id,
  memberId: jobs.memberId,
  eventToken: jobs.eventToken,
  returnValues: jobs.returnValues,
  logMessage: jobs.logMessage,
  runAt: jobs.runAt,
  reportAttempts: jobs.reportAttempts,
  finishedAt: jobs.finishedAt,
  createdAt: jobs.createdAt,
};

/** States in which a job still has work ahead: it holds its ordering key and counts as active. */
const PENDING_STATES: JobState[] = ['confirming', 'queued', 'running'];

export interface QueueDepth {
  /** Waiting to run, confirmed or not. */
  queued: number;
  running: number;
  reporting: number;
}

export interface JobStoreOptions {
  /**
   * How long a job at the head of an ordering key may hold it after its first attempt started;
   * then the rest of the key goes on without it while it waits between attempts (queued, with its
   * last error). A running head keeps the key while its lease is live.
   */
  orderingHoldMs?: number;
}

export const DEFAULT_ORDERING_HOLD_MS = 5 * 60_000;
/**
 * An ordering key with this prefix is never given up by a head waiting between attempts: for work
 * where running out of order does harm no retry undoes (two closed episodes of one client without a
 * phone would each create a record while the first one's creation is in doubt).
 */
export const HELD_ORDERING_PREFIX = 'held:';

/** The column values of a new job, as both the prepared insert and `insertJobs` write them. */
function rowValues(job: NewJob, now: number) {
  return {
    kind: job.kind,
    publicId: randomUUID(),
    memberId: job.memberId,
    dedupKey: job.dedupKey ?? null,
    orderingKey: job.orderingKey ?? null,
    eventToken: job.robot?.eventToken ?? null,
    robotCode: job.robot?.robotCode ?? null,
    documentId: job.robot ? JSON.stringify(job.robot.documentId) : null,
    input: JSON.stringify(job.input ?? null),
    state: job.immediateResult ? 'reporting' : job.awaitsConfirmation ? 'confirming' : 'queued',
    runAt: job.immediateResult ? now : Math.max(now, job.runAt ?? now),
    deadlineAt: job.deadlineAt,
    returnValues: job.immediateResult ? JSON.stringify(job.immediateResult.returnValues) : null,
    logMessage: job.immediateResult?.logMessage ?? null,
    finishedAt: job.immediateResult ? now : null,
    createdAt: now,
    updatedAt: now,
    phone: job.phone ?? null,
  };
}

/**
 * Stores jobs inside the caller's transaction, so whatever triggered them (an event, a webhook
 * delivery) and the jobs commit together or not at all. Jobs whose dedup key exists are skipped;
 * returns how many were stored.
 */
export function* insertJobs(tx: Tx, newJobs: NewJob[], now: number): Generator<Statement, number, unknown> {
  if (newJobs.length === 0) return 0;
  return changes(
    yield* exec(
      tx
        .insert(jobs)
        .values(newJobs.map((job) => rowValues(job, now)))
        .onConflictDoNothing(),
    ),
  );
}

/**
 * SQLite: a robot call's insert, bounded by the portal's calls waiting for confirmation. The bound
 * is part of the insert: counting first and inserting after would let calls arriving together all
 * pass the count (SQLite runs the statement alone; PostgreSQL, where concurrent inserts under READ
 * COMMITTED do not see each other's rows, applies the same rule under a lock: STORE_JOBS). Written
 * by hand because drizzle's insert … select must list every column, the id included, in table
 * order. The id span of the portal's confirming jobs (two index seeks) is an upper bound of their
 * number: below the bound nothing is counted (SQLite evaluates the `or` lazily); else the bound-th
 * of them is looked for, stepping over at most `bound` index entries, so only a portal with many
 * waiting pays for it. (A `count(*)` over a limited subquery cost ~170 µs per insert even when
 * skipped: measured.)
 */
const BOUNDED_INSERT = `
  insert into jobs (kind, public_id, member_id, dedup_key, ordering_key, event_token, robot_code, document_id, input, state,
                    run_at, deadline_at, return_values, log_message, finished_at, created_at, updated_at, phone)
  select @kind, @publicId, @memberId, @dedupKey, @orderingKey, @eventToken, @robotCode, @documentId, @input, @state,
         cast(@runAt as bigint), cast(@deadlineAt as bigint), @returnValues, @logMessage, cast(@finishedAt as bigint),
         cast(@createdAt as bigint), cast(@updatedAt as bigint), @phone
  where coalesce((select max(id) from jobs where member_id = @memberId and state = 'confirming')
                 - (select min(id) from jobs where member_id = @memberId and state = 'confirming') + 1, 0) < @bound
     or not exists (select 1 from jobs where member_id = @memberId and state = 'confirming' limit 1 offset @bound - 1)
  on conflict do nothing
  returning id`;
/**
 * PostgreSQL: a batch of jobs stored by one call of `c2d_store_jobs` (migrations 0004 and 0005
 * in src/db/migrations-pg), in arrival order, each column one array parameter. Jobs with `bounded` are
 * robot calls under the bound on calls waiting for confirmation, BOUNDED_INSERT's rule for a batch:
 * a bounded job is stored only while its portal has fewer than the bound waiting, counting the jobs
 * of the batch before it that add one (a repeat of a stored call, or one stored with its result
 * already, adds none), counted after the function took the advisory locks of the batch's portals;
 * a batch whose portals are all clearly below the bound is inserted as given (0005). One
 * statement, committing on its own: a transaction of begin, locks, one insert per job and commit
 * cost both servers CPU per round trip (measured by `npm run bench -- --db postgres`).
 */
const STORE_COLUMNS: Array<[name: keyof ReturnType<typeof rowValues>, type: 'text' | 'bigint']> = [
  ['kind', 'text'],
  ['publicId', 'text'],
  ['memberId', 'text'],
  ['dedupKey', 'text'],
  ['orderingKey', 'text'],
  ['eventToken', 'text'],
  ['robotCode', 'text'],
  ['documentId', 'text'],
  ['input', 'text'],
  ['state', 'text'],
  ['runAt', 'bigint'],
  ['deadlineAt', 'bigint'],
  ['returnValues', 'text'],
  ['logMessage', 'text'],
  ['finishedAt', 'bigint'],
  ['createdAt', 'bigint'],
  ['updatedAt', 'bigint'],
  ['phone', 'text'],
];
const STORE_JOBS = {
  name: 'c2d_store_jobs',
  text: `select stored_id as id, stored_public_id as "publicId"
           from c2d_store_jobs(${STORE_COLUMNS.map(([, type], i) => `$${i + 1}::${type}[]`).join(', ')}, $${STORE_COLUMNS.length + 1}::boolean[], $${STORE_COLUMNS.length + 2}::bigint)`,
};

/**
 * Which held jobs an event may release: a portal's queued jobs of one kind, those of one ordering
 * key (one conversation) when it is named, else all of the portal's.
 */
export interface HeldWake {
  memberId: string;
  kind: string;
  orderingKey?: string;
}

/**
 * Makes held jobs due now, inside the caller's transaction (the one that stored what released
 * them): a job waiting for its next look (a hold rechecked on an interval, or a backoff) whose
 * condition an event may have met runs at once instead of at its next recheck. Only jobs that
 * already ran once (attempts > 0) and are due later are touched: a job not yet tried is due
 * anyway, and its own run decides whether it is still held. Returns how many were woken.
 */
export function* wakeHeldJobs(tx: Tx, wake: HeldWake, now: number): Generator<Statement, number, unknown> {
  const woken = tx
    .update(jobs)
    .set({ runAt: now, updatedAt: now })
    .where(
      and(
        eq(jobs.memberId, wake.memberId),
        eq(jobs.kind, wake.kind),
        eq(jobs.state, 'queued'),
        gt(jobs.attempts, 0),
        gt(jobs.runAt, now),
        wake.orderingKey === undefined ? undefined : eq(jobs.orderingKey, wake.orderingKey),
      ),
    );
  return changes(yield* exec(woken));
}

/**
 * Finishes a portal's waiting jobs of one kind as not run, inside the caller's transaction: work the
 * portal no longer wants done (Open Channels inbound messages when it leaves that mode). The event
 * log shows each failed with `reason`. Only queued jobs: a running one finishes as it was started,
 * and one whose effect is claimed (in doubt: it may have happened) is left to settle it. Returns
 * how many were finished.
 */
export function* finishWaitingJobs(tx: Tx, which: { memberId: string; kind: string; reason: string }, now: number): Generator<Statement, number, unknown> {
  const inDoubt = tx
    .select({ owner: effects.owner })
    .from(effects)
    // A claim's owner is the job's public id, or `<public id>#<attempt>` (src/db/effects.ts attemptOwner).
    .where(and(eq(effects.memberId, which.memberId), eq(effects.state, 'claimed'), or(eq(effects.owner, jobs.publicId), like(effects.owner, sql`${jobs.publicId} || '#%'`))));
  const finished = tx
    .update(jobs)
    .set({
      state: 'done',
      returnValues: JSON.stringify({ status: 'failed', error: which.reason }),
      logMessage: which.reason,
      lastError: which.reason,
      runAt: now,
      finishedAt: now,
      updatedAt: now,
    })
    .where(and(eq(jobs.memberId, which.memberId), eq(jobs.kind, which.kind), eq(jobs.state, 'queued'), notExists(inDoubt)));
  return changes(yield* exec(finished));
}

/**
 * A result that names its client's phone (a closed episode learns it only when it runs): its
 * digits, so the event log finds the job by phone (src/event-log.ts); a job's phone from its
 * enqueue is kept. Null for anything that is not an international number.
 */
function resultPhone(returnValues: Record<string, unknown>): string | null {
  const phone = returnValues.phone;
  return typeof phone === 'string' && /^\+?\d{5,15}$/.test(phone) ? phone.replace('+', '') : null;
}

interface PendingJob {
  input: NewJob;
  limits: { maxConfirming?: number };
  /** When it was enqueued: its created and due times. */
  now: number;
  resolve(stored: { job: Pick<JobRow, 'id'>; duplicate: boolean }): void;
  reject(error: unknown): void;
}

/** The durable job queue. Every state change is one statement or one transaction, so a crash never leaves a half-made job. */
/** The window over which `/healthz` reports a process's share of the finished runs. */
export const WORK_SHARE_WINDOW_MS = 5 * 60_000;

/**
 * PostgreSQL: the most jobs one batch stores (JobStore #storePending). Each job's input is bounded by
 * the request body's limit (src/body-limit.ts), so a batch's array parameters stay far below what a
 * string or a PostgreSQL value can hold.
 */
const MAX_BATCH_JOBS = 200;
/**
 * PostgreSQL: whether a batch that failed is stored again job by job. Yes when PostgreSQL refused
 * the statement itself (a deadlock with another process's batch, a job it cannot store): the
 * statement commits only on success, so nothing of it was stored, and each job gets its own answer.
 * Not when the connection failed or the server went away (SQLSTATE class 08, 57, XX, or no SQLSTATE
 * at all): the statement may have committed, and storing again could store a job twice; the error
 * is every caller's answer.
 */
function storedNothing(error: unknown): boolean {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|57|XX)/.test(code);
}

export class JobStore {
  /** Prepared once: the robot-call acknowledgement path runs these for every call. */
  readonly #insert;
  /** SQLite only: PostgreSQL runs the bounded insert in a transaction of its own (#storeOne). */
  readonly #insertBounded;
  readonly #byDedupKey;
  /** Prepared once: the dispatcher, the reports and the confirmations run these for every job. */
  readonly #hot: ReturnType<typeof prepareHot>;
  readonly #orderingHoldMs: number;
  /** Jobs enqueued since the last commit, committed together on the next turn of the event loop. */
  readonly #pending: PendingJob[] = [];
  /** PostgreSQL: a batch of `#pending` is being stored (JobStore #storePending). */
  #storing = false;
  /** PostgreSQL: a store starts at the end of this turn of the event loop (`enqueue`). */
  #storeScheduled = false;
  /** When this process finished each run of the last WORK_SHARE_WINDOW_MS, oldest first (`/healthz`: its share of the work). */
  readonly #finishedHere: number[] = [];

  constructor(
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
    options: JobStoreOptions = {},
  ) {
    const { db, dialect } = database;
    this.#orderingHoldMs = options.orderingHoldMs ?? DEFAULT_ORDERING_HOLD_MS;
    const p = (name: string) => sql.placeholder(name);
    this.#insert = db
      .insert(jobs)
      .values({
        kind: p('kind'),
        publicId: p('publicId'),
        memberId: p('memberId'),
        dedupKey: p('dedupKey'),
        orderingKey: p('orderingKey'),
        eventToken: p('eventToken'),
        robotCode: p('robotCode'),
        documentId: p('documentId'),
        input: p('input'),
        state: p('state'),
        runAt: p('runAt'),
        deadlineAt: p('deadlineAt'),
        returnValues: p('returnValues'),
        logMessage: p('logMessage'),
        finishedAt: p('finishedAt'),
        createdAt: p('createdAt'),
        updatedAt: p('updatedAt'),
        phone: p('phone'),
      })
      .onConflictDoNothing()
      // Only the id: the acknowledgement needs no more, and mapping the whole row showed in its profile.
      .returning({ id: jobs.id })
      .prepare();
    this.#insertBounded = dialect.kind === 'sqlite' ? db.$client.prepare(BOUNDED_INSERT) : undefined;
    this.#byDedupKey = db
      .select({ id: jobs.id })
      .from(jobs)
      .where(and(eq(jobs.memberId, p('memberId')), eq(jobs.dedupKey, p('dedupKey'))))
      .prepare();
    this.#hot = prepareHot(database);
  }

  /**
   * Inserts the job unless its (member_id, dedup_key) exists; a repeated trigger gets duplicate=true.
   * Jobs enqueued in the same turn of the event loop (concurrent robot calls) commit together: one
   * commit per call was a fifth of an acknowledgement's CPU. Each caller still gets its answer only
   * once its job is committed. With `maxConfirming`, the job is stored only while fewer jobs of its
   * portal wait for confirmation (robot calls, src/jobs/robot-calls.ts), else `UnconfirmedLimitReached`
   * is thrown and nothing is stored.
   */
  enqueue(input: NewJob, limits: { maxConfirming?: number } = {}): Promise<{ job: Pick<JobRow, 'id'>; duplicate: boolean }> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ input, limits, now: this.clock.now(), resolve, reject });
      if (this.database.dialect.kind === 'postgres') {
        if (!this.#storing && !this.#storeScheduled) {
          this.#storeScheduled = true;
          setImmediate(() => {
            this.#storeScheduled = false;
            void this.#storePending();
          });
        }
      } else if (this.#pending.length === 1) setImmediate(() => this.#commitPending());
    });
  }

  /**
   * PostgreSQL: one batch in flight at a time; calls arriving meanwhile wait and form the next one
   * (a group commit). A request's round trips, not the event loop's turns, decide how many share a
   * transaction: over HTTP nearly every call arrived in a turn of its own, so batching by turn left
   * one transaction (begin, the portal's lock, insert, commit) per call. The first batch after a
   * quiet moment still waits for the rest of its turn (`enqueue`): the calls read in the same
   * wake-up go with it instead of waiting a whole round trip for the next batch. Each batch costs
   * PostgreSQL about 0.2 ms of CPU on top of its calls (measured: docs/multi-process.md), which
   * every process shares.
   */
  async #storePending(): Promise<void> {
    if (this.#storing) return;
    this.#storing = true;
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0, MAX_BATCH_JOBS);
        try {
          await this.#storeBatch(batch);
        } catch (error) {
          // Whatever went wrong, its callers get an answer and the calls behind them are stored:
          // the loop never ends with calls pending (a caller answered already keeps its answer).
          for (const item of batch) item.reject(error);
        }
      }
    } finally {
      this.#storing = false;
    }
  }

  #commitPending(): void {
    const batch = this.#pending.splice(0);
    let stored: Array<{ job: Pick<JobRow, 'id'>; duplicate: boolean }>;
    try {
      stored = batch.length === 1 ? [this.#store(batch[0]!)] : this.database.db.transaction(() => batch.map((item) => this.#store(item)));
    } catch {
      // One job that cannot be stored (or is over its portal's bound) must not fail the others: each
      // alone, with its own answer.
      for (const item of batch) {
        try {
          item.resolve(this.#store(item));
        } catch (error) {
          item.reject(error);
        }
      }
      return;
    }
    for (const [i, item] of batch.entries()) item.resolve(stored[i]!);
  }

  /**
   * SQLite: stores one job synchronously, inside the batch's transaction (better-sqlite3's own
   * calls: a batch commits once, with nothing else between its statements).
   */
  #store({ input, limits, now }: PendingJob): { job: Pick<JobRow, 'id'>; duplicate: boolean } {
    const values = rowValues(input, now);
    const inserted =
      limits.maxConfirming === undefined ? this.#insert.get(values) : (this.#insertBounded!.get({ ...values, bound: limits.maxConfirming }) as Pick<JobRow, 'id'> | undefined);
    const existing = inserted || input.dedupKey === undefined ? undefined : this.#byDedupKey.get({ memberId: input.memberId, dedupKey: input.dedupKey });
    return stored(input, limits, inserted, existing);
  }

  /**
   * PostgreSQL: the batch in one statement (STORE_JOBS), in arrival order. One round trip per call
   * held each process to one call at a time behind a portal's lock (about 150 acknowledgements a
   * second whatever the processes; measured by `npm run bench -- --db postgres`). A job over its
   * bound gets its refusal and leaves the others stored; if PostgreSQL refuses the statement (a
   * deadlock with another process's batch; see storedNothing), each job is stored alone, with its
   * own answer.
   */
  async #storeBatch(batch: PendingJob[]): Promise<void> {
    if (batch.length === 1 && batch[0]!.limits.maxConfirming === undefined) {
      const [item] = batch as [PendingJob];
      await this.#storeOne(item).then(item.resolve, item.reject);
      return;
    }
    const { dialect } = this.database;
    let inserted: Array<Pick<JobRow, 'id'> | undefined>;
    try {
      inserted = await this.#storeRows(batch);
    } catch (error) {
      if (!storedNothing(error)) {
        for (const item of batch) item.reject(error);
        return;
      }
      for (const item of batch) await this.#storeOne(item).then(item.resolve, item.reject);
      return;
    }
    for (const [i, item] of batch.entries()) {
      try {
        const row = inserted[i];
        const existing =
          row || item.input.dedupKey === undefined
            ? undefined
            : await dialect.get<Pick<JobRow, 'id'>>(this.#byDedupKey, { memberId: item.input.memberId, dedupKey: item.input.dedupKey });
        item.resolve(stored(item.input, item.limits, row, existing));
      } catch (error) {
        item.reject(error);
      }
    }
  }

  /**
   * PostgreSQL: jobs stored by `c2d_store_jobs` (see STORE_JOBS) in one statement; the row each
   * job got, in the batch's order (undefined: a duplicate, or a robot call over its portal's bound).
   */
  async #storeRows(batch: PendingJob[]): Promise<Array<Pick<JobRow, 'id'> | undefined>> {
    const rows = batch.map(({ input, now }) => rowValues(input, now));
    const bounds = batch.flatMap(({ limits }) => (limits.maxConfirming === undefined ? [] : [limits.maxConfirming]));
    const parameters = [
      ...STORE_COLUMNS.map(([name]) => rows.map((row) => row[name])),
      batch.map(({ limits }) => limits.maxConfirming !== undefined),
      // One bound for the batch: every robot call is enqueued with the configured one.
      bounds.length === 0 ? 0 : Math.min(...bounds),
    ];
    const stored = await this.database.dialect.namedRows<Pick<JobRow, 'id' | 'publicId'>>(this.database.db, STORE_JOBS.name, STORE_JOBS.text, parameters);
    const byPublicId = new Map(stored.map((row) => [row.publicId, { id: row.id }]));
    return rows.map((row) => byPublicId.get(row.publicId));
  }

  /** PostgreSQL: stores one job; a bounded one as a batch of one (see STORE_JOBS). */
  async #storeOne(item: PendingJob): Promise<{ job: Pick<JobRow, 'id'>; duplicate: boolean }> {
    const { input, limits, now } = item;
    const { dialect } = this.database;
    const inserted = limits.maxConfirming === undefined ? await dialect.get<Pick<JobRow, 'id'>>(this.#insert, rowValues(input, now)) : (await this.#storeRows([item]))[0];
    const existing = inserted || input.dedupKey === undefined ? undefined : await dialect.get(this.#byDedupKey, { memberId: input.memberId, dedupKey: input.dedupKey });
    return stored(input, limits, inserted, existing);
  }

  /**
   * Other processes may claim from this queue (PostgreSQL): the dispatcher claims with `claimDue`,
   * and batches hold their jobs (`holdForBatch`). SQLite has one process, which reads and claims.
   */
  get sharedByProcesses(): boolean {
    return this.database.dialect.kind === 'postgres';
  }

  /** The whole row of one job (support questions, tests). */
  async get(id: number): Promise<JobRow | undefined> {
    const [row] = await this.database.db.select().from(jobs).where(eq(jobs.id, id));
    return row;
  }

  /**
   * Jobs whose turn has come to run, oldest first. Portals that cannot take more right now are left
   * out, so one portal's backlog does not hide the others'. A run waits while an earlier job of its
   * ordering key is pending: running under a live lease, or queued and not yet holding the key
   * longer than the hold allows. `excludeKinds` leaves out only some kinds of a portal (those whose
   * slots are full, src/jobs/dispatcher.ts).
   */
  async due(_state: 'queued', limit: number, excludeMemberIds: string[] = [], excludeKinds: Array<{ memberId: string; kind: string }> = []): Promise<RunnableJob[]> {
    const now = this.clock.now();
    const heldSince = now - this.#orderingHoldMs;
    const { dialect } = this.database;
    if (excludeMemberIds.length === 0 && excludeKinds.length === 0) return dialect.all(this.#hot.dueRunsNoneExcluded, { now, limit, heldSince });
    const excludedKinds = JSON.stringify(excludeKinds.map(({ memberId, kind }) => `${memberId} ${kind}`));
    return dialect.all(this.#hot.dueRuns, { now, excluded: JSON.stringify(excludeMemberIds), excludedKinds, limit, heldSince });
  }

  /**
   * Per portal, how many results are ready to report and since when, oldest portal first (portals
   * with a batch in flight left out): the reports loop looks after every finished run, and mostly
   * decides to wait, so it reads the rows themselves only for a batch that goes (`dueReports`).
   */
  async dueReportSummary(excludeMemberIds: string[] = []): Promise<ReadyReports[]> {
    return this.database.dialect.all(this.#hot.dueReportSummary, { now: this.clock.now(), excluded: JSON.stringify(excludeMemberIds) });
  }

  /** A portal's results ready to report, oldest first, at most `limit` (one batch's worth). */
  async dueReports(memberId: string, limit: number): Promise<ReportRow[]> {
    return this.database.dialect.all(this.#hot.dueReports, { now: this.clock.now(), memberId, limit });
  }

  /** When the next job to confirm, run or report becomes due, if any. */
  async nextDueAt(): Promise<number | undefined> {
    return (await this.database.dialect.get(this.#hot.nextDueAt))?.at ?? undefined;
  }

  /** When the latest job of this kind for the portal was due to run: the start of a throttle. */
  async lastRunAt(memberId: string, kind: string): Promise<number | undefined> {
    const [row] = await this.database.db
      .select({ at: max(jobs.runAt) })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.kind, kind), isNotNull(jobs.startedAt)));
    return row?.at ?? undefined;
  }

  /**
   * Takes jobs waiting in `state` (to be confirmed, or reported) for one batch request of this
   * process, where other processes read the same queue: each is due again only at `now + holdMs`,
   * so no other process sends it meanwhile (a result reported twice, a log line written twice).
   * Conditional on being due: of two processes holding the same job, one gets it. The batch's
   * answer moves the jobs on (confirmed, reported, retried later); a process that dies holding
   * them leaves them due again when the hold runs out. Returns the ids this process holds.
   */
  async holdForBatch(state: 'confirming' | 'reporting', ids: number[], holdMs: number): Promise<Set<number>> {
    if (ids.length === 0) return new Set();
    const now = this.clock.now();
    const held = await this.database.db
      .update(jobs)
      .set({ runAt: now + holdMs, updatedAt: now })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, state), lte(jobs.runAt, now)))
      .returning({ id: jobs.id });
    return new Set(held.map((row) => row.id));
  }

  /** A batch request still going: its jobs stay held another `holdMs` (only those still held). */
  async extendBatchHold(state: 'confirming' | 'reporting', ids: number[], holdMs: number): Promise<void> {
    if (ids.length === 0) return;
    const now = this.clock.now();
    await this.database.db
      .update(jobs)
      .set({ runAt: now + holdMs, updatedAt: now })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, state), gt(jobs.runAt, now)));
  }

  /**
   * A stopping process gives back a run it could not finish in its grace (PostgreSQL): queued
   * again at once, ahead of the queue, for another process to take up now rather than when the
   * lease runs out. Only the attempt that holds the job; the taker settles its effects first.
   */
  async handBack(claimed: ClaimedAttempt): Promise<boolean> {
    const now = this.clock.now();
    const { db, dialect } = this.database;
    const firstQueued = db
      .select({ at: min(jobs.runAt) })
      .from(jobs)
      .where(eq(jobs.state, 'queued'));
    return (
      changes(
        await db
          .update(jobs)
          .set({ state: 'queued', leaseUntil: null, runAt: sql`${dialect.least(now, sql`coalesce((${firstQueued}), ${now})`)} - 1`, updatedAt: now })
          .where(and(eq(jobs.id, claimed.id), eq(jobs.state, 'running'), eq(jobs.attempts, claimed.attempts))),
      ) === 1
    );
  }

  /** The portal confirmed these calls: they may run now. */
  async confirm(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.dialect.run(this.#hot.confirm, { ids: JSON.stringify(ids), now: this.clock.now() });
  }

  /** The portal denied these calls: they end without running and without a result to send. */
  async refuseUnconfirmed(ids: number[], reason: string): Promise<void> {
    if (ids.length === 0) return;
    const now = this.clock.now();
    await this.database.db
      .update(jobs)
      .set({ state: 'done', lastError: reason, finishedAt: now, updatedAt: now })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'confirming')));
  }

  /** The portal could not be asked: ask again at `runAt`. */
  async retryConfirmationLater(ids: number[], runAt: number, error: string): Promise<void> {
    if (ids.length === 0) return;
    await this.database.db
      .update(jobs)
      .set({ runAt, lastError: error, confirmAttempts: sql`${jobs.confirmAttempts} + 1`, updatedAt: this.clock.now() })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'confirming')));
  }

  /**
   * An unconfirmed call out of time ends with a failed result and nothing run. Sending it is
   * harmless: Bitrix24 refuses bizproc.event.send for a token it did not issue (docs/protocols.md B8).
   */
  async failUnconfirmed(id: number, returnValues: Record<string, unknown>, logMessage: string): Promise<void> {
    const now = this.clock.now();
    await this.database.db
      .update(jobs)
      .set({ state: 'reporting', returnValues: JSON.stringify(returnValues), logMessage, runAt: now, finishedAt: now, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.state, 'confirming')));
  }

  /**
   * Takes a queued job for one attempt. `releaseDedupKey`: a kind that allows one *pending* job per
   * key (register_app) frees the key when the job starts, so a trigger arriving meanwhile queues another.
   * A retried job does not take its key back: a trigger during its backoff queues one more job, which
   * then holds the key, so later triggers fold into it. That is one extra run at most, and harmless
   * for register_app (re-registration reads the current robots and writes them whole; its throttle
   * spaces the two runs).
   */
  async claim(id: number, leaseMs: number, releaseDedupKey = false): Promise<JobRow | undefined> {
    const now = this.clock.now();
    return this.database.dialect.get(releaseDedupKey ? this.#hot.claimReleasingKey : this.#hot.claim, { id, now, leaseUntil: now + leaseMs });
  }

  /**
   * PostgreSQL, several processes: `due` and `claim` in one statement (docs/multi-process.md "The
   * claim with leases"). Takes up to `limit` due jobs, by the same rules as `due` (run_at, the
   * ordering key's head and hold), and at most what each portal's slot group has free: `slots` maps
   * a kind with slots of its own to their number, `''` to the common slots of every other kind, and
   * a group's running jobs with a live lease count against it, whichever process runs them.
   * Counting and claiming run under one transaction-level advisory lock, so two processes claiming
   * at once cannot both fill the same free slot (each statement of READ COMMITTED sees what the
   * one before it committed); the claims themselves take a few milliseconds. `for update skip
   * locked` steps over rows another transaction holds (an uninstall cancelling them) instead of
   * waiting. `releasingKinds`: kinds whose dedup key is freed when they start (see `claim`).
   */
  async claimDue(limit: number, leaseMs: number, slots: Record<string, number>, releasingKinds: string[]): Promise<JobRow[]> {
    const { dialect } = this.database;
    if (dialect.kind !== 'postgres') throw new Error('claimDue is the PostgreSQL claim; SQLite claims with due and claim');
    const now = this.clock.now();
    const values = { now, heldSince: now - this.#orderingHoldMs, limit, leaseUntil: now + leaseMs, slots: JSON.stringify(slots), releasing: JSON.stringify(releasingKinds) };
    return dialect.transaction(function* (tx) {
      yield* exec(dialect.rows(tx, sql`select pg_advisory_xact_lock(${CLAIM_LOCK})`));
      return yield* exec(claimDueStatement(tx, dialect, values));
    });
  }

  /**
   * Only the attempt that holds the job moves it on: one cancelled meanwhile (uninstall) stays
   * cancelled, and one that lost its lease (taken up again by another worker) changes nothing.
   */
  async retryLater(claimed: ClaimedAttempt, runAt: number, error: string): Promise<void> {
    await this.database.db
      .update(jobs)
      .set({ state: 'queued', runAt, lastError: error, leaseUntil: null, updatedAt: this.clock.now() })
      .where(and(eq(jobs.id, claimed.id), eq(jobs.state, 'running'), eq(jobs.attempts, claimed.attempts)));
  }

  /**
   * The client's phone (international digits), learnt while the job runs: a closed episode reads it
   * from Chat2Desk and keeps it even when the run then fails, so the event log finds the failure by
   * phone. A phone stored earlier stays.
   */
  async notePhone(id: number, phone: string): Promise<void> {
    await this.database.db
      .update(jobs)
      .set({ phone: sql`coalesce(${jobs.phone}, ${phone})` })
      .where(eq(jobs.id, id));
  }

  /** The attempt is still going: its lease runs `leaseMs` from now. False once it lost the job. */
  async renewLease(claimed: ClaimedAttempt, leaseMs: number): Promise<boolean> {
    const now = this.clock.now();
    return (await this.database.dialect.run(this.#hot.renewLease, { id: claimed.id, attempt: claimed.attempts, leaseUntil: now + leaseMs, now })) === 1;
  }

  /**
   * The run is over: its result waits to be sent back to Bitrix24 (`next: 'report'`), or the job is
   * done. Follow-up jobs are stored in the same transaction, only if the finish took effect. Only
   * the attempt that holds the job finishes it (see `retryLater`).
   */
  async finish(claimed: ClaimedAttempt, returnValues: Record<string, unknown>, logMessage: string, plan: FinishPlan = { next: 'report' }): Promise<void> {
    const { id, attempts } = claimed;
    const now = this.clock.now();
    const phone = plan.phone ?? resultPhone(returnValues);
    const finish = (tx: Tx) =>
      tx
        .update(jobs)
        .set({
          state: plan.next === 'report' ? 'reporting' : 'done',
          returnValues: JSON.stringify(returnValues),
          logMessage,
          runAt: now,
          leaseUntil: null,
          finishedAt: now,
          updatedAt: now,
          phone: sql`coalesce(${jobs.phone}, ${phone})`,
        })
        .where(and(eq(jobs.id, id), eq(jobs.state, 'running'), eq(jobs.attempts, attempts)));
    const followUps = plan.followUps ?? [];
    // One prepared statement when nothing follows (every robot run): no transaction to pay for.
    if (followUps.length === 0) {
      const finished = await this.database.dialect.run(this.#hot.finish, {
        id,
        attempt: attempts,
        now,
        state: plan.next === 'report' ? 'reporting' : 'done',
        returnValues: JSON.stringify(returnValues),
        logMessage,
        phone,
      });
      if (finished > 0) this.#noteFinished(now);
      return;
    }
    const finished = await this.database.dialect.transaction(function* (tx) {
      const changed = changes(yield* exec(finish(tx)));
      if (changed > 0) yield* insertJobs(tx, followUps, now);
      return changed;
    });
    if (finished > 0) this.#noteFinished(now);
  }

  #noteFinished(at: number): void {
    this.#finishedHere.push(at);
    while (this.#finishedHere.length > 0 && this.#finishedHere[0]! < at - WORK_SHARE_WINDOW_MS) this.#finishedHere.shift();
  }

  /**
   * Runs finished in the last WORK_SHARE_WINDOW_MS by this process and by every process sharing
   * the database (the jobs' `finished_at`): `/healthz` shows how the work spreads over processes.
   * The total also counts results known without a run (refused or expired calls).
   */
  async workShare(): Promise<{ windowMs: number; finishedHere: number; finishedAll: number }> {
    const since = this.clock.now() - WORK_SHARE_WINDOW_MS;
    const [row] = await this.database.db.select({ n: count() }).from(jobs).where(gt(jobs.finishedAt, since));
    return { windowMs: WORK_SHARE_WINDOW_MS, finishedHere: this.#finishedHere.filter((at) => at > since).length, finishedAll: row?.n ?? 0 };
  }

  async markReported(ids: number[], reportError?: string): Promise<void> {
    if (ids.length === 0) return;
    await this.database.dialect.run(this.#hot.markReported, { ids: JSON.stringify(ids), reportError: reportError ?? null, now: this.clock.now() });
  }

  async retryReportLater(ids: number[], runAt: number, error: string): Promise<void> {
    if (ids.length === 0) return;
    await this.database.db
      .update(jobs)
      .set({ runAt, reportError: error, reportAttempts: sql`${jobs.reportAttempts} + 1`, updatedAt: this.clock.now() })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'reporting')));
  }

  /**
   * Running jobs whose lease ran out (their worker stopped, or stalled without renewing it) are
   * taken up again, ahead of every queued job (`due` goes by run_at): the effect may be in doubt,
   * and settling it must not wait behind a backlog that keeps changing what it looks for (a send's
   * newer messages to the same client). A live lease is another worker's run still going, left
   * alone; `leases: 'all'` is for a database no other process can open (SQLite's exclusive lock),
   * where at start every running job is one this process was running when it stopped.
   */
  async requeueInterrupted(leases: 'expired' | 'all' = 'expired'): Promise<number> {
    const now = this.clock.now();
    const { db, dialect } = this.database;
    const firstQueued = db
      .select({ at: min(jobs.runAt) })
      .from(jobs)
      .where(eq(jobs.state, 'queued'));
    return changes(
      await db
        .update(jobs)
        .set({ state: 'queued', leaseUntil: null, runAt: sql`${dialect.least(now, sql`coalesce((${firstQueued}), ${now})`)} - 1`, updatedAt: now })
        .where(and(eq(jobs.state, 'running'), leases === 'all' ? undefined : or(isNull(jobs.leaseUntil), lte(jobs.leaseUntil, now)))),
    );
  }

  /**
   * Finished jobs are the event log ("did the robot run?"): each portal keeps them for its
   * `eventLogRetentionDays` (src/portal-settings.ts), read here from the stored settings so that one
   * statement prunes every portal; a value the settings schema would refuse counts as the default.
   */
  async pruneFinished(now: number, defaultRetentionDays: number): Promise<number> {
    const { db, dialect } = this.database;
    const days = dialect.jsonInteger(portals.settings, 'eventLogRetentionDays');
    const retentionDays = db
      .select({ days: sql`case when ${days} between 1 and 365 then ${days} end` })
      .from(portals)
      .where(eq(portals.memberId, jobs.memberId));
    return changes(
      await db
        .delete(jobs)
        .where(and(inArray(jobs.state, ['done', 'cancelled']), sql`${jobs.updatedAt} <= ${now} - 86400000 * coalesce((${retentionDays}), ${defaultRetentionDays})`)),
    );
  }

  async cancelPortal(memberId: string): Promise<number> {
    return changes(
      await this.database.db
        .update(jobs)
        .set({ state: 'cancelled', reportError: 'portal uninstalled', dedupKey: sql`case when ${jobs.kind} = 'robot' then ${jobs.dedupKey} end`, updatedAt: this.clock.now() })
        .where(and(eq(jobs.memberId, memberId), inArray(jobs.state, ['confirming', 'queued', 'running', 'reporting']))),
    );
  }

  /**
   * Robot calls to confirm whose turn has come, oldest first, without their input (see `due`): at
   * most `perPortal` of each portal, and every one past its deadline.
   */
  async dueConfirmations(limit: number, excludeMemberIds: string[] = [], perPortal = limit): Promise<ConfirmationRow[]> {
    return this.database.dialect.all(this.#hot.dueConfirmations, { now: this.clock.now(), excluded: JSON.stringify(excludeMemberIds), limit, perPortal });
  }

  /** Jobs of this kind and portal still to confirm, queued or running (counted up to `atMost`): more results are on the way. */
  async activeCount(memberId: string, kind: string, atMost = Number.MAX_SAFE_INTEGER): Promise<number> {
    return (await this.database.dialect.get(this.#hot.activeCount, { memberId, kind, atMost }))?.n ?? 0;
  }

  /** Jobs of these kinds running, or queued and due now (or waiting to be confirmed). */
  async dueOrRunning(kinds: string[]): Promise<number> {
    const now = this.clock.now();
    const [row] = await this.database.db
      .select({ n: count() })
      .from(jobs)
      .where(and(inArray(jobs.kind, kinds), or(eq(jobs.state, 'running'), and(inArray(jobs.state, ['confirming', 'queued']), lte(jobs.runAt, now)))));
    return row?.n ?? 0;
  }

  /** Confirmed jobs of the portal waiting for their turn to run. */
  async waitingToRun(memberId: string): Promise<number> {
    const [row] = await this.database.db
      .select({ n: count() })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.state, 'queued')));
    return row?.n ?? 0;
  }

  async depth(): Promise<QueueDepth> {
    const rows = await this.database.db
      .select({ state: jobs.state, n: count() })
      .from(jobs)
      .where(inArray(jobs.state, ['confirming', 'queued', 'running', 'reporting']))
      .groupBy(jobs.state);
    const depth: QueueDepth = { queued: 0, running: 0, reporting: 0 };
    for (const row of rows) depth[row.state === 'confirming' ? 'queued' : (row.state as keyof QueueDepth)] += row.n;
    return depth;
  }

  async countByState(memberId?: string): Promise<Record<string, number>> {
    const rows = await this.database.db
      .select({ state: jobs.state, n: count() })
      .from(jobs)
      .where(memberId ? eq(jobs.memberId, memberId) : undefined)
      .groupBy(jobs.state);
    return Object.fromEntries(rows.map((row) => [row.state, row.n]));
  }

  /**
   * Robot results Bitrix24 has not taken: being retried after a failed delivery, and given up on
   * since `since` (the app page's health). Refusals for workflows that no longer wait are not counted.
   */
  async undeliveredResults(memberId: string, since: number): Promise<{ retrying: number; gaveUp: number; lastError: string | null }> {
    const retrying = and(eq(jobs.memberId, memberId), eq(jobs.state, 'reporting'), gt(jobs.reportAttempts, 0));
    const gaveUp = and(eq(jobs.memberId, memberId), eq(jobs.state, 'done'), sql`${jobs.reportError} like 'gave up delivering%'`, gt(jobs.updatedAt, since));
    const { db } = this.database;
    // mapWith: PostgreSQL's sum is a bigint or numeric, which node-postgres may read as text.
    const [counts] = await db
      .select({
        retrying: sql<number>`coalesce(sum(case when ${retrying} then 1 else 0 end), 0)`.mapWith(Number),
        gaveUp: sql<number>`coalesce(sum(case when ${gaveUp} then 1 else 0 end), 0)`.mapWith(Number),
      })
      .from(jobs)
      .where(or(retrying, gaveUp));
    const [last] = await db.select({ error: jobs.reportError }).from(jobs).where(or(retrying, gaveUp)).orderBy(sql`${jobs.updatedAt} desc`).limit(1);
    return { retrying: counts?.retrying ?? 0, gaveUp: counts?.gaveUp ?? 0, lastError: last?.error ?? null };
  }
}

/** What a job's insert found: the new job, its duplicate, or an error saying why neither. */
function stored(input: NewJob, limits: { maxConfirming?: number }, inserted: Pick<JobRow, 'id'> | undefined, existing: Pick<JobRow, 'id'> | undefined) {
  if (inserted) return { job: inserted, duplicate: false };
  if (existing) return { job: existing, duplicate: true };
  if (limits.maxConfirming !== undefined) throw new UnconfirmedLimitReached(input.memberId, limits.maxConfirming);
  throw new Error(`job of kind ${input.kind} was not stored and has no duplicate`);
}

/**
 * An earlier job of the same ordering key that holds it (correlated with the outer `jobs` row): a
 * running head keeps the key while its lease is live, however long it runs; only a head queued
 * between failed attempts gives it up, once its first attempt began longer ago than the hold.
 */
function heldByEarlierJob(db: DatabaseAccess['db'], now: number | SQLWrapper, heldSince: number | SQLWrapper) {
  const earlier = alias(jobs, 'earlier');
  return db
    .select({ id: earlier.id })
    .from(earlier)
    .where(
      and(
        eq(earlier.memberId, jobs.memberId),
        eq(earlier.orderingKey, jobs.orderingKey),
        lt(earlier.id, jobs.id),
        or(
          eq(earlier.state, 'confirming'),
          and(eq(earlier.state, 'running'), gt(earlier.leaseUntil, now)),
          and(eq(earlier.state, 'queued'), or(isNull(earlier.startedAt), gt(earlier.startedAt, heldSince), like(earlier.orderingKey, `${HELD_ORDERING_PREFIX}%`))),
        ),
      ),
    );
}

/** The advisory lock the PostgreSQL claim takes for its transaction (`claimDue`): any constant of ours. */
const CLAIM_LOCK = 0x6a6f6273; // 'jobs'

/**
 * The PostgreSQL claim (`JobStore.claimDue`): the running jobs per portal and slot group, the first
 * `limit` due jobs of groups with a slot free, of those as many per group as it has free, locked
 * (skipping rows locked elsewhere) and taken for one attempt.
 */
function claimDueStatement(tx: Tx, dialect: Dialect, values: { now: number; heldSince: number; limit: number; leaseUntil: number; slots: string; releasing: string }) {
  const { now, limit, slots } = values;
  const groupOf = (kind: SQL) => sql`case when (cast(${slots} as jsonb) ->> ${kind}) is not null then ${kind} else '' end`;
  const slotsOf = (group: SQL) => sql`cast(cast(${slots} as jsonb) ->> ${group} as integer)`;
  const picked = sql`
    with busy as (
      select running.member_id, running.grp, count(*) as n
      from (select r.member_id, ${groupOf(sql`r.kind`)} as grp from jobs r where r.state = 'running' and r.lease_until > ${now}) running
      group by running.member_id, running.grp
    ), candidates as (
      select ${jobs.id} as id, ${jobs.memberId} as member_id, ${jobs.runAt} as run_at, ${groupOf(sql`${jobs.kind}`)} as grp
      from ${jobs}
      where ${and(
        eq(jobs.state, 'queued'),
        lte(jobs.runAt, now),
        or(isNull(jobs.orderingKey), notExists(heldByEarlierJob(tx as unknown as DatabaseAccess['db'], now, values.heldSince))),
      )}
        and not exists (select 1 from busy b where b.member_id = ${jobs.memberId} and b.grp = ${groupOf(sql`${jobs.kind}`)} and b.n >= ${slotsOf(sql`b.grp`)})
      order by ${jobs.runAt}, ${jobs.id}
      limit ${limit}
    ), ranked as (
      select c.id, row_number() over (partition by c.member_id, c.grp order by c.run_at, c.id) as place, ${slotsOf(sql`c.grp`)} - coalesce(b.n, 0) as free
      from candidates c left join busy b on b.member_id = c.member_id and b.grp = c.grp
    )
    select ${jobs.id} from ${jobs}
    where ${jobs.id} in (select ranked.id from ranked where ranked.place <= ranked.free) and ${jobs.state} = 'queued'
    for update skip locked`;
  return tx
    .update(jobs)
    .set({
      state: 'running',
      attempts: sql`${jobs.attempts} + 1`,
      leaseUntil: values.leaseUntil,
      startedAt: sql`coalesce(${jobs.startedAt}, ${now})`,
      dedupKey: sql`case when ${dialect.inJsonList(jobs.kind, sql`${values.releasing}`, 'text')} then null else ${jobs.dedupKey} end`,
      updatedAt: now,
    })
    .where(sql`${jobs.id} in (${picked})`)
    .returning();
}

/**
 * The statements every job runs through, prepared once: building the SQL and preparing it per call
 * was a third of the server's CPU in a burst. Lists go in as one JSON parameter (the dialect's
 * `inJsonList`), so one prepared statement fits any list; values in `.set()` need sql`${placeholder}`.
 */
function prepareHot({ db, dialect }: { db: DatabaseAccess['db']; dialect: Dialect }) {
  const p = (name: string) => sql.placeholder(name);
  const now = sql`${p('now')}`;
  const inList = (column: typeof jobs.id, name: string) => dialect.inJsonList(column, p(name), 'integer');
  const notExcluded = sql`not ${dialect.inJsonList(jobs.memberId, p('excluded'), 'text')}`;
  const heldByEarlier = heldByEarlierJob(db, p('now'), p('heldSince'));
  // Only the id and its place go through the window's sort; the columns are read for the rows kept.
  // Sorting every waiting call's whole row was most of this read's cost in a burst (4 ms for 1,000).
  const confirmationPlaces = db
    .select({
      id: sql<number>`${jobs.id}`.as('place_id'),
      // Counted apart from the calls out of time, which are all read: as if those were not there.
      place: sql<number>`row_number() over (partition by ${jobs.memberId}, ${jobs.deadlineAt} < ${p('now')} order by ${jobs.runAt}, ${jobs.id})`.as('place'),
    })
    .from(jobs)
    .where(and(eq(jobs.state, 'confirming'), lte(jobs.runAt, p('now')), notExcluded))
    .as('confirmation_places');
  // Only the columns each use needs: the dispatcher looks again after every finished run, and
  // reading (and mapping) whole rows there made a burst's dispatching quadratic in CPU.
  const dueRuns = (excluded: SQL | undefined) =>
    db
      .select({ id: jobs.id, memberId: jobs.memberId, eventToken: jobs.eventToken, kind: jobs.kind })
      .from(jobs)
      .where(and(eq(jobs.state, 'queued'), lte(jobs.runAt, p('now')), excluded, or(isNull(jobs.orderingKey), notExists(heldByEarlier))))
      .orderBy(asc(jobs.runAt), asc(jobs.id))
      .limit(p('limit'))
      .prepare();
  const claim = (releaseDedupKey: boolean) =>
    db
      .update(jobs)
      .set({
        state: 'running',
        attempts: sql`${jobs.attempts} + 1`,
        leaseUntil: sql`${p('leaseUntil')}`,
        startedAt: sql`coalesce(${jobs.startedAt}, ${p('now')})`,
        ...(releaseDedupKey ? { dedupKey: null } : {}),
        updatedAt: now,
      })
      .where(and(eq(jobs.id, p('id')), eq(jobs.state, 'queued')))
      .returning()
      .prepare();
  return {
    dueRuns: dueRuns(and(notExcluded, sql`not ${dialect.inJsonList(sql`(${jobs.memberId} || ' ' || ${jobs.kind})`, p('excludedKinds'), 'text')}`)),
    // Most passes exclude no portal: json_each's list, even empty, cost a fifth of the read.
    dueRunsNoneExcluded: dueRuns(undefined),
    // One pass over the `jobs_due` index, no row read or mapped: most passes decide to wait.
    dueReportSummary: db
      .select({ memberId: jobs.memberId, count: sql<number>`count(*)`.mapWith(Number), oldestRunAt: sql<number>`min(${jobs.runAt})`.mapWith(Number) })
      .from(jobs)
      .where(and(eq(jobs.state, 'reporting'), lte(jobs.runAt, p('now')), notExcluded))
      .groupBy(jobs.memberId)
      .orderBy(sql`min(${jobs.runAt})`, jobs.memberId)
      .prepare(),
    dueReports: db
      .select(reportColumns)
      .from(jobs)
      .where(and(eq(jobs.memberId, p('memberId')), eq(jobs.state, 'reporting'), lte(jobs.runAt, p('now'))))
      .orderBy(asc(jobs.runAt), asc(jobs.id))
      .limit(p('limit'))
      .prepare(),
    dueConfirmations: db
      .select({
        id: jobs.id,
        memberId: jobs.memberId,
        eventToken: jobs.eventToken,
        robotCode: jobs.robotCode,
        runAt: jobs.runAt,
        deadlineAt: jobs.deadlineAt,
        confirmAttempts: jobs.confirmAttempts,
        lastError: jobs.lastError,
      })
      .from(confirmationPlaces)
      .innerJoin(jobs, eq(jobs.id, confirmationPlaces.id))
      // Beyond a portal's first batch only what is out of time: it ends now, unconfirmed.
      .where(or(lte(confirmationPlaces.place, p('perPortal')), lt(jobs.deadlineAt, p('now'))))
      .orderBy(asc(jobs.runAt), asc(jobs.id))
      .limit(p('limit'))
      .prepare(),
    nextDueAt: db
      .select({ at: min(jobs.runAt) })
      .from(jobs)
      .where(inArray(jobs.state, ['confirming', 'queued', 'reporting']))
      .prepare(),
    confirm: db
      .update(jobs)
      .set({ state: 'queued', confirmedAt: now, runAt: now, updatedAt: now })
      .where(and(inList(jobs.id, 'ids'), eq(jobs.state, 'confirming')))
      .prepare(),
    claim: claim(false),
    claimReleasingKey: claim(true),
    finish: db
      .update(jobs)
      .set({
        state: sql`${p('state')}`,
        returnValues: sql`${p('returnValues')}`,
        logMessage: sql`${p('logMessage')}`,
        runAt: now,
        leaseUntil: null,
        finishedAt: now,
        updatedAt: now,
        phone: sql`coalesce(${jobs.phone}, ${p('phone')})`,
      })
      .where(and(eq(jobs.id, p('id')), eq(jobs.state, 'running'), eq(jobs.attempts, p('attempt'))))
      .prepare(),
    renewLease: db
      .update(jobs)
      .set({ leaseUntil: sql`${p('leaseUntil')}`, updatedAt: now })
      .where(and(eq(jobs.id, p('id')), eq(jobs.state, 'running'), eq(jobs.attempts, p('attempt'))))
      .prepare(),
    markReported: db
      .update(jobs)
      .set({ state: 'done', reportError: sql`${p('reportError')}`, updatedAt: now })
      .where(and(inList(jobs.id, 'ids'), eq(jobs.state, 'reporting')))
      .prepare(),
    // Counted up to `atMost`: a batch only asks whether more results will join it, not how many.
    activeCount: db
      .select({ n: count() })
      .from(
        db
          .select({ id: jobs.id })
          .from(jobs)
          .where(and(eq(jobs.memberId, p('memberId')), inArray(jobs.state, PENDING_STATES), eq(jobs.kind, p('kind'))))
          .limit(p('atMost'))
          .as('active'),
      )
      .prepare(),
  };
}

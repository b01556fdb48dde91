import { and, desc, eq, gte, inArray, lt, notInArray, or, sql, type SQL } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';
import type { Dialect } from './dialect.js';
import { jobs } from './schema.js';

/** What an entry shows of its job's state: the first five of the event log's statuses. */
export type EntryStatus = 'waiting' | 'running' | 'done' | 'failed' | 'cancelled';

/** The event log's kinds, each a set of job kinds (src/event-log.ts maps them). */
export interface KindFilter {
  /** Only these job kinds… */
  in?: string[];
  /** …or every job kind but these. */
  notIn?: string[];
}

export interface EventLogQuery {
  memberId: string;
  status?: EntryStatus;
  kind?: KindFilter;
  /** created_at bounds, ms: from inclusive, to exclusive. */
  from?: number;
  to?: number;
  /** International digits (jobs.phone). */
  phone?: string;
  /** The last entry of the previous page: entries strictly older come next. */
  before?: { createdAt: number; id: number };
  limit: number;
}

/** A job as the event log reads it: everything but a robot call's properties (up to ~256 KB). */
export interface EventLogRow {
  id: number;
  publicId: string;
  kind: string;
  state: string;
  robotCode: string | null;
  documentId: string | null;
  /** The kind's input for every kind but robots (small: ids and times). */
  input: string | null;
  returnValues: string | null;
  logMessage: string | null;
  lastError: string | null;
  reportError: string | null;
  attempts: number;
  phone: string | null;
  dedupKey: string | null;
  createdAt: number;
  finishedAt: number | null;
  status: EntryStatus;
}

/**
 * The status of a job in the admin's words, in SQL so that the status filter and the page agree:
 * confirming or queued (a retry's backoff included) is waiting; a finished job failed when its
 * result says so or its result could not be handed back; a call the portal never confirmed (done
 * without a result) did not run.
 */
const statusOf = (dialect: Dialect) => sql<EntryStatus>`case
  when ${jobs.state} in ('confirming', 'queued') then 'waiting'
  when ${jobs.state} = 'running' then 'running'
  when ${jobs.state} = 'cancelled' then 'cancelled'
  when ${jobs.returnValues} is null then 'cancelled'
  when ${dialect.jsonText(jobs.returnValues, 'status')} = 'failed' then 'failed'
  when ${jobs.state} = 'reporting' then 'running'
  when ${jobs.reportError} is not null then 'failed'
  else 'done' end`;

const columnsOf = (status: SQL<EntryStatus>) => ({
  id: jobs.id,
  publicId: jobs.publicId,
  kind: jobs.kind,
  state: jobs.state,
  robotCode: jobs.robotCode,
  documentId: jobs.documentId,
  input: sql<string | null>`case when ${jobs.kind} = 'robot' then null else ${jobs.input} end`,
  returnValues: jobs.returnValues,
  logMessage: jobs.logMessage,
  lastError: jobs.lastError,
  reportError: jobs.reportError,
  attempts: jobs.attempts,
  phone: jobs.phone,
  dedupKey: jobs.dedupKey,
  createdAt: jobs.createdAt,
  finishedAt: jobs.finishedAt,
  status,
});

/** Reads the jobs table as the event log: a portal's jobs newest first, filtered and paged by (created_at, id). */
export class EventLogStore {
  readonly #status: SQL<EntryStatus>;
  readonly #columns: ReturnType<typeof columnsOf>;

  constructor(private readonly database: DatabaseAccess) {
    this.#status = statusOf(database.dialect);
    this.#columns = columnsOf(this.#status);
  }

  async list(query: EventLogQuery): Promise<EventLogRow[]> {
    const where: Array<SQL | undefined> = [eq(jobs.memberId, query.memberId)];
    if (query.status) where.push(sql`${this.#status} = ${query.status}`);
    if (query.kind?.in) where.push(inArray(jobs.kind, query.kind.in));
    if (query.kind?.notIn) where.push(notInArray(jobs.kind, query.kind.notIn));
    if (query.from !== undefined) where.push(sql`${jobs.createdAt} >= ${query.from}`);
    if (query.to !== undefined) where.push(lt(jobs.createdAt, query.to));
    // Stored at enqueue, or from the result when the job learned it running (src/db/jobs.ts `finish`).
    if (query.phone) where.push(eq(jobs.phone, query.phone));
    if (query.before) {
      const { createdAt, id } = query.before;
      where.push(or(lt(jobs.createdAt, createdAt), and(eq(jobs.createdAt, createdAt), lt(jobs.id, id))));
    }
    return this.database.db
      .select(this.#columns)
      .from(jobs)
      .where(and(...where))
      .orderBy(desc(jobs.createdAt), desc(jobs.id))
      .limit(query.limit);
  }

  /** One job of the portal by its public id; undefined for another portal's. */
  async entry(memberId: string, publicId: string): Promise<EventLogRow | undefined> {
    const [entry] = await this.database.db
      .select(this.#columns)
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.publicId, publicId)));
    return entry;
  }

  /** Jobs of the portal whose dedup key starts with `prefix` (an episode's re-runs), newest first. */
  async byDedupPrefix(memberId: string, prefix: string): Promise<EventLogRow[]> {
    // A range on the (member_id, dedup_key) index; U+10FFFF sorts after any character a key holds.
    return this.database.db
      .select(this.#columns)
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), gte(jobs.dedupKey, prefix), lt(jobs.dedupKey, `${prefix}\u{10ffff}`)))
      .orderBy(desc(jobs.id));
  }

  /** The public id of the portal's job with this dedup key. */
  async publicIdByDedupKey(memberId: string, dedupKey: string): Promise<string | undefined> {
    const [job] = await this.database.db
      .select({ publicId: jobs.publicId })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.dedupKey, dedupKey)));
    return job?.publicId;
  }
}

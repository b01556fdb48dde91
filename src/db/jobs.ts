import { and, asc, count, eq, inArray, lte, min, notInArray, sql } from 'drizzle-orm';
import { randomUUID } from 'node:crypto';
import type { Db } from './database.js';
import { jobs, type JobRow } from './schema.js';

export type JobState = 'confirming' | 'queued' | 'running' | 'reporting' | 'done' | 'cancelled';
export type { JobRow };

export interface NewJob {
  memberId: string;
  eventToken: string;
  robotCode: string;
  documentId: string[];
  properties: unknown;
  deadlineAt: number;
  /**
   * The call must be confirmed by its portal before it runs (src/jobs/confirmations.ts). Every
   * robot call is; a job built without a portal behind it (a store-level test) may skip it.
   */
  awaitsConfirmation: boolean;
  /** A call whose input is already known to be wrong goes straight to reporting with this result. */
  immediateResult?: { returnValues: Record<string, unknown>; logMessage: string };
}

/** What confirming a robot call needs of its job; its properties (up to ~256 KB) are left in the table. */
export type ConfirmationRow = Pick<JobRow, 'id' | 'memberId' | 'eventToken' | 'robotCode' | 'runAt' | 'deadlineAt' | 'confirmAttempts' | 'lastError'>;

/** A job whose turn has come, as the dispatcher needs it: the run itself reads the full row when it claims it. */
export type RunnableJob = Pick<JobRow, 'id' | 'memberId' | 'eventToken'>;

/** What reporting a result needs of its job: not the call's properties (up to ~256 KB). */
export type ReportRow = Pick<JobRow, 'id' | 'memberId' | 'eventToken' | 'returnValues' | 'logMessage' | 'runAt' | 'reportAttempts' | 'finishedAt' | 'createdAt'>;

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

export interface QueueDepth {
  /** Waiting to run, confirmed or not. */
  queued: number;
  running: number;
  reporting: number;
}

/** The durable robot-job queue. Every state change is one statement, so a crash never leaves a half-made job. */
export class JobStore {
  /** Prepared once: the robot-call acknowledgement path runs these for every call. */
  readonly #insert;
  readonly #byEventToken;

  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {
    const p = (name: string) => sql.placeholder(name);
    this.#insert = db
      .insert(jobs)
      .values({
        publicId: p('publicId'),
        memberId: p('memberId'),
        eventToken: p('eventToken'),
        robotCode: p('robotCode'),
        documentId: p('documentId'),
        properties: p('properties'),
        state: p('state'),
        runAt: p('now'),
        deadlineAt: p('deadlineAt'),
        returnValues: p('returnValues'),
        logMessage: p('logMessage'),
        finishedAt: p('finishedAt'),
        createdAt: p('now'),
        updatedAt: p('now'),
      })
      .onConflictDoNothing()
      // Only the id: the acknowledgement needs no more, and mapping the whole row showed in its profile.
      .returning({ id: jobs.id })
      .prepare();
    this.#byEventToken = db
      .select({ id: jobs.id })
      .from(jobs)
      .where(and(eq(jobs.memberId, p('memberId')), eq(jobs.eventToken, p('eventToken'))))
      .prepare();
  }

  /** Inserts the job unless (member_id, event_token) exists; a repeated delivery gets duplicate=true. */
  enqueue(input: NewJob): { job: Pick<JobRow, 'id'>; duplicate: boolean } {
    const now = this.now();
    const inserted = this.#insert.get({
      publicId: randomUUID(),
      memberId: input.memberId,
      eventToken: input.eventToken,
      robotCode: input.robotCode,
      documentId: JSON.stringify(input.documentId),
      properties: JSON.stringify(input.properties),
      state: input.immediateResult ? 'reporting' : input.awaitsConfirmation ? 'confirming' : 'queued',
      now,
      deadlineAt: input.deadlineAt,
      returnValues: input.immediateResult ? JSON.stringify(input.immediateResult.returnValues) : null,
      logMessage: input.immediateResult?.logMessage ?? null,
      finishedAt: input.immediateResult ? now : null,
    });
    if (inserted) return { job: inserted, duplicate: false };
    return { job: this.#byEventToken.get({ memberId: input.memberId, eventToken: input.eventToken })!, duplicate: true };
  }

  /**
   * Jobs whose turn has come, oldest first; `state` picks runs or result reports. Portals
   * that cannot take more right now are left out, so one portal's backlog does not hide the others'.
   */
  due(state: 'queued', limit: number, excludeMemberIds?: string[]): RunnableJob[];
  due(state: 'reporting', limit: number, excludeMemberIds?: string[]): ReportRow[];
  due(state: 'queued' | 'reporting', limit: number, excludeMemberIds: string[] = []): RunnableJob[] | ReportRow[] {
    // Only the columns each use needs: the dispatcher looks again after every finished run, and
    // reading (and mapping) whole rows there made a burst's dispatching quadratic in CPU.
    const query = state === 'queued' ? this.db.select({ id: jobs.id, memberId: jobs.memberId, eventToken: jobs.eventToken }) : this.db.select(reportColumns);
    return query
      .from(jobs)
      .where(and(eq(jobs.state, state), lte(jobs.runAt, this.now()), excludeMemberIds.length ? notInArray(jobs.memberId, excludeMemberIds) : undefined))
      .orderBy(asc(jobs.runAt), asc(jobs.id))
      .limit(limit)
      .all();
  }

  /** When the next job to confirm, run or report becomes due, if any. */
  nextDueAt(): number | undefined {
    const row = this.db
      .select({ at: min(jobs.runAt) })
      .from(jobs)
      .where(inArray(jobs.state, ['confirming', 'queued', 'reporting']))
      .get();
    return row?.at ?? undefined;
  }

  /** The portal confirmed these calls: they may run now. */
  confirm(ids: number[]): void {
    if (ids.length === 0) return;
    const now = this.now();
    this.db
      .update(jobs)
      .set({ state: 'queued', confirmedAt: now, runAt: now, updatedAt: now })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'confirming')))
      .run();
  }

  /** The portal denied these calls: they end without running and without a result to send. */
  refuseUnconfirmed(ids: number[], reason: string): void {
    if (ids.length === 0) return;
    const now = this.now();
    this.db
      .update(jobs)
      .set({ state: 'done', lastError: reason, finishedAt: now, updatedAt: now })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'confirming')))
      .run();
  }

  /** The portal could not be asked: ask again at `runAt`. */
  retryConfirmationLater(ids: number[], runAt: number, error: string): void {
    if (ids.length === 0) return;
    this.db
      .update(jobs)
      .set({ runAt, lastError: error, confirmAttempts: sql`${jobs.confirmAttempts} + 1`, updatedAt: this.now() })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'confirming')))
      .run();
  }

  /**
   * An unconfirmed call out of time ends with a failed result and nothing run. Sending it is
   * harmless: Bitrix24 refuses bizproc.event.send for a token it did not issue (docs/protocols.md B8).
   */
  failUnconfirmed(id: number, returnValues: Record<string, unknown>, logMessage: string): void {
    const now = this.now();
    this.db
      .update(jobs)
      .set({ state: 'reporting', returnValues: JSON.stringify(returnValues), logMessage, runAt: now, finishedAt: now, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.state, 'confirming')))
      .run();
  }

  claim(id: number, leaseMs: number): JobRow | undefined {
    const now = this.now();
    return this.db
      .update(jobs)
      .set({ state: 'running', attempts: sql`${jobs.attempts} + 1`, leaseUntil: now + leaseMs, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.state, 'queued')))
      .returning()
      .get();
  }

  /** Only a running job moves on: one cancelled meanwhile (uninstall) stays cancelled. */
  retryLater(id: number, runAt: number, error: string): void {
    this.db
      .update(jobs)
      .set({ state: 'queued', runAt, lastError: error, leaseUntil: null, updatedAt: this.now() })
      .where(and(eq(jobs.id, id), eq(jobs.state, 'running')))
      .run();
  }

  /** The run is over; its result waits to be sent back to Bitrix24. */
  finish(id: number, returnValues: Record<string, unknown>, logMessage: string): void {
    const now = this.now();
    this.db
      .update(jobs)
      .set({
        state: 'reporting',
        returnValues: JSON.stringify(returnValues),
        logMessage,
        runAt: now,
        leaseUntil: null,
        finishedAt: now,
        updatedAt: now,
      })
      .where(and(eq(jobs.id, id), eq(jobs.state, 'running')))
      .run();
  }

  markReported(ids: number[], reportError?: string): void {
    if (ids.length === 0) return;
    this.db
      .update(jobs)
      .set({ state: 'done', reportError: reportError ?? null, updatedAt: this.now() })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'reporting')))
      .run();
  }

  retryReportLater(ids: number[], runAt: number, error: string): void {
    if (ids.length === 0) return;
    this.db
      .update(jobs)
      .set({ runAt, reportError: error, reportAttempts: sql`${jobs.reportAttempts} + 1`, updatedAt: this.now() })
      .where(and(inArray(jobs.id, ids), eq(jobs.state, 'reporting')))
      .run();
  }

  /**
   * After a crash nothing is running: every job that was is taken up again, ahead of every queued
   * job (`due` goes by run_at). Its effect may be in doubt, and settling it must not wait behind a
   * backlog that keeps changing what it looks for (a send's newer messages to the same client).
   */
  requeueInterrupted(): number {
    const now = this.now();
    const firstQueued = this.db
      .select({ at: min(jobs.runAt) })
      .from(jobs)
      .where(eq(jobs.state, 'queued'));
    return this.db
      .update(jobs)
      .set({ state: 'queued', leaseUntil: null, runAt: sql`min(${now}, coalesce((${firstQueued}), ${now})) - 1`, updatedAt: now })
      .where(eq(jobs.state, 'running'))
      .run().changes;
  }

  /** Finished jobs are kept a while for support questions ("did the robot run?"), then dropped. */
  pruneFinished(olderThan: number): number {
    return this.db
      .delete(jobs)
      .where(and(inArray(jobs.state, ['done', 'cancelled']), lte(jobs.updatedAt, olderThan)))
      .run().changes;
  }

  cancelPortal(memberId: string): number {
    return this.db
      .update(jobs)
      .set({ state: 'cancelled', reportError: 'portal uninstalled', updatedAt: this.now() })
      .where(and(eq(jobs.memberId, memberId), inArray(jobs.state, ['confirming', 'queued', 'running', 'reporting'])))
      .run().changes;
  }

  /** Robot calls to confirm whose turn has come, oldest first, without their properties (see `due`). */
  dueConfirmations(limit: number, excludeMemberIds: string[] = []): ConfirmationRow[] {
    return this.db
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
      .from(jobs)
      .where(and(eq(jobs.state, 'confirming'), lte(jobs.runAt, this.now()), excludeMemberIds.length ? notInArray(jobs.memberId, excludeMemberIds) : undefined))
      .orderBy(asc(jobs.runAt), asc(jobs.id))
      .limit(limit)
      .all();
  }

  /** Robot calls of the portal still waiting for Bitrix24 to confirm them, counted up to `atMost`. */
  confirmingCount(memberId: string, atMost: number): number {
    const waiting = this.db
      .select({ id: jobs.id })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.state, 'confirming')))
      .limit(atMost)
      .as('waiting');
    const row = this.db.select({ n: count() }).from(waiting).get();
    return row?.n ?? 0;
  }

  /** Jobs of the portal still to confirm, queued or running: more results are on the way. */
  activeCount(memberId: string): number {
    const row = this.db
      .select({ n: count() })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), inArray(jobs.state, ['confirming', 'queued', 'running'])))
      .get();
    return row?.n ?? 0;
  }

  /** Confirmed jobs of the portal waiting for their turn to run. */
  waitingToRun(memberId: string): number {
    const row = this.db
      .select({ n: count() })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.state, 'queued')))
      .get();
    return row?.n ?? 0;
  }

  depth(): QueueDepth {
    const rows = this.db
      .select({ state: jobs.state, n: count() })
      .from(jobs)
      .where(inArray(jobs.state, ['confirming', 'queued', 'running', 'reporting']))
      .groupBy(jobs.state)
      .all();
    const depth: QueueDepth = { queued: 0, running: 0, reporting: 0 };
    for (const row of rows) depth[row.state === 'confirming' ? 'queued' : (row.state as keyof QueueDepth)] += row.n;
    return depth;
  }

  countByState(memberId?: string): Record<string, number> {
    const rows = this.db
      .select({ state: jobs.state, n: count() })
      .from(jobs)
      .where(memberId ? eq(jobs.memberId, memberId) : undefined)
      .groupBy(jobs.state)
      .all();
    return Object.fromEntries(rows.map((row) => [row.state, row.n]));
  }
}

import * as v from 'valibot';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { CacheStore } from '../src/db/cache.js';
import { HELD_ORDERING_PREFIX, insertJobs, JobStore, UnconfirmedLimitReached } from '../src/db/jobs.js';
import { RobotRegistry } from '../src/activities/index.js';
import { DEFAULT_LEASE_MS as LEASE_MS } from '../src/jobs/dispatcher.js';
import { JobKinds, type JobKind } from '../src/jobs/kinds.js';
import { Worker } from '../src/jobs/worker.js';
import { createLogger } from '../src/log.js';
import { InvalidJobInput } from '../src/jobs/pipeline.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';
import { robotJob } from './support/jobs.js';
import { eventually, install, postForm, startStack, type Stack } from './support/stack.js';

describe.each(DATABASE_KINDS)('the job queue on %s', (kind) => {
  let database: TestDatabase;
  let jobs: JobStore;
  beforeEach(async () => {
    database = await openTestDatabase(kind);
    jobs = new JobStore(database.handle, systemClock);
  });
  afterEach(() => database.close());

  const enqueue = (memberId: string, eventToken: string) => jobs.enqueue(robotJob(memberId, eventToken, Date.now() + 60_000));

  it("does not let one portal's backlog hide another portal's jobs", async () => {
    for (let i = 0; i < 600; i++) await enqueue('busy-portal', `busy-${i}`);
    await enqueue('quiet-portal', 'quiet-1');
    expect((await jobs.due('queued', 500)).some((job) => job.memberId === 'quiet-portal')).toBe(false);
    const visible = await jobs.due('queued', 500, ['busy-portal']);
    expect(visible.map((job) => job.eventToken)).toEqual(['quiet-1']);
  });

  it('stores calls arriving in one turn together, and a call over its bound fails alone: the others are stored and answered', async () => {
    const call = (memberId: string, eventToken: string) => ({ ...robotJob(memberId, eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    const answers = await Promise.allSettled([
      jobs.enqueue(call('bounded', 'first'), { maxConfirming: 1 }),
      jobs.enqueue(call('bounded', 'second'), { maxConfirming: 1 }),
      jobs.enqueue(call('other', 'third'), { maxConfirming: 1 }),
      jobs.enqueue(call('bounded', 'first'), { maxConfirming: 1 }),
    ]);
    expect(answers.map((answer) => answer.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((answers[1] as PromiseRejectedResult).reason).toBeInstanceOf(UnconfirmedLimitReached);
    expect((answers[3] as PromiseFulfilledResult<{ duplicate: boolean }>).value.duplicate).toBe(true);
    expect(await database.rows("select member_id, event_token from jobs where state = 'confirming' order by id")).toEqual([
      { member_id: 'bounded', event_token: 'first' },
      { member_id: 'other', event_token: 'third' },
    ]);
  });

  it('counts a repeated call stored together with new ones only once against the bound', async () => {
    const call = (eventToken: string) => ({ ...robotJob('bounded', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    await jobs.enqueue(call('stored'), { maxConfirming: 2 });
    // One below the bound: Bitrix24 repeats the stored call while a new one arrives, in one batch.
    const [repeat, fresh] = await Promise.allSettled([jobs.enqueue(call('stored'), { maxConfirming: 2 }), jobs.enqueue(call('new'), { maxConfirming: 2 })]);
    expect(repeat).toMatchObject({ status: 'fulfilled', value: { duplicate: true } });
    expect(fresh).toMatchObject({ status: 'fulfilled', value: { duplicate: false } });
    // At the bound: a repeat is still recognised, a new call refused.
    const [again, over] = await Promise.allSettled([jobs.enqueue(call('new'), { maxConfirming: 2 }), jobs.enqueue(call('over'), { maxConfirming: 2 })]);
    expect(again).toMatchObject({ status: 'fulfilled', value: { duplicate: true } });
    expect(over.status).toBe('rejected');
    expect((over as PromiseRejectedResult).reason).toBeInstanceOf(UnconfirmedLimitReached);
  });

  it.skipIf(kind !== 'postgres')('stores a batch job by job when PostgreSQL refuses it: only the job it cannot store fails', async () => {
    // A NUL is text PostgreSQL refuses (the robot route refuses such tokens first; other callers may not).
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    const answers = await Promise.allSettled(['first', 'second', 'bad\u0000token', 'third'].map((token) => jobs.enqueue(call(token), { maxConfirming: 100 })));
    expect(answers.map((answer) => answer.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(await database.rows('select event_token from jobs order by id')).toEqual([{ event_token: 'first' }, { event_token: 'second' }, { event_token: 'third' }]);
  });

  it.skipIf(kind !== 'postgres')('stores the calls of one turn of the event loop in one transaction, the first of a quiet moment included', async () => {
    // Each batch costs PostgreSQL about as much as several calls (docs/multi-process.md): calls read
    // in one wake-up go together instead of the first going alone.
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    await Promise.all(['first', 'second', 'third'].map((token) => jobs.enqueue(call(token), { maxConfirming: 100 })));
    await Promise.all(['fourth', 'fifth'].map((token) => jobs.enqueue(call(token), { maxConfirming: 100 })));
    // xmin: the transaction that inserted the row.
    expect(await database.rows('select count(distinct xmin::text) as n from jobs')).toEqual([{ n: 2 }]);
  });

  it.skipIf(kind !== 'postgres')('answers every call of a batch whose connection was lost with the error, and does not store them again', async () => {
    // After a lost connection the statement may have committed: storing again job by job could store
    // a call twice (src/db/jobs.ts storedNothing). Here the batch waits on its portal's lock, held by
    // another session, when PostgreSQL ends its connection (SQLSTATE 57P01).
    const holder = await database.openAnother();
    if (holder.kind !== 'postgres') throw new Error('PostgreSQL only');
    const lock = await holder.pool.connect();
    await lock.query("select pg_advisory_lock(hashtext('portal'))");
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    const answers = Promise.allSettled(['first', 'second'].map((token) => jobs.enqueue(call(token), { maxConfirming: 100 })));
    const waiting = await eventually(
      async () =>
        (
          await database.rows<{ pid: number }>("select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%c2d_store_jobs%'")
        )[0],
      10_000,
      'the batch waiting on its portal lock',
    );
    // Waits (up to 5 s) until the backend is gone, so the lock below is freed after it.
    await database.rows('select pg_terminate_backend(?, 5000)', waiting.pid);
    // The lock is free again: a store again job by job would now succeed.
    await lock.query("select pg_advisory_unlock(hashtext('portal'))");
    lock.release();
    const settled = await answers;
    expect(settled.map((answer) => answer.status)).toEqual(['rejected', 'rejected']);
    expect((settled[0] as PromiseRejectedResult).reason).toMatchObject({ code: '57P01' });
    // Nothing is stored, and the store works on with a new connection.
    expect(await database.rows('select event_token from jobs')).toEqual([]);
    expect((await jobs.enqueue(call('after'), { maxConfirming: 100 })).duplicate).toBe(false);
  });

  it('recognises a repeat within a batch and of a stored call when the portal is far below its bound', async () => {
    // On PostgreSQL such a batch is inserted as given (migration 0005): the repeats are left out by the unique key alone.
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    await jobs.enqueue(call('stored'), { maxConfirming: 100 });
    const answers = await Promise.all(['stored', 'new', 'new', 'other'].map((token) => jobs.enqueue(call(token), { maxConfirming: 100 })));
    expect(answers.map((answer) => answer.duplicate)).toEqual([true, false, true, false]);
    expect(answers[2]!.job.id).toBe(answers[1]!.job.id);
    expect(await database.rows('select event_token from jobs order by id')).toEqual([{ event_token: 'stored' }, { event_token: 'new' }, { event_token: 'other' }]);
  });

  it('stores calls up to the bound exactly when a batch goes past it', async () => {
    const call = (eventToken: string) => ({ ...robotJob('portal', eventToken, Date.now() + 60_000), awaitsConfirmation: true });
    await jobs.enqueue(call('waiting'), { maxConfirming: 3 });
    // One waiting, three arriving together: the batch goes one past the bound of 3, so each call's room is counted.
    const reaching = await Promise.allSettled(['a', 'b', 'c'].map((token) => jobs.enqueue(call(token), { maxConfirming: 3 })));
    expect(reaching.map((answer) => answer.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    const over = await Promise.allSettled(['c', 'b'].map((token) => jobs.enqueue(call(token), { maxConfirming: 3 })));
    expect(over[0]!.status).toBe('rejected');
    expect((over[0] as PromiseRejectedResult).reason).toBeInstanceOf(UnconfirmedLimitReached);
    expect(over[1]).toMatchObject({ status: 'fulfilled', value: { duplicate: true } });
    expect(await database.rows("select count(*) as n from jobs where state = 'confirming'")).toEqual([{ n: 3 }]);
  });

  // Far below the bound a batch is inserted as given on PostgreSQL, near it each call's room is counted: both keep every column.
  it.each([100, 6])('stores each column of calls stored together exactly as given, whatever characters they hold (bound %i)', async (bound) => {
    // On PostgreSQL a batch travels as one array per column (src/db/jobs.ts STORE_JOBS): text that
    // looks like array syntax must come back unchanged, and a null must stay a null.
    const awkward = ['{"a","b"}', 'NULL', 'back\\slash \\" quote', 'comma, brace } { newline\n tab\t', 'Заказ № 7 ✓ 🎉', ''];
    const call = (eventToken: string, text: string, phone?: string) => ({
      ...robotJob('portal', eventToken, Date.now() + 60_000),
      awaitsConfirmation: true,
      input: { text, list: [text, null] },
      ...(phone ? { phone } : {}),
      robot: { eventToken, robotCode: 'c2d_send_message', documentId: ['crm', 'CCrmDocumentDeal', text] as [string, string, string] },
    });
    const calls = awkward.map((text, i) => call(`awkward-${i}|${text}`, text, i % 2 === 0 ? '79161234567' : undefined));
    expect(calls).toHaveLength(6);
    const answers = await Promise.all(calls.map((job) => jobs.enqueue(job, { maxConfirming: bound })));
    expect(answers.every((answer) => !answer.duplicate)).toBe(true);
    const rows = (await database.rows('select event_token, input, document_id, phone, ordering_key from jobs order by id')) as Array<Record<string, unknown>>;
    expect(rows).toEqual(
      calls.map((job) => ({
        event_token: job.robot.eventToken,
        input: JSON.stringify(job.input),
        document_id: JSON.stringify(job.robot.documentId),
        phone: job.phone ?? null,
        ordering_key: null,
      })),
    );
  });

  it('keeps a cancelled job cancelled when its run ends', async () => {
    const { job } = await enqueue('portal', 'token-1');
    const claimed = (await jobs.claim(job.id, 60_000))!;
    expect(claimed.state).toBe('running');
    expect(await jobs.cancelPortal('portal')).toBe(1);
    await jobs.finish(claimed, { status: 'sent' }, 'done');
    await jobs.retryLater(claimed, Date.now(), 'x');
    expect(await jobs.countByState()).toEqual({ cancelled: 1 });
  });

  it('stores a repeated event token once', async () => {
    expect((await enqueue('portal', 'same')).duplicate).toBe(false);
    expect((await enqueue('portal', 'same')).duplicate).toBe(true);
    expect((await enqueue('other-portal', 'same')).duplicate).toBe(false);
    expect(await jobs.depth()).toEqual({ queued: 2, running: 0, reporting: 0 });
  });

  it('prunes finished jobs past their retention and nothing still in flight', async () => {
    const done = (await enqueue('portal', 'done')).job;
    const queued = (await enqueue('portal', 'queued')).job;
    await jobs.finish((await jobs.claim(done.id, 60_000))!, { status: 'sent' }, 'ok');
    await jobs.markReported([done.id]);
    // A portal without stored settings keeps its finished jobs the default number of days.
    expect(await jobs.pruneFinished(Date.now() + 86_400_000 - 60_000, 1)).toBe(0);
    expect(await jobs.pruneFinished(Date.now() + 86_400_000 + 1, 1)).toBe(1);
    expect(await jobs.countByState()).toEqual({ queued: 1 });
    expect(await database.rows('select id from jobs')).toEqual([{ id: queued.id }]);
  });

  it('stores jobs inside the transaction of another store, or not at all when it rolls back', async () => {
    const job = { kind: 'test_echo', memberId: 'portal', input: { n: 1 }, dedupKey: 'delivery-1', deadlineAt: Date.now() + 60_000, awaitsConfirmation: false };
    const { dialect } = database.handle;
    await expect(
      dialect.transaction(function* (tx) {
        yield* insertJobs(tx, [job], Date.now());
        throw new Error('the delivery could not be stored');
      }),
    ).rejects.toThrow('the delivery could not be stored');
    expect(await jobs.countByState()).toEqual({});
    expect(await dialect.transaction((tx) => insertJobs(tx, [job, { ...job, dedupKey: 'delivery-2' }], Date.now()))).toBe(2);
    // A repeated delivery inserts nothing again.
    expect(await dialect.transaction((tx) => insertJobs(tx, [job], Date.now()))).toBe(0);
    expect(await jobs.countByState()).toEqual({ queued: 2 });
  });

  it('prunes cache rows nobody could be served any more', async () => {
    const cache = new CacheStore(database.handle);
    const client = { id: 1, phone: '79161234567', clientPhone: null, name: null, assignedName: null, tags: [] };
    const nothingToReplay = () => ({ clientIds: [], dialogIds: [], phones: [], dialogListsOf: [], lists: [] });
    const now = 1_800_000_000_000;
    await cache.saveFetched('account', now - 3 * 24 * 3600_000, { clients: [client] }, nothingToReplay);
    await cache.saveFetched('account', now, { clients: [{ ...client, id: 2 }] }, nothingToReplay);
    expect(await cache.pruneOlderThan(now - 2 * 24 * 3600_000)).toBe(1);
    expect(await cache.client('account', 1, 0)).toBeUndefined();
    expect((await cache.client('account', 2, 0))?.id).toBe(2);
  });
});

/** A gate a test opens when it chooses: explicit, instead of a sleep. */
function gate(): { opened: Promise<void>; open(): void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * A job kind registered only in this test: it records each run's start, waits for the gate its
 * input names (if any), and fails with a transient error while its input says so.
 */
function testKind(gates: Map<string, Promise<void>>, started: string[]): JobKind<{ name: string; fail?: boolean; followUp?: string }> {
  return {
    name: 'test_echo',
    input: v.object({ name: v.string(), fail: v.optional(v.boolean()), followUp: v.optional(v.string()) }),
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    async prepare(_job, input) {
      return {
        async run() {
          started.push(input.name);
          await gates.get(input.name);
          if (input.fail) throw new Error(`${input.name} failed on purpose`);
          return { returnValues: { status: 'ok', echoed: input.name }, logMessage: `ran ${input.name}` };
        },
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
    followUps(job) {
      const { followUp } = JSON.parse(job.input) as { followUp?: string };
      return followUp ? [{ kind: 'test_echo', memberId: job.memberId, input: { name: followUp }, dedupKey: followUp, deadlineAt: job.deadlineAt, awaitsConfirmation: false }] : [];
    },
  };
}

describe('the pipeline with a kind of its own', () => {
  let stack: Stack;
  const gates = new Map<string, Promise<void>>();
  const started: string[] = [];
  const HOLD_MS = 60_000;
  let clock: TestClock;
  beforeEach(async () => {
    gates.clear();
    started.length = 0;
    clock = new TestClock();
    stack = await startStack({ clock, extraKinds: [testKind(gates, started)], orderingHoldMs: HOLD_MS });
  });
  afterEach(() => stack.close());

  const enqueue = (name: string, options: { orderingKey?: string; fail?: boolean; followUp?: string } = {}) =>
    stack.server.pipeline.enqueue(
      'test_echo',
      'portal',
      { name, fail: options.fail, followUp: options.followUp },
      { orderingKey: options.orderingKey, dedupKey: name, deadlineAt: clock.now() + 3600_000 },
    );
  const row = async (name: string) => (await stack.db.row('select state, attempts, last_error, return_values from jobs where dedup_key = ?', name)) as Record<string, unknown>;

  it('runs a job of a kind registered only in a test, and refuses input its schema does not accept', async () => {
    await enqueue('first');
    await eventually(async () => (await row('first')).state === 'done', 10_000, 'the test job done');
    expect(JSON.parse(String((await row('first')).return_values))).toEqual({ status: 'ok', echoed: 'first' });
    await expect(stack.server.pipeline.enqueue('test_echo', 'portal', { name: 42 }, { deadlineAt: clock.now() + 60_000 })).rejects.toThrow(InvalidJobInput);
    await expect(stack.server.pipeline.enqueue('no_such_kind', 'portal', {}, { deadlineAt: clock.now() + 60_000 })).rejects.toThrow('unknown job kind no_such_kind');
    expect(await stack.server.jobs.countByState()).toEqual({ done: 1 });
  });

  it('stores the follow-up job a kind asks for with the finish, and runs it', async () => {
    await enqueue('parent', { followUp: 'child' });
    await eventually(async () => (await row('child'))?.state === 'done', 10_000, 'the follow-up ran');
    expect(started).toEqual(['parent', 'child']);
    expect((await row('parent')).state).toBe('done');
  });

  it('runs the jobs of one ordering key one at a time, in order, while other keys go on', async () => {
    const first = gate();
    gates.set('a1', first.opened);
    await enqueue('a1', { orderingKey: 'dialog-a' });
    await enqueue('a2', { orderingKey: 'dialog-a' });
    await enqueue('a3', { orderingKey: 'dialog-a' });
    await enqueue('b1', { orderingKey: 'dialog-b' });
    // b1 comes after a2 in the queue: had a2 not waited for a1, the pass that started b1 would have claimed it first.
    await eventually(async () => (await row('b1')).state === 'done', 10_000, 'the other key ran');
    expect((await row('a1')).state).toBe('running');
    expect(await row('a2')).toMatchObject({ state: 'queued', attempts: 0 });
    first.open();
    await eventually(async () => (await row('a3')).state === 'done', 10_000, 'the key drained');
    expect(started).toEqual(['a1', 'b1', 'a2', 'a3']);
  });

  it('keeps a key while its head is still running, however long past the bound it runs', async () => {
    const first = gate();
    gates.set('a1', first.opened);
    await enqueue('a1', { orderingKey: 'dialog-a' });
    await enqueue('a2', { orderingKey: 'dialog-a' });
    await eventually(() => started.includes('a1'), 10_000, 'the head started');
    clock.advance(HOLD_MS + 1);
    // b1 comes after a2 in the queue: a pass that would let a2 overtake its running head claims it before b1.
    await enqueue('b1', { orderingKey: 'dialog-b' });
    await eventually(async () => (await row('b1')).state === 'done', 10_000, 'the other key ran');
    expect((await row('a1')).state).toBe('running');
    expect(await row('a2')).toMatchObject({ state: 'queued', attempts: 0 });
    first.open();
    await eventually(async () => (await row('a2')).state === 'done', 10_000, 'the key drained');
    expect(started).toEqual(['a1', 'b1', 'a2']);
  });

  it('lets the rest of a key go on once a failing job has held it for the bound, and keeps that job visible', async () => {
    await enqueue('stuck', { orderingKey: 'dialog-a', fail: true });
    await enqueue('next', { orderingKey: 'dialog-a' });
    // The failed attempt is retried later; meanwhile `next` waits behind it.
    // Its second attempt started in a pass after the first failed, and `next` was due in that pass too.
    await eventually(async () => Number((await row('stuck')).attempts) >= 2, 10_000, 'the stuck job tried again');
    expect(await row('next')).toMatchObject({ state: 'queued', attempts: 0 });
    clock.advance(HOLD_MS + 1);
    stack.server.worker.wake();
    await eventually(async () => (await row('next')).state === 'done', 10_000, 'the rest of the key ran');
    expect(await row('stuck')).toMatchObject({ last_error: 'stuck failed on purpose' });
    expect(['queued', 'running']).toContain((await row('stuck')).state);
  });

  it('never lets a held key (HELD_ORDERING_PREFIX) go on behind a failing head, however long it waits', async () => {
    const key = `${HELD_ORDERING_PREFIX}client-7`;
    await enqueue('stuck', { orderingKey: key, fail: true });
    await enqueue('next', { orderingKey: key });
    await eventually(async () => Number((await row('stuck')).attempts) >= 2, 10_000, 'the stuck job tried again');
    const attempts = Number((await row('stuck')).attempts);
    clock.advance(HOLD_MS * 10);
    stack.server.worker.wake();
    // A pass after the bound: the head was tried again in it, and `next` was due in it too.
    await eventually(async () => Number((await row('stuck')).attempts) > attempts, 10_000, 'a pass after the bound');
    expect(await row('next')).toMatchObject({ state: 'queued', attempts: 0 });
  });
});

describe('leases: two workers on one database, as PostgreSQL will allow', () => {
  const gates = new Map<string, Promise<void>>();
  const started: string[] = [];
  let stack: Stack;
  let clock: TestClock;
  let second: Worker | undefined;
  beforeEach(async () => {
    gates.clear();
    started.length = 0;
    clock = new TestClock();
    stack = await startStack({ clock, extraKinds: [testKind(gates, started)] });
  });
  afterEach(async () => {
    await second?.stop(1_000);
    second = undefined;
    await stack.close();
  });

  const row = async (name: string) =>
    (await stack.db.row('select id, state, attempts, lease_until from jobs where dedup_key = ?', name)) as {
      id: number;
      state: string;
      attempts: number;
      lease_until: number;
    };
  const testJob = (name: string) => ({ kind: 'test_echo', memberId: 'portal', input: { name }, dedupKey: name, deadlineAt: clock.now() + 3600_000, awaitsConfirmation: false });
  /** Another process's worker on the same database, with the same kinds. */
  const secondWorker = () =>
    new Worker({
      jobs: new JobStore(stack.server.database, clock),
      kinds: new JobKinds([testKind(gates, started)]),
      robots: new RobotRegistry(),
      rest: stack.server.rest,
      clock,
      portalConcurrency: 4,
      log: createLogger('silent'),
    });

  it('a second worker starting leaves a run under a live lease alone, and the run renews its lease while it goes on', async () => {
    const running = gate();
    gates.set('long', running.opened);
    await stack.server.pipeline.enqueue('test_echo', 'portal', { name: 'long' }, { dedupKey: 'long', deadlineAt: clock.now() + 3600_000 });
    await eventually(() => started.includes('long'), 10_000, 'the run started');
    second = secondWorker();
    await second.start();
    expect(await row('long')).toMatchObject({ state: 'running', attempts: 1 });
    const leased = (await row('long')).lease_until;
    clock.advance(LEASE_MS / 2);
    stack.server.worker.wake();
    await eventually(async () => (await row('long')).lease_until > leased, 10_000, 'the lease renewed');
    // Past the first lease, within the renewed one: nothing to take up.
    clock.advance(LEASE_MS / 2 + 1);
    expect(await new JobStore(stack.server.database, clock).requeueInterrupted()).toBe(0);
    running.open();
    await eventually(async () => (await row('long')).state === 'done', 10_000, 'the run finished');
    expect(started).toEqual(['long']);
  });

  it('takes up a job whose lease ran out while the worker is alive, and the attempt that lost it cannot finish it', async () => {
    const stalled = new JobStore(stack.server.database, clock);
    const retaken = gate();
    gates.set('orphan', retaken.opened);
    // A worker of another process claimed the job and stalled: nobody renews its lease. The job is
    // due only a minute later on the test clock (which runs with real time), so our worker's idle
    // look cannot claim it first (seen once in three runs when it was due at once).
    await stack.server.database.dialect.transaction((tx) => insertJobs(tx, [{ ...testJob('orphan'), runAt: clock.now() + 60_000 }], clock.now()));
    const lost = await stalled.claim((await row('orphan')).id, LEASE_MS);
    if (!lost) throw new Error('the stalled store could not claim the job');
    expect(await stalled.requeueInterrupted()).toBe(0);
    clock.advance(Math.max(LEASE_MS, 60_000));
    stack.server.worker.wake();
    await eventually(() => started.includes('orphan'), 10_000, 'the orphan taken up');
    expect(await row('orphan')).toMatchObject({ state: 'running', attempts: 2 });
    // The stalled attempt wakes up while the new one runs: its retry, finish and renewal change nothing.
    await stalled.retryLater(lost, clock.now(), 'late');
    await stalled.finish(lost, { status: 'failed' }, 'late', { next: 'done' });
    expect(await stalled.renewLease(lost, 60_000)).toBe(false);
    expect(await row('orphan')).toMatchObject({ state: 'running', attempts: 2 });
    retaken.open();
    await eventually(async () => (await row('orphan')).state === 'done', 10_000, 'the new attempt finished');
    expect((await stalled.get(lost.id))?.lastError).toBeNull();
    expect(started).toEqual(['orphan']);
  });
});

describe('re-registration after an app update', () => {
  let stack: Stack;
  let clock: TestClock;
  beforeEach(async () => {
    clock = new TestClock();
    // The REST client's own retries of a failing batch need not wait real backoffs.
    stack = await startStack({ clock, retrySleep: noRetryWait });
    await install(stack);
  });
  afterEach(() => stack.close());

  const update = () => postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONAPPUPDATE', { VERSION: '2', PREVIOUS_VERSION: '1' }));
  const registrations = async () =>
    (await stack.db.rows("select state, attempts, last_error, run_at from jobs where kind = 'register_app' order by id")) as Array<Record<string, unknown>>;
  const listings = () => stack.b24.calls.filter((call) => call.method === 'bizproc.robot.list').length;

  it('is a durable job stored before the answer, retried when Bitrix24 fails, and done once registered', async () => {
    const before = listings();
    // More failures than the REST client absorbs by itself: the job's own retry has to carry it.
    stack.b24.failNext('batch', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal server error' }, 4);
    expect((await update()).status).toBe(200);
    expect(await registrations()).toHaveLength(1);
    // The job's own retry runs when its backoff has passed by the clock.
    await eventuallyOnClock(
      () => stack.server,
      clock,
      async () => (await registrations())[0]?.state === 'done',
      20_000,
      'registration done',
    );
    expect((await registrations())[0]).toMatchObject({ attempts: 2, last_error: expect.stringContaining('INTERNAL_SERVER_ERROR') });
    expect(listings()).toBe(before + 1);
    expect(stack.b24.robots.size).toBeGreaterThan(0);
  });

  it('registers at most once per five minutes: an update inside that time gets one registration when it ends', async () => {
    expect((await update()).status).toBe(200);
    await stack.server.idle();
    const afterFirst = listings();
    for (let i = 0; i < 3; i++) expect((await update()).status).toBe(200);
    await stack.server.idle();
    const [first, second, ...more] = await registrations();
    expect(more).toEqual([]);
    expect(second).toMatchObject({ state: 'queued', attempts: 0 });
    expect(Number(second!.run_at) - Number(first!.run_at)).toBeGreaterThanOrEqual(5 * 60_000);
    expect(listings()).toBe(afterFirst);
    clock.advance(5 * 60_000);
    stack.server.worker.wake();
    await eventually(async () => (await registrations())[1]?.state === 'done', 10_000, 'the trailing registration');
    expect(listings()).toBe(afterFirst + 1);
  });
});

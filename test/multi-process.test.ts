import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import type { PostgresHandle } from '../src/db/database.js';
import { JobStore } from '../src/db/jobs.js';
import { openTestDatabase, type TestDatabase } from './support/databases.js';
import { robotJob } from './support/jobs.js';

/**
 * Several server processes on one PostgreSQL (issue 11, docs/multi-process.md "The claim with
 * leases"): the claim statement seen from two connections, then whole server processes.
 */

const LEASE = 60_000;
const ROBOT_SLOTS = { '': 3 };

describe('the claim on PostgreSQL, from two connections (two processes)', () => {
  let database: TestDatabase;
  let another: PostgresHandle;
  let first: JobStore;
  let second: JobStore;
  beforeEach(async () => {
    database = await openTestDatabase('postgres');
    another = (await database.openAnother()) as PostgresHandle;
    first = new JobStore(database.handle, systemClock);
    second = new JobStore(another, systemClock);
  });
  afterEach(async () => {
    await another.close();
    await database.close();
  });

  const enqueue = (memberId: string, eventToken: string, extra: object = {}) => first.enqueue({ ...robotJob(memberId, eventToken, Date.now() + 60_000), ...extra });

  it('claims every due job once when two processes claim at the same time, each at most its portal has slots for', async () => {
    for (let i = 0; i < 40; i++) await enqueue(`portal-${i % 10}`, `token-${i}`);
    const claimedBy = await Promise.all([first, second, first, second].map((store) => store.claimDue(100, LEASE, { '': 2 }, [])));
    const ids = claimedBy.flat().map((job) => job.id);
    expect(new Set(ids).size).toBe(ids.length);
    // Ten portals, two slots each: twenty claimed in all, whichever connection took them.
    expect(ids.length).toBe(20);
    const perPortal = await database.rows<{ member_id: string; n: number }>("select member_id, count(*)::int as n from jobs where state = 'running' group by member_id");
    expect(perPortal.every((row) => row.n === 2)).toBe(true);
    expect(await first.claimDue(100, LEASE, { '': 2 }, [])).toEqual([]);
  });

  it("counts another process's running jobs with a live lease against the portal's slots, and not those whose lease ran out", async () => {
    for (let i = 0; i < 6; i++) await enqueue('portal', `token-${i}`);
    expect(await first.claimDue(100, LEASE, ROBOT_SLOTS, [])).toHaveLength(3);
    expect(await second.claimDue(100, LEASE, ROBOT_SLOTS, [])).toHaveLength(0);
    // The first process died: its leases run out, and its jobs no longer hold the slots.
    await database.rows("update jobs set lease_until = 1 where state = 'running'");
    expect(await second.claimDue(100, LEASE, ROBOT_SLOTS, [])).toHaveLength(3);
  });

  it('gives a kind with slots of its own its own count, beside the common slots', async () => {
    for (let i = 0; i < 4; i++) await enqueue('portal', `robot-${i}`);
    for (let i = 0; i < 4; i++)
      await first.enqueue({ kind: 'close_episode', memberId: 'portal', input: {}, dedupKey: `episode-${i}`, deadlineAt: Date.now() + 60_000, awaitsConfirmation: false });
    const claimed = await first.claimDue(100, LEASE, { '': 1, close_episode: 2 }, []);
    expect(claimed.map((job) => job.kind).sort()).toEqual(['close_episode', 'close_episode', 'robot']);
    expect(await second.claimDue(100, LEASE, { '': 1, close_episode: 2 }, [])).toEqual([]);
  });

  it('skips a row another transaction holds instead of waiting for it', async () => {
    const { job: locked } = await enqueue('portal', 'locked');
    await enqueue('portal', 'free');
    const holder = await another.pool.connect();
    try {
      await holder.query('begin');
      await holder.query('select id from jobs where id = $1 for update', [locked.id]);
      const claimed = await first.claimDue(100, LEASE, ROBOT_SLOTS, []);
      expect(claimed.map((job) => job.eventToken)).toEqual(['free']);
      await holder.query('rollback');
    } finally {
      holder.release();
    }
    expect((await second.claimDue(100, LEASE, ROBOT_SLOTS, [])).map((job) => job.eventToken)).toEqual(['locked']);
  });

  it('keeps the ordering-key rule: only the head of a key runs, the next once the head is done', async () => {
    await enqueue('portal', 'head', { orderingKey: 'dialog-1' });
    await enqueue('portal', 'next', { orderingKey: 'dialog-1' });
    const [head] = await first.claimDue(100, LEASE, ROBOT_SLOTS, []);
    expect(head?.eventToken).toBe('head');
    expect(await second.claimDue(100, LEASE, ROBOT_SLOTS, [])).toEqual([]);
    await first.finish(head!, { status: 'sent' }, 'done', { next: 'done' });
    expect((await second.claimDue(100, LEASE, ROBOT_SLOTS, [])).map((job) => job.eventToken)).toEqual(['next']);
  });

  it('frees the dedup key of a kind that allows one pending job per key when it starts', async () => {
    await first.enqueue({ kind: 'register_app', memberId: 'portal', input: {}, dedupKey: 'register', deadlineAt: Date.now() + 60_000, awaitsConfirmation: false });
    const [claimed] = await second.claimDue(100, LEASE, ROBOT_SLOTS, ['register_app']);
    expect(claimed?.dedupKey).toBeNull();
    expect(
      (await first.enqueue({ kind: 'register_app', memberId: 'portal', input: {}, dedupKey: 'register', deadlineAt: Date.now() + 60_000, awaitsConfirmation: false })).duplicate,
    ).toBe(false);
  });

  it('lets one process hold a batch of results to report, and the other none of them, until the hold runs out', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push((await enqueue('portal', `token-${i}`, { immediateResult: { returnValues: { status: 'failed' }, logMessage: 'x' } })).job.id);
    const [one, other] = await Promise.all([first.holdForBatch('reporting', ids, LEASE), second.holdForBatch('reporting', ids, LEASE)]);
    expect(one.size + other.size).toBe(5);
    expect([...one].filter((id) => other.has(id))).toEqual([]);
    expect(await first.dueReportSummary()).toEqual([]);
    await database.rows("update jobs set run_at = 1 where state = 'reporting'");
    expect((await second.holdForBatch('reporting', ids, LEASE)).size).toBe(5);
  });
});

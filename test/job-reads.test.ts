import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JobStore, type NewJob } from '../src/db/jobs.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';

/** The reads the worker makes on every pass, on a real database of each kind: which jobs each returns, and in what order. */
describe.each(DATABASE_KINDS)('job store reads of the worker loops, on %s', (kind) => {
  let database: TestDatabase;
  let clock: TestClock;
  let store: JobStore;
  const portalA = 'a'.repeat(32);
  const portalB = 'b'.repeat(32);

  beforeEach(async () => {
    database = await openTestDatabase(kind);
    clock = new TestClock();
    store = new JobStore(database.handle, clock);
  });
  afterEach(() => database.close());

  const robotCall = (memberId: string, token: string, deadlineInMs: number, awaitsConfirmation = true): NewJob => ({
    kind: 'robot',
    memberId,
    input: { phone: '79261234567' },
    deadlineAt: clock.now() + deadlineInMs,
    awaitsConfirmation,
    robot: { eventToken: token, robotCode: 'c2d_send_message', documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] },
  });
  /** Stores the calls one turn after another, so their order (and their run_at) is the order given. */
  async function storeInOrder(calls: NewJob[]): Promise<void> {
    for (const call of calls) {
      await store.enqueue(call);
      clock.advance(1);
    }
  }

  it('reads calls to confirm oldest first, a batch per portal, and every call out of time beyond it', async () => {
    await storeInOrder([
      robotCall(portalA, 'a-late-1', 5),
      robotCall(portalA, 'a1', 60_000),
      robotCall(portalB, 'b1', 60_000),
      robotCall(portalA, 'a2', 60_000),
      robotCall(portalA, 'a3', 60_000),
      robotCall(portalA, 'a-late-2', 10),
      robotCall(portalB, 'b2', 60_000),
    ]);
    clock.advance(100); // the two 'late' calls are now out of time
    const tokens = async (limit: number, excluded: string[] = [], perPortal?: number) => (await store.dueConfirmations(limit, excluded, perPortal)).map((row) => row.eventToken);

    expect(await tokens(100)).toEqual(['a-late-1', 'a1', 'b1', 'a2', 'a3', 'a-late-2', 'b2']);
    // Two per portal, counted apart from the calls out of time, which all come.
    expect(await tokens(100, [], 2)).toEqual(['a-late-1', 'a1', 'b1', 'a2', 'a-late-2', 'b2']);
    expect(await tokens(3, [], 2)).toEqual(['a-late-1', 'a1', 'b1']);
    expect(await tokens(100, [portalA], 1)).toEqual(['b1']);
    expect((await store.dueConfirmations(1))[0]).toEqual({
      id: expect.any(Number),
      memberId: portalA,
      eventToken: 'a-late-1',
      robotCode: 'c2d_send_message',
      runAt: expect.any(Number),
      deadlineAt: expect.any(Number),
      confirmAttempts: 0,
      lastError: null,
    });
  });

  it('reads jobs to run oldest first, leaving out the portals it is told to and the jobs not yet due', async () => {
    await storeInOrder([robotCall(portalA, 'a1', 60_000, false), robotCall(portalB, 'b1', 60_000, false), robotCall(portalA, 'a2', 60_000, false)]);
    await store.enqueue({ ...robotCall(portalB, 'b-later', 60_000, false), runAt: clock.now() + 10_000 });
    const tokens = async (limit: number, excluded?: string[]) => (await store.due('queued', limit, excluded)).map((row) => row.eventToken);

    expect(await tokens(10)).toEqual(['a1', 'b1', 'a2']);
    expect(await tokens(10, [])).toEqual(['a1', 'b1', 'a2']);
    expect(await tokens(2)).toEqual(['a1', 'b1']);
    expect(await tokens(10, [portalA])).toEqual(['b1']);
    expect(await tokens(10, [portalA, portalB])).toEqual([]);
    clock.advance(10_000);
    expect(await tokens(10, [portalA])).toEqual(['b1', 'b-later']);
  });
});

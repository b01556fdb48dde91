import * as v from 'valibot';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RobotRegistry } from '../src/activities/index.js';
import type { Bitrix24Rest } from '../src/bitrix24/rest-client.js';
import { systemClock } from '../src/clock.js';
import { type Broadcast, postgresBroadcast } from '../src/db/broadcast.js';
import type { PostgresHandle } from '../src/db/database.js';
import { JobStore } from '../src/db/jobs.js';
import { type JobKind, JobKinds } from '../src/jobs/kinds.js';
import { Worker } from '../src/jobs/worker.js';
import { createLogger } from '../src/log.js';
import { type ChildProcesses, startChildProcesses } from './support/child-server.js';
import { openTestDatabase, type TestDatabase, TEST_DATABASE } from './support/databases.js';
import { robotJob } from './support/jobs.js';
import { eventually, installAndConfigure } from './support/stack.js';

/**
 * Several server processes on one PostgreSQL (issue 11, docs/multi-process.md "The claim with
 * leases"): the claim statement seen from two connections, then whole server processes.
 */

const LEASE = 60_000;
const ROBOT_SLOTS = { '': 3 };

// The run's PostgreSQL is there in the postgres project only (vitest.config.ts).
describe.skipIf(TEST_DATABASE !== 'postgres')('the claim on PostgreSQL, from two connections (two processes)', () => {
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

describe.skipIf(TEST_DATABASE !== 'postgres')('waking another process on PostgreSQL', () => {
  let database: TestDatabase;
  let another: PostgresHandle;
  const closing: Array<() => Promise<void>> = [];
  beforeEach(async () => {
    database = await openTestDatabase('postgres');
    another = (await database.openAnother()) as PostgresHandle;
  });
  afterEach(async () => {
    for (const close of closing.splice(0).reverse()) await close();
    await another.close();
    await database.close();
  });

  it('an idle process runs a job another process stored at once, not at its next poll (1 s)', async () => {
    const startedAt = new Map<string, number>();
    const wakeKind: JobKind<{ name: string }> = {
      name: 'test_wake',
      input: v.object({ name: v.string() }),
      needsConfirmation: false,
      dedup: 'forever',
      after: 'done',
      async prepare(_job, input) {
        return {
          async run() {
            startedAt.set(input.name, Date.now());
            return { returnValues: { status: 'ok' }, logMessage: 'ran' };
          },
        };
      },
      failed: (_job, message) => ({ returnValues: { status: 'failed' }, logMessage: message }),
    };
    const kinds = new JobKinds([wakeKind]);
    const log = createLogger('silent');
    const worker = async (handle: PostgresHandle, slots: number) => {
      const broadcast: Broadcast = await postgresBroadcast(database.url!, handle.pool, log);
      // No robot job here: the confirmation and report loops find nothing to send to Bitrix24.
      const rest = undefined as unknown as Bitrix24Rest;
      const jobs = new JobStore(handle, systemClock);
      const running = new Worker({ jobs, kinds, robots: new RobotRegistry(), rest, clock: systemClock, portalConcurrency: slots, log, broadcast });
      await running.start();
      closing.push(async () => {
        await running.stop(1_000);
        await broadcast.close();
      });
      return { jobs, worker: running };
    };
    // The storing process has no slot of its own: only the other one can run the job.
    const storing = await worker(database.handle as PostgresHandle, 0);
    await worker(another, 4);
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const name of ['first', 'second', 'third', 'fourth']) {
      // Well into the other process's idle wait.
      await new Promise((resolve) => setTimeout(resolve, 200 + Math.random() * 500));
      const storedAt = Date.now();
      await storing.jobs.enqueue({ kind: 'test_wake', memberId: 'portal', input: { name }, dedupKey: name, deadlineAt: storedAt + 60_000, awaitsConfirmation: false });
      storing.worker.accepted({ awaitsConfirmation: false, reportNow: false });
      await eventually(() => startedAt.has(name), 5_000, `${name} run`);
      expect(startedAt.get(name)! - storedAt).toBeLessThan(250);
    }
  });
});

describe.skipIf(TEST_DATABASE !== 'postgres')('several server processes on one PostgreSQL', () => {
  let stack: ChildProcesses | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  async function start(count: number, env: Record<string, string>): Promise<ChildProcesses> {
    stack = await startChildProcesses(count, { env });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    return stack;
  }

  /** Robot calls spread round-robin over the processes, as a load balancer would; all acknowledged. */
  async function burst(processes: ChildProcesses, count: number, urls = processes.urls) {
    const calls = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        processes.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `burst ${i}` }, via: urls[i % urls.length] }),
      ),
    );
    for (const call of calls) expect(call.status).toBe(200);
    return calls;
  }

  /** Every call's result reached Bitrix24 exactly once, and Chat2Desk got exactly one message per call. */
  async function expectEachOnce(processes: ChildProcesses, calls: Array<{ eventToken: string }>) {
    const { b24, c2d } = processes;
    await eventually(() => calls.every((call) => b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 60_000, 'every result');
    // A moment for anything sent twice to arrive too.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // Every bizproc.event.send that reached Bitrix24 (sentEvents keeps the first of each token only).
    const perToken = new Map<string, number>();
    for (const call of b24.calls.filter((item) => item.method === 'bizproc.event.send')) {
      const token = String(call.params.EVENT_TOKEN ?? call.params.event_token);
      perToken.set(token, (perToken.get(token) ?? 0) + 1);
    }
    expect(calls.map((call) => perToken.get(call.eventToken))).toEqual(calls.map(() => 1));
    for (const call of calls) expect(b24.sentEvents.find((event) => event.eventToken === call.eventToken)?.returnValues.status).toBe('sent');
    const texts = c2d
      .account()
      .messages.map((message) => String(message.text))
      .filter((text) => text.startsWith('burst '));
    expect(texts.length).toBe(calls.length);
    expect(new Set(texts).size).toBe(calls.length);
  }

  const runsOf = (processes: ChildProcesses) => processes.children.map((child) => child.output.join('').split('"msg":"job finished"').length - 1);

  it('three processes share a burst of robot calls: each call once, every process runs some, the portal cap holds across them', async () => {
    const processes = await start(3, { PORTAL_CONCURRENCY: '2', CHAT2DESK_CONCURRENCY: '8', JOB_LEASE_SECONDS: '3' });
    // Slow sends, so that runs of several processes would overlap if each kept its own count.
    processes.c2d.delayNext({ method: 'POST', path: '/messages' }, 150, 60);
    const calls = await burst(processes, 60);
    await expectEachOnce(processes, calls);
    const runs = runsOf(processes);
    expect(runs.every((n) => n > 0)).toBe(true);
    expect(runs.reduce((sum, n) => sum + n, 0)).toBe(60);
    expect(processes.c2d.maxInFlight()).toBeLessThanOrEqual(2);
  });

  it.each([2, 3])('%i processes, one killed with kill -9 mid-burst: the others take over its jobs and every call finishes once', async (count) => {
    const processes = await start(count, { JOB_LEASE_SECONDS: '2', PORTAL_CONCURRENCY: '9', CHAT2DESK_CONCURRENCY: '9' });
    processes.c2d.delayNext({ method: 'POST', path: '/messages' }, 300, 60);
    const calls = await burst(processes, 60);
    await eventually(() => processes.c2d.account().messages.length >= 15, 30_000, 'the burst under way');
    // A process with runs of its own under way (sends of 300 ms): its leases are what the others must take over.
    let victim = -1;
    await eventually(
      () => {
        const underWay = processes.children.map((child) => {
          const output = child.output.join('');
          return output.split('"msg":"job started"').length - output.split('"msg":"job finished"').length;
        });
        victim = underWay.indexOf(Math.max(...underWay));
        return underWay[victim]! > 0;
      },
      30_000,
      'a process with runs under way',
    );
    await processes.kill(victim);
    await expectEachOnce(processes, calls);
    const survivors = processes.children.filter((_, i) => i !== victim).map((child) => child.output.join(''));
    expect(survivors.some((output) => output.includes('jobs whose lease ran out are queued again'))).toBe(true);
  });

  it('never sends a result twice: another process leaves alone the results one process is reporting, however long Bitrix24 takes to answer', async () => {
    const processes = await start(2, { JOB_LEASE_SECONDS: '2' });
    // Bitrix24 takes the first batch of results but its answer is slow: longer than two leases.
    const slow = processes.b24.hold({ rest: 'batch', command: 'bizproc.event.send', afterRunning: true });
    const calls = await burst(processes, 10);
    await slow.arrived;
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    slow.release();
    await expectEachOnce(processes, calls);
  });

  it('a process stopped with SIGTERM mid-burst (a deploy) finishes or hands back its runs: every call finishes once', async () => {
    const processes = await start(2, { JOB_LEASE_SECONDS: '30', PORTAL_CONCURRENCY: '6', CHAT2DESK_CONCURRENCY: '6' });
    processes.c2d.delayNext({ method: 'POST', path: '/messages' }, 300, 40);
    const calls = await burst(processes, 40);
    await eventually(() => processes.c2d.account().messages.length >= 10, 30_000, 'the burst under way');
    const stopping = processes.children[1]!;
    const exited = new Promise((resolve) => stopping.process.once('exit', resolve));
    stopping.process.kill('SIGTERM');
    await exited;
    // A lease of 30 s: what the stopped process left is taken over by the other now, not when it runs out.
    const before = Date.now();
    await expectEachOnce(processes, calls);
    expect(Date.now() - before).toBeLessThan(25_000);
  });
});

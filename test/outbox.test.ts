import * as v from 'valibot';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RobotRegistry } from '../src/activities/index.js';
import type { RobotCall } from '../src/bitrix24/robot-call.js';
import type { DeliveryHandler } from '../src/chat2desk/delivery-handlers.js';
import type { DialogDirectory } from '../src/chat2desk/directory.js';
import { deliveryKey } from '../src/chat2desk/webhook-events.js';
import type { JobKind } from '../src/jobs/kinds.js';
import { RobotCalls } from '../src/jobs/robot-calls.js';
import { createLogger } from '../src/log.js';
import { systemClock } from '../src/clock.js';
import { JobStore, UnconfirmedLimitReached } from '../src/db/jobs.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';
import { robotJob } from './support/jobs.js';
import { eventually, installAndConfigure, postForm, startStack, type Stack } from './support/stack.js';

type Row = Record<string, unknown>;

/**
 * A job kind registered only in these tests: it records the dialog each run was started for.
 * `while_pending` releases its dedup key when it starts, so once it ran only the delivery key
 * itself can keep a retried delivery from starting it again; `forever` keeps its key.
 */
function dialogKind(name: string, dedup: 'forever' | 'while_pending', runs: string[]): JobKind<{ dialogId: number }> {
  return {
    name,
    input: v.object({ dialogId: v.number() }),
    needsConfirmation: false,
    dedup,
    after: 'done',
    async prepare(_job, input) {
      return {
        async run() {
          runs.push(`${name}:${input.dialogId}`);
          return { returnValues: { status: 'ok' }, logMessage: `${name} ran for dialog ${input.dialogId}` };
        },
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
  };
}

/** A closed dialog starts an `episode_test` job; a transfer a `transfer_test` job (whose key is kept). */
function handlers(clock: TestClock): DeliveryHandler[] {
  const dialogJob = (kind: string) => (delivery: { event: Row }) => [{ kind, input: { dialogId: delivery.event.dialog_id }, options: { deadlineAt: clock.now() + 3600_000 } }];
  return [
    { hookType: 'close_dialog', jobs: dialogJob('episode_test') },
    { hookType: 'dialog_transferred', jobs: dialogJob('transfer_test') },
  ];
}

describe('Chat2Desk deliveries start their jobs in the delivery transaction (the outbox)', () => {
  let stack: Stack;
  let clock: TestClock;
  let directory: DialogDirectory;
  let dialog: Row;
  const runs: string[] = [];

  beforeEach(async () => {
    runs.length = 0;
    clock = new TestClock();
    stack = await startStack({
      clock,
      extraKinds: [dialogKind('episode_test', 'while_pending', runs), dialogKind('transfer_test', 'forever', runs)],
      deliveryHandlers: handlers(clock),
    });
    const seeded = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    dialog = stack.c2d.account().dialogs.find((item) => item.id === seeded.dialog!.id)!;
    await installAndConfigure(stack);
    directory = (await stack.server.directoryOf(stack.b24.memberId))!;
  });
  afterEach(() => stack.close());

  const count = async (table: string) => (await stack.db.row<{ n: number }>(`select count(*) as n from ${table}`))!.n;
  const jobRows = () => stack.db.rows<Row>("select kind, state, dedup_key from jobs where kind in ('episode_test', 'transfer_test') order by id");
  /** Makes every insert into `table` (matching `when`, if given) fail, as a broken store would. */
  const refuseInserts = async (name: string, table: string, when?: string) => {
    if (stack.db.kind === 'sqlite') {
      await stack.db.run(`create trigger ${name} before insert on ${table} ${when ? `when ${when}` : ''} begin select raise(abort, '${name}'); end`);
      return;
    }
    await stack.db.run(`create function ${name}() returns trigger language plpgsql as $$ begin raise exception '${name}'; end $$`);
    await stack.db.run(`create trigger ${name} before insert on ${table} for each row ${when ? `when (${when})` : ''} execute function ${name}()`);
  };
  const allowInserts = async (name: string, table: string) => {
    await stack.db.run(`drop trigger ${name}${stack.db.kind === 'postgres' ? ` on ${table}` : ''}`);
  };
  const transfer = (at: string) => ({ hook_type: 'dialog_transferred', dialog_id: dialog.id, client_id: dialog.client_id, operator_id: 311416, event_time: at });
  const closed = (at: string) => ({ hook_type: 'close_dialog', dialog_id: dialog.id, client_id: dialog.client_id, event_time: at });
  const webhookUrl = () => String(stack.c2d.account().webhooks[0]!.url);
  const post = (url: string, body: Row) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const dialogReads = () => stack.c2d.calls.filter((call) => call.path === `/dialogs/${String(dialog.id)}`).length;

  it('stores the job a delivery starts with the delivery, keyed by the delivery key, and runs it', async () => {
    expect(await stack.c2d.deliverWebhook(transfer('2026-11-24T10:00:00Z'))).toEqual([200]);
    expect(await count('webhook_deliveries')).toBe(1);
    expect(await jobRows()).toEqual([expect.objectContaining({ kind: 'transfer_test', dedup_key: `chat2desk:${deliveryKey(transfer('2026-11-24T10:00:00Z'))}#0` })]);
    await eventually(async () => (await jobRows())[0]?.state === 'done', 10_000, 'the delivery job done');
    expect(runs).toEqual([`transfer_test:${String(dialog.id)}`]);
  });

  it('starts nothing again when Chat2Desk repeats a delivery, also after its job ran and released its key', async () => {
    expect(await stack.c2d.deliverWebhook(closed('2026-11-24T10:00:00Z'))).toEqual([200]);
    await eventually(async () => (await jobRows())[0]?.state === 'done', 10_000, 'the delivery job done');
    const repeated = await post(webhookUrl(), closed('2026-11-24T10:00:00Z'));
    expect(await repeated.json()).toEqual({ status: 'duplicate' });
    expect(await jobRows()).toHaveLength(1);
    // A different event of the same dialog is new work.
    expect(await stack.c2d.deliverWebhook(closed('2026-11-24T11:00:00Z'))).toEqual([200]);
    await eventually(async () => (await jobRows()).filter((row) => row.state === 'done').length === 2, 10_000, 'the second job done');
    expect(runs).toHaveLength(2);
  });

  it('starts nothing again for a delivery repeated after its key was pruned: the job keeps a key derived from it', async () => {
    expect(await stack.c2d.deliverWebhook(transfer('2026-11-24T10:00:00Z'))).toEqual([200]);
    await eventually(async () => (await jobRows())[0]?.state === 'done', 10_000, 'the delivery job done');
    clock.advance(25 * 3600_000);
    expect(await stack.server.chat2deskWebhooks.pruneDeliveries()).toBe(1);
    const repeated = await post(webhookUrl(), transfer('2026-11-24T10:00:00Z'));
    expect(await repeated.json()).toEqual({ status: 'applied' });
    expect(await jobRows()).toEqual([expect.objectContaining({ kind: 'transfer_test', state: 'done' })]);
    expect(runs).toHaveLength(1);
  });

  /** No delivery, no job, and the cached dialog not invalidated: still served without asking Chat2Desk. */
  async function expectNothingApplied() {
    expect(await count('webhook_deliveries')).toBe(0);
    expect(await jobRows()).toEqual([]);
    stack.c2d.resetCalls();
    expect((await directory.dialog(dialog.id as number)).state).toBe('open');
    expect(dialogReads()).toBe(0);
  }

  it('leaves neither the delivery, nor its job, nor the cache invalidation when storing the job fails, and answers 5xx', async () => {
    expect((await directory.dialog(dialog.id as number)).state).toBe('open');
    await refuseInserts('refuse_job', 'jobs', "new.kind = 'episode_test'");
    dialog.state = 'closed';
    expect(await stack.c2d.deliverWebhook(closed('2026-11-24T10:00:00Z'))).toEqual([500]);
    await expectNothingApplied();
    // Chat2Desk's retry, once the store works again, does it all.
    await allowInserts('refuse_job', 'jobs');
    expect(await stack.c2d.deliverWebhook(closed('2026-11-24T10:00:00Z'))).toEqual([200]);
    expect(await count('webhook_deliveries')).toBe(1);
    expect((await directory.dialog(dialog.id as number)).state).toBe('closed');
    await eventually(async () => (await jobRows())[0]?.state === 'done', 10_000, 'the retried delivery job done');
  });

  it('leaves no job and no cache invalidation when storing the delivery fails, and answers 5xx', async () => {
    expect((await directory.dialog(dialog.id as number)).state).toBe('open');
    await refuseInserts('refuse_delivery', 'webhook_deliveries');
    dialog.state = 'closed';
    expect(await stack.c2d.deliverWebhook(closed('2026-11-24T10:00:00Z'))).toEqual([500]);
    await expectNothingApplied();
  });

  it('stores nothing for a delivery to a webhook nobody registered', async () => {
    const unknown = await post(`${stack.server.url}/chat2desk/webhook/${'A'.repeat(32)}`, closed('2026-11-24T10:00:00Z'));
    expect(unknown.status).toBe(404);
    expect(await count('webhook_deliveries')).toBe(0);
    expect(await jobRows()).toEqual([]);
  });

  it('refuses a delivery whose jobs its kind does not accept, and stores nothing', async () => {
    expect((await directory.dialog(dialog.id as number)).state).toBe('open');
    dialog.state = 'closed';
    const answer = await post(webhookUrl(), { hook_type: 'close_dialog', dialog_id: String(dialog.id), event_time: '2026-11-24T10:00:00Z' });
    expect(answer.status).toBe(400);
    expect(await answer.json()).toEqual({ error: expect.stringContaining('The close_dialog delivery cannot start its work: episode_test:') });
    expect(await count('webhook_deliveries')).toBe(0);
    expect(await jobRows()).toEqual([]);
    stack.c2d.resetCalls();
    expect((await directory.dialog(dialog.id as number)).state).toBe('open');
  });
});

describe('the bound on robot calls waiting for confirmation', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('stores exactly the bound when more calls than it arrive at once', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock, env: { MAX_UNCONFIRMED_CALLS_PER_PORTAL: '5' } });
    await installAndConfigure(stack);
    // The first confirmation is held, so no call leaves `confirming` while the calls arrive.
    const held = stack.b24.hold({ rest: 'batch', command: 'bizproc.activity.log' });
    const calls = Array.from({ length: 16 }, (_, i) => stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `call ${i}` } }));
    const answers = await Promise.all(calls.map((call) => postForm(`${stack.server.url}/bitrix24/robot`, call.body)));
    const statuses = answers.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(5);
    expect(statuses.filter((status) => status === 503)).toHaveLength(11);
    const stored = (await stack.db.row("select count(*) as n from jobs where kind = 'robot'")) as { n: number };
    expect(stored.n).toBe(5);
    // For a second after a refusal the portal's calls are refused without asking the database;
    // then a repeat of a stored call is acknowledged as a duplicate, bound or not.
    clock.advance(1_001);
    const accepted = calls.filter((_, i) => statuses[i] === 200);
    expect(await (await postForm(`${stack.server.url}/bitrix24/robot`, accepted[0]!.body)).json()).toMatchObject({ status: 'duplicate' });
    held.release();
  });

  it('holds the bound for two servers sharing the database: calls accepted by both at once store exactly the bound', async () => {
    stack = await startStack({ env: { MAX_UNCONFIRMED_CALLS_PER_PORTAL: '5' } });
    await installAndConfigure(stack);
    const held = stack.b24.hold({ rest: 'batch', command: 'bizproc.activity.log' });
    // Another server process's acceptance of robot calls: its own RobotCalls over the same job store.
    const otherServer = new RobotCalls({
      pipeline: stack.server.pipeline,
      robots: new RobotRegistry(),
      clock: systemClock,
      robotDeadlineSeconds: stack.config.robotDeadlineSeconds,
      maxUnconfirmedPerPortal: 5,
      log: createLogger('silent'),
    });
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    const viaOther = Array.from({ length: 8 }, (_, i) => stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `other ${i}` } }));
    const viaUs = Array.from({ length: 8 }, (_, i) => stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `ours ${i}` } }));
    const [ours, theirs] = await Promise.all([
      Promise.all(viaUs.map((call) => postForm(`${stack.server.url}/bitrix24/robot`, call.body).then((answer) => answer.status))),
      Promise.all(viaOther.map((call) => otherServer.accept(portal, robotCall(portal.memberId, call.eventToken)).then((acceptance) => acceptance.status))),
    ]);
    expect(ours.filter((status) => status === 200).length + theirs.filter((status) => status === 'accepted').length).toBe(5);
    const stored = (await stack.db.row("select count(*) as n from jobs where kind = 'robot'")) as { n: number };
    expect(stored.n).toBe(5);
    held.release();
  });
});

/** A valid Send message call as the robot route reads it from Bitrix24's form body. */
function robotCall(memberId: string, eventToken: string): RobotCall {
  return {
    code: 'c2d_send_message',
    eventToken,
    workflowId: eventToken.split('|')[0]!,
    documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_301'],
    documentType: ['crm', 'CCrmDocumentDeal', 'DEAL'],
    properties: { phone: '79161234567', text: 'from the other server' },
    useSubscription: true,
    timeoutSeconds: 0,
    memberId,
    applicationToken: 'unused',
    domain: 'unused',
  };
}

describe.each(DATABASE_KINDS)('the bounded insert of JobStore on %s', (kind) => {
  let database: TestDatabase;
  let jobs: JobStore;
  beforeEach(async () => {
    database = await openTestDatabase(kind);
    jobs = new JobStore(database.handle, systemClock);
  });
  afterEach(() => database.close());

  const waiting = (memberId: string, eventToken: string) => ({ ...robotJob(memberId, eventToken, Date.now() + 60_000), awaitsConfirmation: true });

  it("counts only the portal's own waiting calls, however many other portals' calls lie between them", async () => {
    await jobs.enqueue(waiting('portal', 'first'), { maxConfirming: 3 });
    for (let i = 0; i < 10; i++) await jobs.enqueue(waiting('other-portal', `other-${i}`));
    await jobs.enqueue(waiting('portal', 'second'), { maxConfirming: 3 });
    await jobs.enqueue(waiting('portal', 'third'), { maxConfirming: 3 });
    await expect(jobs.enqueue(waiting('portal', 'fourth'), { maxConfirming: 3 })).rejects.toThrow(UnconfirmedLimitReached);
    expect((await jobs.enqueue(waiting('portal', 'third'), { maxConfirming: 3 })).duplicate).toBe(true);
    expect(await jobs.countByState('portal')).toEqual({ confirming: 3 });
  });

  // One process per SQLite file: only PostgreSQL has two to race.
  it.skipIf(kind === 'sqlite')('holds the bound for calls of one portal stored at once from two processes', async () => {
    const second = new JobStore(await database.openAnother(), systemClock);
    const calls = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? jobs : second).enqueue(waiting('portal', `call-${i}`), { maxConfirming: 5 }));
    const results = await Promise.allSettled(calls);
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(5);
    expect(results.filter((result) => result.status === 'rejected' && result.reason instanceof UnconfirmedLimitReached)).toHaveLength(15);
    expect(await jobs.countByState('portal')).toEqual({ confirming: 5 });
  });

  it.skipIf(kind === 'sqlite')('holds the bound when two processes each store a batch that alone is clearly below it', async () => {
    // One call waiting, bound 4: each batch of two alone leaves room (1 + 2 < 4) and may be inserted
    // as given (migration 0005), but the second to take the portal's lock must see the first's calls.
    const second = new JobStore(await database.openAnother(), systemClock);
    await jobs.enqueue(waiting('portal', 'waiting'), { maxConfirming: 4 });
    // The portal's lock held elsewhere, so that both batches are in flight together.
    const holder = await database.openAnother();
    if (holder.kind !== 'postgres') throw new Error('PostgreSQL only');
    const lock = await holder.pool.connect();
    await lock.query("select pg_advisory_lock(hashtext('portal'))");
    const calls = [jobs, second].flatMap((store, process) => ['a', 'b'].map((token) => store.enqueue(waiting('portal', `${token}-${process}`), { maxConfirming: 4 })));
    await eventually(
      async () =>
        (await database.rows("select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%c2d_store_jobs%'")).length === 2,
      10_000,
      'both batches waiting on the portal lock',
    );
    await lock.query("select pg_advisory_unlock(hashtext('portal'))");
    lock.release();
    const results = await Promise.allSettled(calls);
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(3);
    expect(results.filter((result) => result.status === 'rejected' && result.reason instanceof UnconfirmedLimitReached)).toHaveLength(1);
    expect(await jobs.countByState('portal')).toEqual({ confirming: 4 });
  });
});

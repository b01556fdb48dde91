import { afterEach, describe, expect, it } from 'vitest';
import { NOTIFY_INCOMING_KIND } from '../src/jobs/kinds/notify-incoming.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { adminHeaders, installAndConfigure, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

interface JobView {
  state: string;
  returnValues: Record<string, unknown>;
}

/** Bitrix24 notifications of a dialog's incoming messages, grouped (src/jobs/kinds/notify-incoming.ts). */
describe('notifications of incoming messages', () => {
  let stack: Stack;
  let clock: TestClock;
  afterEach(() => stack?.close());

  async function setUp(settings: Record<string, unknown> = { notifyIncoming: true }, options: StackOptions = {}) {
    clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait, ...options });
    await installAndConfigure(stack, settings);
  }

  async function notifyJobs(): Promise<JobView[]> {
    const rows = (await stack.db.rows('select state, return_values as returnValues from jobs where kind = ? order by id', NOTIFY_INCOMING_KIND)) as Array<{
      state: string;
      returnValues: string | null;
    }>;
    return rows.map((row) => ({ state: row.state, returnValues: row.returnValues ? (JSON.parse(row.returnValues) as Record<string, unknown>) : {} }));
  }

  /** Every notify job once `count` of them finished; the 30 s gathering delay passes by the clock. */
  function finished(count: number): Promise<JobView[]> {
    return eventuallyOnClock(
      () => stack.server,
      clock,
      async () => {
        const jobs = await notifyJobs();
        return jobs.filter((job) => job.state === 'done').length >= count ? jobs : undefined;
      },
      20_000,
      `${count} notifications handled`,
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}: ${JSON.stringify(await notifyJobs())}`);
    });
  }

  /** An open dialog with its operator (null: unassigned) and a client named `name`. */
  function dialogOf(operatorId: number | null, name = 'Anna') {
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', name, withDialog: 'open' });
    const dialogId = dialog!.id as number;
    (stack.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = operatorId;
    return { clientId: client.id as number, dialogId };
  }

  async function clientWrites(clientId: number, times: number) {
    for (let n = 1; n <= times; n++) {
      const { webhook } = stack.c2d.receiveMessage({ clientId, text: `message ${n}` });
      expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
    }
  }

  it('five messages make one notification to the mapped operator’s user, with the count, the escaped name and the dialog link; the next message makes another', async () => {
    await setUp();
    // Operator 311416 (manager@example.com) ↔ Bitrix24 user 2 (the same e-mail).
    const { clientId, dialogId } = dialogOf(311416, 'Anna <b>[url=https://evil.example]x[/url]');
    await clientWrites(clientId, 5);
    const [job] = await finished(1);
    expect(await notifyJobs()).toHaveLength(1);
    expect(job!.returnValues).toMatchObject({ status: 'done', userId: 2, messages: 5 });
    expect(stack.b24.notifications).toHaveLength(1);
    const [notice] = stack.b24.notifications;
    expect(notice!.userId).toBe(2);
    expect(notice!.message).toContain('5 new messages from Anna <b>［url=https://evil.example］x［/url］');
    expect(notice!.message).not.toContain('[url=https://evil.example]');
    expect(notice!.message).toContain(`[url=${new URL(stack.c2d.url).origin}/chat/all?dialogID=${dialogId}]Open the dialog in Chat2Desk[/url]`);

    await clientWrites(clientId, 1);
    await finished(2);
    expect(stack.b24.notifications).toHaveLength(2);
    expect(stack.b24.notifications[1]!.message).toContain('1 new message from');
  });

  it('in a Russian portal the words are Russian', async () => {
    await setUp({ notifyIncoming: true }, { b24: { languageId: 'ru' } });
    const { clientId } = dialogOf(311416, 'Анна');
    await clientWrites(clientId, 3);
    await finished(1);
    expect(stack.b24.notifications[0]!.message).toContain('3 новых сообщения от Анна');
  });

  it('an unmapped operator or an unassigned dialog notifies nobody, and the summary says why', async () => {
    await setUp();
    // Operator 313753 (deleted@example.com) has no Bitrix24 user and no operatorMap entry.
    const unmapped = dialogOf(313753);
    await clientWrites(unmapped.clientId, 1);
    const unassigned = stack.c2d.seedClient({ phone: '79160000002', withDialog: 'open' });
    (stack.c2d.account().dialogs.find((item) => item.id === unassigned.dialog!.id) as Record<string, unknown>).operator_id = null;
    await clientWrites(unassigned.client.id as number, 1);
    const jobs = await finished(2);
    const summaries = jobs.map((job) => String(job.returnValues.summary));
    expect(summaries).toContainEqual(expect.stringMatching(/^nobody notified: Chat2Desk operator 313753 is not mapped to a Bitrix24 user/));
    expect(summaries).toContainEqual(`nobody notified: dialog ${unassigned.dialog!.id} has no operator`);
    expect(stack.b24.notifications).toEqual([]);
  });

  it('operatorMap decides who is notified', async () => {
    await setUp({ notifyIncoming: true, operatorMap: { 313753: 1 } });
    const { clientId } = dialogOf(313753);
    await clientWrites(clientId, 2);
    await finished(1);
    expect(stack.b24.notifications.map((item) => item.userId)).toEqual([1]);
  });

  it('without the im scope the job fails naming the scope', async () => {
    await setUp({ notifyIncoming: true }, { b24: { scope: 'crm,bizproc,placement,user_basic' } });
    const { clientId } = dialogOf(311416);
    await clientWrites(clientId, 1);
    const [job] = await finished(1);
    expect(job!.returnValues.status).toBe('failed');
    expect(String(job!.returnValues.error)).toMatch(/^the app lacks the Bitrix24 scope "im" needed for notifications: add "im"/);
    expect(stack.b24.notifications).toEqual([]);
  });

  it('the settings API shows both switches, refuses a non-boolean naming the key, and changes nothing then', async () => {
    await setUp({});
    const read = async () => (await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json()) as Record<string, unknown>;
    expect(await read()).toMatchObject({ notifyIncoming: false, responsibleSync: false });
    const refused = await putSettings(stack, { notifyIncoming: 'yes', responsibleSync: true });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: string }).error).toContain('notifyIncoming must be true or false');
    expect(await read()).toMatchObject({ notifyIncoming: false, responsibleSync: false });
    expect((await putSettings(stack, { responsibleSync: true })).status).toBe(200);
    expect(await read()).toMatchObject({ notifyIncoming: false, responsibleSync: true });
  });

  it('notifications are off by default: a message starts no notification', async () => {
    await setUp({});
    const { clientId } = dialogOf(311416);
    await clientWrites(clientId, 1);
    // A delivery's jobs are stored before it is acknowledged: none means none.
    expect(await notifyJobs()).toEqual([]);
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { JobStore } from '../src/db/jobs.js';
import type { FakeChat2Desk } from './fakes/chat2desk.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase } from './support/databases.js';
import { robotJob } from './support/jobs.js';
import { eventually, installAndConfigure, startStack, type Stack, type StackOptions } from './support/stack.js';

/**
 * Every stack here fails on purpose: retries run without real backoffs, by the test's clock.
 * What is settled, sent and reported does not depend on how long the backoffs were.
 */
let clock: TestClock;
function settlingStack(options: StackOptions = {}): Promise<Stack> {
  clock = new TestClock();
  return startStack({ ...options, clock, retrySleep: noRetryWait });
}

/** The robot call's result in Bitrix24, moving the clock through the retries before it. */
function resultOf(stack: Stack, eventToken: string) {
  return eventuallyOnClock(
    () => stack.server,
    clock,
    () => stack.b24.sentEvents.find((item) => item.eventToken === eventToken),
    20_000,
    'result',
  );
}

/** Our sends, told apart from the operators' messages posted straight to the fake. */
const robotSends = (c2d: FakeChat2Desk) =>
  c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && String((call.body as { external_id?: string }).external_id).startsWith('b24-'));

/** An operator answering in Chat2Desk meanwhile: outgoing messages to the same client, without our external_id. */
async function operatorReplies(c2d: FakeChat2Desk, clientId: number, count: number, text = (i: number) => `operator reply ${i}`): Promise<void> {
  for (let i = 0; i < count; i += 25) {
    await Promise.all(
      Array.from({ length: Math.min(25, count - i) }, async (_, j) => {
        const response = await fetch(`${c2d.url}/messages`, {
          method: 'POST',
          headers: { authorization: c2d.token, 'content-type': 'application/json' },
          body: JSON.stringify({ client_id: clientId, text: text(i + j) }),
        });
        expect(response.status).toBe(200);
      }),
    );
  }
}

describe('settling a send whose answer was lost', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  /** A send Chat2Desk stored and whose answer is lost after `newer` outgoing messages to the client followed it. */
  async function lostAnswer(newer: number, options: StackOptions = {}) {
    stack = await settlingStack(options);
    await installAndConfigure(stack);
    const { client } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const answer = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'the one in doubt' } });
    await answer.arrived;
    const stored = stack.c2d.account().messages.at(-1)!;
    await operatorReplies(stack.c2d, client.id as number, newer);
    return { stack, call, stored, answer };
  }

  it('finds the message by external_id behind more newer messages than one page holds', async () => {
    const { stack, call, stored, answer } = await lostAnswer(250);
    answer.lose();
    const event = await resultOf(stack, call.eventToken);
    expect(event.returnValues).toMatchObject({ status: 'sent', message_id: String(stored.id) });
    expect(robotSends(stack.c2d)).toHaveLength(1);
    // It paged: the first page (200) did not reach back to the message.
    const lookups = stack.c2d.calls.filter((item) => item.method === 'GET' && item.path === '/messages');
    expect(lookups.map((item) => item.query.offset)).toEqual(['0', '200']);
  });

  it('finds the message by its text when Chat2Desk does not show the external_id', async () => {
    const { stack, call, stored, answer } = await lostAnswer(60, { c2d: { echoExternalId: false } });
    answer.lose();
    const event = await resultOf(stack, call.eventToken);
    expect(event.returnValues).toMatchObject({ status: 'sent', message_id: String(stored.id) });
    expect(robotSends(stack.c2d)).toHaveLength(1);
    expect(stack.c2d.account().messages.filter((message) => message.text === 'the one in doubt')).toHaveLength(1);
  });

  it('sends again when the first attempt never reached Chat2Desk, not taking an older message with the same text for it', async () => {
    let shift = 0;
    stack = await settlingStack({ c2d: { echoExternalId: false, now: () => Date.now() + shift } });
    await installAndConfigure(stack);
    const { client } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // An operator sent the same words ten minutes ago: before this run's attempt, so not its message.
    shift = -10 * 60_000;
    await operatorReplies(stack.c2d, client.id as number, 1, () => 'hello');
    shift = 0;
    // The first POST never reaches Chat2Desk's store: nothing went out, so the retry must send.
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, 'network');
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hello' } });
    const event = await resultOf(stack!, call.eventToken);
    expect(event.returnValues.status).toBe('sent');
    const hellos = stack.c2d.account().messages.filter((message) => message.text === 'hello');
    expect(hellos).toHaveLength(2);
    expect(event.returnValues.message_id).toBe(String(hellos[1]!.id));
    expect(robotSends(stack.c2d).map((item) => item.status)).toEqual([0, 200]);
  });

  it('fails saying the message may have been sent when Chat2Desk cannot be asked at give-up, and does not send again', async () => {
    const { stack, call, answer } = await lostAnswer(0);
    stack.c2d.setDown(true);
    // Past the deadline: the lost answer is given up at once, and settling finds Chat2Desk down.
    await stack.db.run('update jobs set deadline_at = ? where event_token = ?', clock.now() - 1, call.eventToken);
    answer.lose();
    const event = await resultOf(stack, call.eventToken);
    expect(event.returnValues.status).toBe('failed');
    expect(String(event.returnValues.error)).toContain('it may already have been sent');
    expect(robotSends(stack.c2d)).toHaveLength(1);
  });
});

describe('settling write first and attachments', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  it('finds a written-first client whose creation lost its answer by phone, creates no second, and sends the way it was created', { timeout: 60_000 }, async () => {
    stack = await settlingStack();
    await installAndConfigure(stack);
    const created = stack.c2d.holdNext({ method: 'POST', path: '/clients' });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 916 765-43-21', text: 'Hello!', transport: 'whatsapp' } });
    await created.arrived;
    // Chat2Desk stored the first POST /clients and its answer is lost; the client's own four
    // retries (harmless: "already exists" names the id) do not get through either.
    stack.c2d.failNext({ method: 'POST', path: '/clients' }, 'network', 4);
    created.lose();
    const event = await resultOf(stack!, call.eventToken);
    const clients = stack.c2d.account().clients.filter((item) => item.phone === '79167654321');
    expect(clients).toHaveLength(1);
    expect(event.returnValues).toMatchObject({ status: 'sent', client_id: String(clients[0]!.id), transport: 'whatsapp', channel_id: '17404' });
    const calls = stack.c2d.calls.map((item) => `${item.method} ${item.path}`);
    // Looked up by phone before anything else was done again (docs/protocols.md C3).
    expect(calls.filter((item) => item === 'POST /clients')).toHaveLength(5);
    expect(calls.lastIndexOf('GET /clients')).toBeGreaterThan(calls.lastIndexOf('POST /clients'));
    expect(robotSends(stack.c2d).map((item) => item.body)).toEqual([expect.objectContaining({ transport: 'whatsapp', channel_id: 17404 })]);
  });

  it('fails saying the message may have been sent when only an attachment went out and Chat2Desk shows no external_id, and never sends it again', async () => {
    stack = await settlingStack({ c2d: { echoExternalId: false } });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const answer = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', attachment: 'https://files.example/offer.pdf' } });
    await answer.arrived;
    answer.lose();
    const event = await resultOf(stack!, call.eventToken);
    expect(event.returnValues.status).toBe('failed');
    expect(String(event.returnValues.error)).toContain('it may already have been sent, so it is not sent again');
    expect(robotSends(stack.c2d)).toHaveLength(1);
    expect(stack.c2d.account().messages).toHaveLength(1);
  });

  it('sends the retry to the client its claim named, though the phone now leads to another client', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    const first = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 }).client;
    // The first POST is refused with a 5xx (it may have happened) and its answer held until the phone moves.
    const answer = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, { status: 503, body: { status: 'error', message: 'Service unavailable' } });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'to the first client' } });
    await answer.arrived;
    // Meanwhile the number passes to another client, and our cached lookup grows stale.
    (stack.c2d.account().clients.find((item) => item.id === first.id) as { phone: string }).phone = '79160000000';
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    clock.advance(901_000);
    answer.release();
    const event = await eventually(() => stack!.b24.sentEvents.find((item) => item.eventToken === call.eventToken), 20_000, 'result');
    expect(event.returnValues).toMatchObject({ status: 'sent', client_id: String(first.id) });
    expect(robotSends(stack.c2d).map((item) => (item.body as { client_id: number }).client_id)).toEqual([first.id, first.id]);
  });
});

describe.each(DATABASE_KINDS)('jobs interrupted by a crash, on %s', (kind) => {
  it('are queued again ahead of the whole backlog, so what they did is settled first', async () => {
    const test = await openTestDatabase(kind);
    const database = test.handle;
    try {
      let clock = 1_000_000;
      const jobs = new JobStore(database, { now: () => clock });
      const enqueue = async (memberId: string, eventToken: string) => {
        clock += 1;
        return (await jobs.enqueue(robotJob(memberId, eventToken, clock + 60_000))).job.id;
      };
      const [first, second] = [await enqueue('portal-a', 'a-1'), await enqueue('portal-a', 'a-2')];
      expect(await jobs.claim(first, 60_000)).toBeDefined();
      expect(await jobs.claim(second, 60_000)).toBeDefined();
      for (let i = 0; i < 100; i++) await enqueue('portal-a', `backlog-${i}`);
      await enqueue('portal-b', 'b-1');
      // The stopped worker's leases have run out. Jobs retried later than now are still behind: only the due ones count.
      clock += 60_000;
      expect(await jobs.requeueInterrupted()).toBe(2);
      const due = await jobs.due('queued', 5);
      expect(due.map((job) => job.eventToken)).toEqual(['a-1', 'a-2', 'backlog-0', 'backlog-1', 'backlog-2']);
      // Per-portal fairness is unchanged: a portal left out shows the others'.
      expect((await jobs.due('queued', 5, ['portal-a'])).map((job) => job.eventToken)).toEqual(['b-1']);
    } finally {
      await test.close();
    }
  });
});
